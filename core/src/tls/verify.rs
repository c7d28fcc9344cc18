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
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as RustlsError,
    RootCertStore, SignatureScheme,
};

use super::chain_cache::{self, ChainCache, Verified};
use super::config::{Authorization, TlsConfigError};
use super::error::{describe_cert_error, CertRefusal};
use super::names::{CertNames, CertSummary};
use super::scope::LinkScope;
use crate::revocation::Revocations;

/// Where trust comes from.
#[derive(Debug)]
pub(crate) enum Trust {
    Ca {
        /// rustls's own server-certificate chain check (serverAuth usage, the bundle,
        /// the CRLs); its name check is this module's (`verify_hostname`).
        server_chain: Arc<WebPkiServerVerifier>,
        /// rustls's own client-certificate chain check (clientAuth usage, the bundle,
        /// the CRLs).
        client_chain: Arc<dyn ClientCertVerifier>,
    },
    Pinned(Vec<(CertificateDer<'static>, CertSummary)>),
}

impl Trust {
    /// CA trust. With CRLs, revocation is checked for every certificate of the chain
    /// whose issuer has one; an issuer without a CRL is not held against its
    /// certificates (the CRLs were checked to come from the bundle's CAs), and a CRL past
    /// its nextUpdate still counts (the loader reports it; refusing every certificate of
    /// a CA because its CRL was not renewed in time would lock the cluster out).
    pub(crate) fn ca(
        roots: RootCertStore,
        crls: &[CertificateRevocationListDer<'static>],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TlsConfigError> {
        let roots = Arc::new(roots);
        let bad_crl = |e: &dyn std::fmt::Display| TlsConfigError::BadCrl {
            index: 0,
            detail: e.to_string(),
        };
        let mut client =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider))
                .with_crls(crls.iter().cloned());
        let mut server =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(provider))
                .with_crls(crls.iter().cloned());
        if !crls.is_empty() {
            client = client.allow_unknown_revocation_status();
            server = server.allow_unknown_revocation_status();
        }
        let client_chain = client.build().map_err(|e| bad_crl(&e))?;
        let server_chain = server.build().map_err(|e| bad_crl(&e))?;
        Ok(Self::Ca {
            server_chain,
            client_chain,
        })
    }
}

/// Trust plus authorization, shared by an endpoint's connections.
#[derive(Debug)]
pub(crate) struct PeerPolicy {
    pub(crate) trust: Trust,
    /// The deny-list's certificate entries (serials, SPKI pins).
    pub(crate) revoked: Revocations,
    pub(crate) authorization: Authorization,
    /// This node's DNS names (or CN), for `share_name_with_own_cert`.
    pub(crate) own_names: Vec<String>,
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
    /// Chains this policy has verified (see [`chain_cache`]).
    pub(crate) chains: ChainCache,
}

/// A certificate that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcceptedCert {
    pub(crate) names: CertNames,
    /// When the certificate ends (notAfter, unix seconds): kept from the one parse, so
    /// the link's expiry needs no second.
    pub(crate) not_after: i64,
}

/// A refusal: our account of it, and the rustls error that picks the peer's alert.
type Refused = Box<(CertRefusal, RustlsError)>;

impl PeerPolicy {
    /// Trust, then authorization. `server_name` is set when this node is the initiator
    /// checking the acceptor's certificate. A chain this policy verified before is
    /// taken from its cache (the same verdict, without the parse and the signature
    /// checks); the deny-list and the authorization rules are applied every time.
    pub(crate) fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<AcceptedCert, Refused> {
        let key = chain_cache::key(end_entity, intermediates, server_name);
        let verified = match self.chains.get(&key, now) {
            Some(verified) => {
                self.check_deny_list(end_entity)?;
                verified
            }
            None => {
                let summary = CertSummary::parse(end_entity).ok_or_else(|| {
                    Box::new((
                        CertRefusal::Invalid {
                            detail: "not an X.509 certificate".into(),
                        },
                        RustlsError::InvalidCertificate(CertificateError::BadEncoding),
                    ))
                })?;
                // The deny-list first: its refusal names the file and line, where a
                // CRL's can only name the CRL.
                self.check_deny_list(end_entity)?;
                let name_verified =
                    self.check_trust(end_entity, intermediates, server_name, now, &summary)?;
                self.chains
                    .insert(key, Verified::new(summary, intermediates, name_verified))
            }
        };
        let names = &verified.summary.names;
        self.check_authorization(end_entity, server_name, verified.name_verified, names)?;
        Ok(AcceptedCert {
            names: names.clone(),
            not_after: verified.summary.not_after,
        })
    }

    /// The deny-list's certificate entries (serials with their issuer, SPKI pins).
    fn check_deny_list(&self, end_entity: &CertificateDer<'_>) -> Result<(), Refused> {
        match self.revoked.certificate(end_entity) {
            Some(entry) => Err(Box::new((
                CertRefusal::Revoked {
                    detail: format!("{entry}"),
                },
                RustlsError::InvalidCertificate(CertificateError::Revoked),
            ))),
            None => Ok(()),
        }
    }

    /// The same decision again for a joined link's peer (the settings changed): its
    /// chain as it presented it, the name this node dialed (initiator side), at `now`.
    pub(crate) fn recheck(
        &self,
        chain: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
    ) -> Result<AcceptedCert, CertRefusal> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(CertRefusal::Invalid {
                detail: "the link has no peer certificate".into(),
            });
        };
        self.check(end_entity, intermediates, server_name, now)
            .map_err(|refused| refused.0)
    }

    /// The chain (or the pin) and the validity dates. `Ok(true)` when the chain
    /// verifier also found `server_name` in the certificate, so the hostname rule need
    /// not parse the certificate again.
    fn check_trust(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&ServerName<'_>>,
        now: UnixTime,
        summary: &CertSummary,
    ) -> Result<bool, Refused> {
        match &self.trust {
            Trust::Ca {
                server_chain,
                client_chain,
            } => {
                let result = match server_name {
                    // rustls checks the name after the chain and revocation: a name
                    // mismatch means both passed, and the name rule is ours to apply.
                    Some(name) => match server_chain.verify_server_cert(
                        end_entity,
                        intermediates,
                        name,
                        &[],
                        now,
                    ) {
                        Ok(_) => Ok(true),
                        Err(RustlsError::InvalidCertificate(
                            CertificateError::NotValidForName
                            | CertificateError::NotValidForNameContext { .. },
                        )) => Ok(false),
                        Err(e) => Err(e),
                    },
                    None => client_chain
                        .verify_client_cert(end_entity, intermediates, now)
                        .map(|_| false),
                };
                result.map_err(|e| {
                    let mut refusal = refusal_for(&e, summary, now);
                    if let CertRefusal::Revoked { detail } = &mut refusal {
                        if let Some(facts) = crate::revocation::CertFacts::parse(end_entity) {
                            *detail = format!(
                                "serial {} of {detail}",
                                crate::revocation::hex(&facts.serial)
                            );
                        }
                    }
                    Box::new((refusal, e))
                })
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
                Ok(false)
            }
        }
    }

    fn check_authorization(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: Option<&ServerName<'_>>,
        name_verified: bool,
        names: &CertNames,
    ) -> Result<(), Refused> {
        let rules = &self.authorization;
        let denied =
            RustlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        if let (Some(server_name), true) = (server_name, rules.verify_hostname) {
            let matches = name_verified
                || ParsedCertificate::try_from(end_entity)
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
            CertificateError::Revoked => CertRefusal::Revoked {
                detail: format!(
                    "{} (issued by \"{}\") is listed in a CRL of tls_crl_files",
                    summary.subject, summary.issuer
                ),
            },
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
