//! TLS failures in an operator's words, and how each maps to what rustls tells the peer.

use std::fmt;

use rustls::{
    AlertDescription, CertificateError, Error as RustlsError, OtherError, PeerIncompatible,
};

use super::names::CertNames;

/// Why this node refused the peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertRefusal {
    /// The chain does not lead to a CA in the trust bundle.
    UnknownIssuer {
        /// The certificate's subject.
        subject: String,
        /// The issuer it names.
        issuer: String,
    },
    /// The certificate's validity ended before now.
    Expired {
        /// Its notAfter (RFC 3339).
        not_after: String,
        /// This node's clock (RFC 3339).
        now: String,
    },
    /// The certificate's validity begins after now.
    NotYetValid {
        /// Its notBefore (RFC 3339).
        not_before: String,
        /// This node's clock (RFC 3339).
        now: String,
    },
    /// Pinned mode: the certificate is not one of the pinned certificates.
    NotPinned {
        /// The certificate's subject.
        subject: String,
        /// SHA-256 of its DER bytes, hex.
        sha256: String,
    },
    /// The dialed hostname or IP is not among the certificate's names.
    HostnameMismatch {
        /// The name this node dialed.
        expected: String,
        /// The names the certificate holds.
        presented: CertNames,
    },
    /// None of the certificate's names matches the allow-list.
    NameNotAllowed {
        /// The allow-list.
        allowed: Vec<String>,
        /// The names the certificate holds.
        presented: CertNames,
    },
    /// The certificate shares no DNS name with this node's own certificate.
    NoSharedName {
        /// This node's names.
        ours: Vec<String>,
        /// The names the certificate holds.
        presented: CertNames,
    },
    /// The certificate is not for this use (its extended key usage lacks serverAuth or
    /// clientAuth).
    WrongPurpose {
        /// What rustls reported.
        detail: String,
    },
    /// The certificate is revoked: a CRL of `tls_crl_files` lists it, or an entry of the
    /// `revocation_file` names its serial or key.
    Revoked {
        /// Which entry or CRL, and what it names.
        detail: String,
    },
    /// Anything else the certificate verifier reported.
    Invalid {
        /// What rustls reported.
        detail: String,
    },
}

impl fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIssuer { subject, issuer } => write!(
                f,
                "the peer's certificate ({subject}) was issued by \"{issuer}\", which is not in this node's CA bundle; add that CA to the bundle or give the peer a certificate from a trusted CA"
            ),
            Self::Expired { not_after, now } => write!(
                f,
                "the peer's certificate expired at {not_after} (this node's clock says {now}); renew it, or check the clocks"
            ),
            Self::NotYetValid { not_before, now } => write!(
                f,
                "the peer's certificate is not valid before {not_before} (this node's clock says {now}); check the clocks"
            ),
            Self::NotPinned { subject, sha256 } => write!(
                f,
                "the peer's certificate ({subject}, sha256 {sha256}) is not one of this node's pinned certificates"
            ),
            Self::HostnameMismatch { expected, presented } => write!(
                f,
                "this node dialed {expected:?} but the peer's certificate is for [{presented}]; dial one of those names or add {expected:?} to the certificate's subjectAltName"
            ),
            Self::NameNotAllowed { allowed, presented } => write!(
                f,
                "none of the peer certificate's names [{presented}] matches the allowed names [{}]",
                allowed.join(", ")
            ),
            Self::NoSharedName { ours, presented } => write!(
                f,
                "the peer's certificate [{presented}] shares no DNS name with this node's certificate [{}]",
                ours.join(", ")
            ),
            Self::WrongPurpose { detail } => write!(
                f,
                "the peer's certificate is not for this use ({detail}); node certificates need extendedKeyUsage serverAuth and clientAuth"
            ),
            Self::Revoked { detail } => write!(
                f,
                "the peer's certificate is revoked: {detail}; the node was removed from the cluster (remove the entry and reload if that is a mistake)"
            ),
            Self::Invalid { detail } => write!(f, "the peer's certificate is invalid: {detail}"),
        }
    }
}

impl std::error::Error for CertRefusal {}

/// A failure of the TLS layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// This node refused the peer's certificate (boxed: the reason carries names).
    CertificateRefused(Box<CertRefusal>),
    /// The initiator presented no certificate, and mutual TLS requires one.
    NoClientCertificate,
    /// The peer ended the TLS handshake with an alert: usually it refused this node's
    /// certificate or settings.
    RefusedByPeer {
        /// The alert's name (as in RFC 8446).
        alert: String,
    },
    /// No TLS version or cipher suite in common, or the peer lacks a required feature.
    Incompatible {
        /// What was missing.
        detail: String,
    },
    /// The TLS peer misbehaved (bad record, bad message) or some other TLS failure.
    Protocol {
        /// What rustls reported.
        detail: String,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CertificateRefused(r) => r.fmt(f),
            Self::NoClientCertificate => f.write_str(
                "the peer presented no client certificate; mutual TLS requires every node to have one (set tls_cert_file and tls_key_file on the peer)",
            ),
            Self::RefusedByPeer { alert } => {
                write!(f, "the peer ended the TLS handshake: {}", explain_alert(alert))
            }
            Self::Incompatible { detail } => write!(
                f,
                "no TLS settings in common with the peer ({detail}); compare min_tls and cipher_suites on both nodes"
            ),
            Self::Protocol { detail } => write!(f, "TLS failed: {detail}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn explain_alert(alert: &str) -> String {
    let why = match alert {
        "unknown_ca" => "it does not trust the CA that issued this node's certificate",
        "certificate_expired" => {
            "it says this node's certificate is expired or not yet valid (renew it, or check the clocks)"
        }
        "bad_certificate" => "it refused this node's certificate (a name it expected is missing)",
        // rustls sends this for every certificate form webpki refuses without a named
        // alert; the acceptor must still learn where to look.
        "certificate_unknown" => {
            "it refused this node's certificate in a form it cannot use (a CA certificate used as a node certificate in CA mode, an X.509 v1 certificate, or a broken chain); the peer's log names the form, and loading this node's settings reports it"
        }
        "certificate_revoked" => {
            "it says this node's certificate is revoked: its serial or key is in the peer's revocation_file or CRL (this node was removed from the cluster)"
        }
        "access_denied" => "its authorization rules do not allow this node's certificate names",
        "certificate_required" => "it requires a client certificate and this node sent none",
        "protocol_version" => "no TLS version in common (is min_tls = 1.3 on one side?)",
        "handshake_failure" => "no cipher suite or TLS version in common",
        "unsupported_certificate" => "this node's certificate is not for this use (extendedKeyUsage)",
        "decrypt_error" => "the handshake signature did not verify",
        _ => "",
    };
    if why.is_empty() {
        format!("alert {alert}")
    } else {
        format!("{why} (alert {alert})")
    }
}

/// A certificate error in words, with the fix for the forms OpenSSL users meet most.
pub(crate) fn describe_cert_error(err: &CertificateError) -> String {
    if let CertificateError::Other(OtherError(inner)) = err {
        let hint = match inner.downcast_ref::<webpki::Error>() {
            Some(webpki::Error::CaUsedAsEndEntity) => Some(
                "it is a CA certificate (basicConstraints CA:TRUE, as `openssl req -x509` makes) used as a node certificate; \
                 share it in pinned mode (tls_trust = \"pinned\") or issue node certificates from a CA with `openssl x509 -req -extfile`",
            ),
            Some(webpki::Error::UnsupportedCertVersion) => Some(
                "it is an X.509 v1 certificate (`openssl x509 -req` without `-extfile` makes these); \
                 re-issue it with `-extfile` giving subjectAltName and extendedKeyUsage=serverAuth,clientAuth",
            ),
            Some(webpki::Error::EndEntityUsedAsCa) => Some(
                "a certificate in the chain that signs others is not a CA (basicConstraints CA:TRUE missing)",
            ),
            _ => None,
        };
        if let Some(hint) = hint {
            return hint.to_owned();
        }
    }
    err.to_string()
}

/// RFC names of alerts, from rustls's Debug names (`UnknownCA` → `unknown_ca`).
pub(crate) fn alert_name(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::UnknownCA => "unknown_ca".into(),
        other => {
            let debug = format!("{other:?}");
            let mut out = String::with_capacity(debug.len() + 4);
            for (i, c) in debug.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            }
            out
        }
    }
}

impl TlsError {
    /// Maps a rustls error (when the verifier did not record a refusal of its own).
    pub(crate) fn from_rustls(err: &RustlsError) -> Self {
        match err {
            RustlsError::NoCertificatesPresented => Self::NoClientCertificate,
            RustlsError::AlertReceived(alert) => Self::RefusedByPeer {
                alert: alert_name(*alert),
            },
            RustlsError::PeerIncompatible(p) => Self::Incompatible {
                detail: incompatible(p),
            },
            RustlsError::InvalidCertificate(e) => Self::CertificateRefused(Box::new(match e {
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => CertRefusal::WrongPurpose {
                    detail: e.to_string(),
                },
                _ => CertRefusal::Invalid {
                    detail: describe_cert_error(e),
                },
            })),
            other => Self::Protocol {
                detail: other.to_string(),
            },
        }
    }
}

fn incompatible(p: &PeerIncompatible) -> String {
    match p {
        PeerIncompatible::SupportedVersionsExtensionRequired => {
            "the peer offers only TLS 1.2 and this node requires TLS 1.3".into()
        }
        PeerIncompatible::Tls12NotOffered | PeerIncompatible::Tls12NotOfferedOrEnabled => {
            "the peer requires TLS 1.3 and this node allows only TLS 1.2".into()
        }
        PeerIncompatible::NoCipherSuitesInCommon => "no cipher suite in common".into(),
        PeerIncompatible::ExtendedMasterSecretExtensionRequired => {
            "the TLS 1.2 peer does not support extended master secret (RFC 7627), which the channel binding needs".into()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_unknown_alert_says_what_it_means() {
        let shown = TlsError::RefusedByPeer {
            alert: "certificate_unknown".into(),
        }
        .to_string();
        assert!(
            shown.contains("a CA certificate used as a node certificate")
                && shown.ends_with("(alert certificate_unknown)"),
            "{shown}"
        );
    }

    #[test]
    fn alert_names_follow_the_rfc() {
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(
            alert_name(AlertDescription::CertificateExpired),
            "certificate_expired"
        );
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(
            alert_name(AlertDescription::ProtocolVersion),
            "protocol_version"
        );
    }
}
