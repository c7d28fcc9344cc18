//! TLS settings as the operator writes them, and what they compile to when an endpoint
//! is built: a crypto provider limited to the chosen suites, this node's certified key,
//! and the peer policy. Every mistake is found here, before the first link.

use std::fmt;
use std::sync::Arc;

use rustls::client::{ClientConfig, ResolvesClientCert};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{RootCertStore, SignatureScheme, SupportedProtocolVersion};

use super::names::{CertSummary, NamePattern};
use super::scope::LinkClock;
use super::verify::{PeerPolicy, PeerVerifier, Trust};

/// The lowest TLS version a node accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TlsVersion {
    /// TLS 1.2 (TLS 1.3 is still preferred when both sides have it).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls12 => "TLS 1.2",
            Self::Tls13 => "TLS 1.3",
        })
    }
}

/// This node's certificate chain (end entity first) and its private key.
pub struct Identity {
    /// The chain, end-entity certificate first, then intermediates.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field(
                "cert_chain",
                &format_args!("{} certificate(s)", self.cert_chain.len()),
            )
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Which peer certificates are trusted.
#[derive(Debug, Clone)]
pub enum TrustAnchors {
    /// Mutual TLS against a CA bundle (several CAs during a CA rotation). Both sides
    /// present certificates and verify them against the bundle.
    CaBundle(Vec<CertificateDer<'static>>),
    /// Exactly these certificates (the development setup: every node shares one
    /// self-signed certificate and key). Their validity dates still apply.
    Pinned(Vec<CertificateDer<'static>>),
}

/// Checks on the peer's certificate after the trust check. All that are on must pass.
///
/// Safe by default, whether built in code or loaded from a file: in CA mode
/// ([`TlsConfig::new`] with [`TrustAnchors::CaBundle`]) the dialed hostname must be in
/// the acceptor's certificate and the peer's node id must be one of its certificate's
/// names. Pinned mode ([`Authorization::pinned`]) checks neither: every node presents
/// the same pinned certificate. A CA-mode node without any name rule is refused by
/// `Config::validate` unless [`Authorization::accept_any_name`] says so explicitly, and
/// that weakening is reported (`Config::weakenings`).
#[derive(Debug, Clone)]
pub struct Authorization {
    /// Initiator side: the dialed hostname or IP must be one of the acceptor
    /// certificate's names (default on).
    pub verify_hostname: bool,
    /// The peer's certificate must share a DNS name with this node's own certificate
    /// (Akka's rotating-keys rule: every node of a cluster carries the cluster's name).
    pub share_name_with_own_cert: bool,
    /// At least one of the peer certificate's names (DNS SANs, URI SANs, IP SANs; the CN
    /// when there is no SAN) must match one of these patterns. Empty: no allow-list.
    pub allowed_names: Vec<NamePattern>,
    /// The node id the peer sends in its HELLO / WELCOME must be, byte for byte, one of
    /// its certificate's DNS names (the CN when it has no alternative name; see
    /// `node_id_names`). Refused with reject code 9 (identity not allowed). Default on.
    pub node_id_in_cert: bool,
    /// Which certificate names `node_id_in_cert` looks at (default: DNS names only).
    pub node_id_names: super::NodeIdNames,
    /// CA mode: allow settings with no name rule at all (`node_id_in_cert`,
    /// `allowed_names` and `share_name_with_own_cert` all off), so that any certificate
    /// the CA signed joins under any node id. Off by default; turning it on is the
    /// explicit opt-out the validation asks for, and is reported as a weakening.
    pub accept_any_name: bool,
}

impl Default for Authorization {
    /// The CA-mode defaults: `verify_hostname` and `node_id_in_cert` on.
    fn default() -> Self {
        Self {
            verify_hostname: true,
            share_name_with_own_cert: false,
            allowed_names: Vec::new(),
            node_id_in_cert: true,
            node_id_names: super::NodeIdNames::default(),
            accept_any_name: false,
        }
    }
}

impl Authorization {
    /// The pinned-mode defaults: the pin is the identity, so no name rule.
    pub fn pinned() -> Self {
        Self {
            verify_hostname: false,
            node_id_in_cert: false,
            ..Self::default()
        }
    }

    /// Every rule off, deliberately: any certificate the trust accepts joins, under any
    /// node id (reported as a weakening).
    pub fn trust_only() -> Self {
        Self {
            verify_hostname: false,
            node_id_in_cert: false,
            accept_any_name: true,
            ..Self::default()
        }
    }

    /// The defaults for this kind of trust.
    pub fn for_trust(trust: &TrustAnchors) -> Self {
        match trust {
            TrustAnchors::CaBundle(_) => Self::default(),
            TrustAnchors::Pinned(_) => Self::pinned(),
        }
    }

    /// Whether some rule ties a CA-signed certificate to a name.
    fn has_name_rule(&self) -> bool {
        self.node_id_in_cert || self.share_name_with_own_cert || !self.allowed_names.is_empty()
    }
}

/// TLS settings for a node.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// This node's certificate and key.
    pub identity: Identity,
    /// Which peer certificates are trusted.
    pub trust: TrustAnchors,
    /// Lowest TLS version accepted (default TLS 1.2; TLS 1.3 is always preferred).
    pub min_version: TlsVersion,
    /// Cipher suites by IANA name (`TLS13_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`, ...), in preference order. Empty:
    /// [`default_cipher_suites`] (ring's, `TLS13_AES_128_GCM_SHA256` first).
    pub cipher_suites: Vec<String>,
    /// Checks on the peer's certificate beyond trust.
    pub authorization: Authorization,
    /// X.509 CRLs (DER) from the CAs of the bundle (`tls_crl_files`): a certificate
    /// whose serial one of them lists is refused with the alert `certificate_revoked`.
    /// Each must be signed by a CA of the bundle. An issuer without a CRL here is not
    /// checked (its certificates are not refused for want of one).
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

impl TlsConfig {
    /// Settings with TLS 1.2 minimum, default suites, no CRL, and the safe authorization
    /// defaults for `trust` ([`Authorization::for_trust`]).
    pub fn new(identity: Identity, trust: TrustAnchors) -> Self {
        Self {
            identity,
            min_version: TlsVersion::default(),
            cipher_suites: Vec::new(),
            authorization: Authorization::for_trust(&trust),
            trust,
            crls: Vec::new(),
        }
    }

    /// The IANA names of every cipher suite palisade can use.
    pub fn known_cipher_suites() -> Vec<&'static str> {
        ring::default_provider()
            .cipher_suites
            .iter()
            .filter_map(|s| s.suite().as_str())
            .collect()
    }
}

/// TLS settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A cipher suite name palisade does not know.
    UnknownCipherSuite {
        /// The name as configured.
        name: String,
        /// The names palisade knows.
        known: Vec<&'static str>,
    },
    /// None of the chosen suites works with the allowed TLS versions.
    NoUsableSuite {
        /// The lowest version allowed.
        min_version: TlsVersion,
    },
    /// The identity has no certificate.
    EmptyChain,
    /// The private key cannot be used (unsupported type, or it does not belong to the
    /// certificate).
    BadKey(String),
    /// A certificate cannot be parsed.
    BadCertificate {
        /// Which certificate (own, CA, pinned).
        which: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The trust anchors are empty.
    NoTrustAnchors,
    /// CA mode with no rule tying a certificate to a name (`node_id_in_cert`,
    /// `allowed_names`, `share_name_with_own_cert` all off) and no explicit
    /// `accept_any_name`.
    NoNameRule,
    /// A CRL cannot be used.
    BadCrl {
        /// Which CRL (0-based, in `tls_crl_files` order).
        index: usize,
        /// What is wrong.
        detail: String,
    },
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCipherSuite { name, known } => write!(
                f,
                "cipher_suites: unknown suite {name:?}; known suites: {}",
                known.join(", ")
            ),
            Self::NoUsableSuite { min_version } => write!(
                f,
                "cipher_suites: none of the chosen suites works with min_tls = {min_version}; add a suite for that version"
            ),
            Self::EmptyChain => f.write_str(
                "tls_cert_file: the certificate file holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            ),
            Self::BadKey(detail) => write!(
                f,
                "tls_key_file: {detail}; use the key that was generated with this certificate (PKCS#8, PKCS#1 RSA or SEC1 EC)"
            ),
            Self::BadCertificate { which, detail } => {
                write!(f, "{which}: the certificate cannot be used: {detail}")
            }
            Self::NoTrustAnchors => f.write_str(
                "tls_ca_file: the trust bundle holds no certificate; give the cluster CA (or, pinned, the shared certificate)",
            ),
            Self::NoNameRule => f.write_str(
                "node_id_in_cert is off and neither allowed_names nor same_name_as_own_cert is set: any certificate the CA signed would join under any node id; turn node_id_in_cert on (the default), set allowed_names, or opt out explicitly (Authorization::accept_any_name)",
            ),
            Self::BadCrl { index, detail } => write!(
                f,
                "tls_crl_files: CRL #{} cannot be used: {detail}; give a CRL (PEM or DER) signed by a CA of tls_ca_file, e.g. from `palisade certs revoke` or `openssl ca -gencrl`",
                index + 1
            ),
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// What a [`TlsConfig`] compiles to; shared by every connection of an endpoint: the
/// rustls configurations of both sides, built once per endpoint and settings
/// generation (each link keeps its clock and verdict in its own
/// [`LinkScope`](super::scope::LinkScope)).
#[derive(Debug)]
pub(crate) struct TlsContext {
    pub(crate) client: Arc<ClientConfig>,
    pub(crate) server: Arc<ServerConfig>,
    /// Trust and authorization, for re-checking joined links when settings change.
    pub(crate) policy: Arc<PeerPolicy>,
}

/// Always presents this node's certificate.
#[derive(Debug)]
struct OwnCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

impl TlsContext {
    pub(crate) fn build(
        config: &TlsConfig,
        revoked: &crate::revocation::Revocations,
    ) -> Result<Self, TlsConfigError> {
        let provider = Arc::new(provider_for(config)?);
        let versions: Vec<&'static SupportedProtocolVersion> = [&TLS13, &TLS12]
            .into_iter()
            .filter(|v| config.min_version == TlsVersion::Tls12 || v.version == TLS13.version)
            .filter(|v| provider.cipher_suites.iter().any(|s| s.version() == *v))
            .collect();
        if versions.is_empty() {
            return Err(TlsConfigError::NoUsableSuite {
                min_version: config.min_version,
            });
        }
        let own = config
            .identity
            .cert_chain
            .first()
            .ok_or(TlsConfigError::EmptyChain)?;
        let own_summary = CertSummary::parse(own).ok_or(TlsConfigError::BadCertificate {
            which: "tls_cert_file",
            detail: "not an X.509 certificate".into(),
        })?;
        let certified_key = certified_key(&config.identity, &provider)?;
        let trust = match &config.trust {
            TrustAnchors::CaBundle(cas) => {
                if cas.is_empty() {
                    return Err(TlsConfigError::NoTrustAnchors);
                }
                if !config.authorization.has_name_rule() && !config.authorization.accept_any_name {
                    return Err(TlsConfigError::NoNameRule);
                }
                let mut roots = RootCertStore::empty();
                for ca in cas {
                    roots
                        .add(ca.clone())
                        .map_err(|e| TlsConfigError::BadCertificate {
                            which: "tls_ca_file",
                            detail: e.to_string(),
                        })?;
                }
                super::crl::check_crls(&config.crls, cas)?;
                Trust::ca(roots, &config.crls, &provider)?
            }
            TrustAnchors::Pinned(certs) => {
                if certs.is_empty() {
                    return Err(TlsConfigError::NoTrustAnchors);
                }
                if !config.crls.is_empty() {
                    return Err(TlsConfigError::BadCrl {
                        index: 0,
                        detail: "pinned trust has no CA whose CRL could apply (revoke a pinned certificate by removing it from the pins, or with a revocation_file serial or spki-sha256 entry)".into(),
                    });
                }
                let mut pinned = Vec::with_capacity(certs.len());
                for cert in certs {
                    let summary =
                        CertSummary::parse(cert).ok_or(TlsConfigError::BadCertificate {
                            which: "tls_cert_file (the pinned certificate, tls_trust = \"pinned\")",
                            detail: "not an X.509 certificate".into(),
                        })?;
                    pinned.push((cert.clone(), summary));
                }
                Trust::Pinned(pinned)
            }
        };
        let policy = PeerPolicy {
            trust,
            revoked: revoked.clone(),
            authorization: config.authorization.clone(),
            own_names: own_summary.names.host_names(),
            algorithms: provider.signature_verification_algorithms,
            chains: Default::default(),
        };
        let own = Arc::new(OwnCert(Arc::new(certified_key)));
        let policy = Arc::new(policy);
        let verifier = Arc::new(PeerVerifier::new(Arc::clone(&policy)));
        let unusable = |_| TlsConfigError::NoUsableSuite {
            min_version: config.min_version,
        };
        let mut client =
            ClientConfig::builder_with_details(Arc::clone(&provider), Arc::new(LinkClock))
                .with_protocol_versions(&versions)
                .map_err(unusable)?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_client_cert_resolver(own.clone());
        // Every handshake is a full one: no resumption, no tickets (a resumed session
        // would skip the certificate check this node explains and authorizes on).
        client.resumption = rustls::client::Resumption::disabled();
        client.require_ems = true;
        let mut server = ServerConfig::builder_with_details(provider, Arc::new(LinkClock))
            .with_protocol_versions(&versions)
            .map_err(unusable)?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(own);
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        server.require_ems = true;
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
            policy,
        })
    }
}

/// This node's chain and key, checked to belong together.
fn certified_key(
    identity: &Identity,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsConfigError> {
    let signing_key = provider
        .key_provider
        .load_private_key(identity.key.clone_key())
        .map_err(|e| TlsConfigError::BadKey(e.to_string()))?;
    let certified = CertifiedKey::new(identity.cert_chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsConfigError::BadKey(
            "the private key does not belong to the certificate".into(),
        )),
        Err(rustls::Error::InvalidCertificate(e)) => Err(TlsConfigError::BadCertificate {
            which: "tls_cert_file",
            detail: super::error::describe_cert_error(&e),
        }),
        Err(e) => Err(TlsConfigError::BadCertificate {
            which: "tls_cert_file",
            detail: e.to_string(),
        }),
    }
}

/// The ring provider, its suites limited to (and ordered as) the configured names.
/// palisade's cipher suites when `tls.cipher_suites` is empty: ring's, with TLS 1.3's
/// `TLS13_AES_128_GCM_SHA256` moved first.
///
/// Why not rustls's order (AES-256 / SHA-384 first): the key exchange (X25519, P-256) and
/// the certificates (P-256) give 128-bit security, so a 256-bit cipher adds none, and
/// SHA-384 has no hardware path in ring where SHA-256 has one (SHA-NI): on the benchmark
/// machine its HKDF steps are 9 % of a whole mutual-TLS handshake. AES-128-GCM is also
/// the suite every TLS 1.3 stack must implement (RFC 8446 §9.1). Nothing is removed: a
/// peer that offers only the others still gets them.
pub fn default_cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    let mut suites = ring::default_provider().cipher_suites;
    // A stable sort: the rest keep ring's order.
    suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    suites
}

fn provider_for(config: &TlsConfig) -> Result<CryptoProvider, TlsConfigError> {
    let mut provider = ring::default_provider();
    if config.cipher_suites.is_empty() {
        provider.cipher_suites = default_cipher_suites();
        return Ok(provider);
    }
    let all = std::mem::take(&mut provider.cipher_suites);
    for name in &config.cipher_suites {
        let wanted = name.trim();
        let suite = all
            .iter()
            .find(|s| {
                s.suite()
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
            })
            .ok_or_else(|| TlsConfigError::UnknownCipherSuite {
                name: name.clone(),
                known: TlsConfig::known_cipher_suites(),
            })?;
        if !provider.cipher_suites.contains(suite) {
            provider.cipher_suites.push(*suite);
        }
    }
    Ok(provider)
}
