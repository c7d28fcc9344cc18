//! Deciding on the peer's certificate: trust (CA bundle or pinned), then authorization.
//!
//! One [`PeerVerifier`] serves every connection of an endpoint (it sits in the shared
//! rustls configurations); each verdict goes to the link being verified, through its
//! [`LinkScope`](super::scope::LinkScope): rustls only carries a coarse error (and sends
//! the peer the matching alert), while the verdict holds the full story (issuer name,
//! dates, expected and presented names) for this node's error, and the accepted
//! certificate's names for the join's identity check.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as RustlsError,
    RootCertStore, SignatureScheme,
};

use super::config::Authorization;
use super::error::{describe_cert_error, CertRefusal};
use super::names::{CertNames, CertSummary};
use super::scope::LinkScope;

/// Where trust comes from.
#[derive(Debug)]
pub(crate) enum Trust {
    Ca {
        roots: Arc<RootCertStore>,
        /// rustls's own client-certificate chain check (clientAuth usage, the bundle).
        client_chain: Arc<dyn ClientCertVerifier>,
    },
    Pinned(Vec<(CertificateDer<'static>, CertSummary)>),
}

impl Trust {
    pub(crate) fn ca(roots: RootCertStore, provider: &Arc<CryptoProvider>) -> Result<Self, String> {
        let roots = Arc::new(roots);
        let client_chain =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider))
                .build()
                .map_err(|e| e.to_string())?;
        Ok(Self::Ca {
            roots,
            client_chain,
        })
    }
}

/// Trust plus authorization, shared by an endpoint's connections.
#[derive(Debug)]
pub(crate) struct PeerPolicy {
    pub(crate) trust: Trust,
    pub(crate) authorization: Authorization,
    /// This node's DNS names (or CN), for `share_name_with_own_cert`.
    pub(crate) own_names: Vec<String>,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

/// A certificate that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptedCert {
    pub(crate) names: CertNames,
}

/// A refusal: our account of it, and the rustls error that picks the peer's alert.
type Refused = Box<(CertRefusal, RustlsError)>;

impl PeerPolicy {
    /// Trust, then authorization. `server_name` is set when this node is the initiator
    /// checking the acceptor's certificate.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<AcceptedCert, Refused> {
        let summary = CertSummary::parse(end_entity).ok_or_else(|| {
            Box::new((
                CertRefusal::Invalid {
                    detail: "not an X.509 certificate".into(),
                },
                RustlsError::InvalidCertificate(CertificateError::BadEncoding),
            ))
        })?;
        self.check_trust(end_entity, intermediates, server_name, now, &summary)?;
        self.check_authorization(end_entity, server_name, &summary.names)?;
        Ok(AcceptedCert {
            names: summary.names,
        })
    }

    fn check_trust(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
        summary: &CertSummary,
    ) -> Result<(), Refused> {
        match &self.trust {
            Trust::Ca {
                roots,
                client_chain,
            } => {
                let result = match server_name {
                    Some(_) => ParsedCertificate::try_from(end_entity).and_then(|parsed| {
                        verify_server_cert_signed_by_trust_anchor(
                            &parsed,
                            roots,
                            intermediates,
                            now,
                            self.algorithms.all,
                        )
                    }),
                    None => client_chain
                        .verify_client_cert(end_entity, intermediates, now)
                        .map(|_| ()),
                };
                result.map_err(|e| Box::new((refusal_for(&e, summary, now), e)))
            }
            Trust::Pinned(pinned) => {
                if !pinned
                    .iter()
                    .any(|(der, _)| der.as_ref() == end_entity.as_ref())
                {
                    let digest = ring::digest::digest(&ring::digest::SHA256, end_entity);
                    return Err(Box::new((
                        CertRefusal::NotPinned {
                            subject: summary.subject.clone(),
                            sha256: hex(digest.as_ref()),
                        },
                        RustlsError::InvalidCertificate(CertificateError::UnknownIssuer),
                    )));
                }
                let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
                let time = now;
                if secs < summary.not_before {
                    let not_before = unix_time(summary.not_before);
                    return Err(Box::new((
                        not_yet_valid(summary, now),
                        RustlsError::InvalidCertificate(CertificateError::NotValidYetContext {
                            time,
                            not_before,
                        }),
                    )));
                }
                if secs > summary.not_after {
                    let not_after = unix_time(summary.not_after);
                    return Err(Box::new((
                        expired(summary, now),
                        RustlsError::InvalidCertificate(CertificateError::ExpiredContext {
                            time,
                            not_after,
                        }),
                    )));
                }
                Ok(())
            }
        }
    }

    fn check_authorization(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: Option<&ServerName<'_>>,
        names: &CertNames,
    ) -> Result<(), Refused> {
        let rules = &self.authorization;
        let denied =
            RustlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        if let (Some(server_name), true) = (server_name, rules.verify_hostname) {
            let matches = ParsedCertificate::try_from(end_entity)
                .and_then(|parsed| verify_server_name(&parsed, server_name))
                .is_ok()
                || (names.dns.is_empty()
                    && names.ips.is_empty()
                    && names.contains(&server_name.to_str()));
            if !matches {
                return Err(Box::new((
                    CertRefusal::HostnameMismatch {
                        expected: server_name.to_str().into_owned(),
                        presented: names.clone(),
                    },
                    RustlsError::InvalidCertificate(CertificateError::NotValidForName),
                )));
            }
        }
        if !rules.allowed_names.is_empty() {
            let candidates = names.for_authorization();
            let allowed = candidates
                .iter()
                .any(|n| rules.allowed_names.iter().any(|p| p.matches(n)));
            if !allowed {
                return Err(Box::new((
                    CertRefusal::NameNotAllowed {
                        allowed: rules.allowed_names.iter().map(|p| p.to_string()).collect(),
                        presented: names.clone(),
                    },
                    denied,
                )));
            }
        }
        if rules.share_name_with_own_cert {
            let theirs = names.host_names();
            let shared = theirs
                .iter()
                .any(|t| self.own_names.iter().any(|o| o.eq_ignore_ascii_case(t)));
            if !shared {
                return Err(Box::new((
                    CertRefusal::NoSharedName {
                        ours: self.own_names.clone(),
                        presented: names.clone(),
                    },
                    denied,
                )));
            }
        }
        Ok(())
    }
}

/// Our account of a chain failure rustls reported.
fn refusal_for(err: &RustlsError, summary: &CertSummary, now: UnixTime) -> CertRefusal {
    match err {
        RustlsError::InvalidCertificate(cert_err) => match cert_err {
            CertificateError::UnknownIssuer => CertRefusal::UnknownIssuer {
                subject: summary.subject.clone(),
                issuer: summary.issuer.clone(),
            },
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                expired(summary, now)
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                not_yet_valid(summary, now)
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                CertRefusal::WrongPurpose {
                    detail: cert_err.to_string(),
                }
            }
            other => CertRefusal::Invalid {
                detail: describe_cert_error(other),
            },
        },
        other => CertRefusal::Invalid {
            detail: other.to_string(),
        },
    }
}

fn expired(summary: &CertSummary, now: UnixTime) -> CertRefusal {
    CertRefusal::Expired {
        not_after: rfc3339(summary.not_after),
        now: rfc3339(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)),
    }
}

fn not_yet_valid(summary: &CertSummary, now: UnixTime) -> CertRefusal {
    CertRefusal::NotYetValid {
        not_before: rfc3339(summary.not_before),
        now: rfc3339(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)),
    }
}

fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {secs}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The endpoint's verifier: its policy, with each verdict recorded in the link being
/// verified.
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    policy: Arc<PeerPolicy>,
}

impl PeerVerifier {
    pub(crate) fn new(policy: Arc<PeerPolicy>) -> Self {
        Self { policy }
    }

    fn decide(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<(), RustlsError> {
        let result = self
            .policy
            .check(end_entity, intermediates, server_name, now);
        let (verdict, outcome) = match result {
            Ok(accepted) => (Ok(accepted), Ok(())),
            Err(refused) => {
                let (refusal, err) = *refused;
                (Err(refusal), Err(err))
            }
        };
        LinkScope::record(verdict);
        outcome
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.policy.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        self.decide(end_entity, intermediates, Some(server_name), now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls12_signature(message, cert, dss, &self.policy.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(message, cert, dss, &self.policy.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        match &self.policy.trust {
            Trust::Ca { client_chain, .. } => client_chain.root_hint_subjects(),
            Trust::Pinned(_) => &[],
        }
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RustlsError> {
        self.decide(end_entity, intermediates, None, now)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls12_signature(message, cert, dss, &self.policy.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(message, cert, dss, &self.policy.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}
