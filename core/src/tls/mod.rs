//! TLS: the optional bottom layer of a connection, and the only module of the core that
//! names rustls (0.23, ring provider), so a rustls upgrade touches this folder alone.
//!
//! - [`config`]: what the operator chooses ([`TlsConfig`]), checked when an endpoint is
//!   built;
//! - `verify`: trust (CA bundle or pinned certificates) and authorization rules,
//!   per connection so the full reason for a refusal is kept;
//! - `chain_cache`: chains already verified, so a reconnecting peer's costs no second
//!   signature check;
//! - `session`: one link's rustls session over byte buffers, with the channel binding;
//! - [`names`]: certificate names and allow-list patterns;
//! - [`error`]: TLS failures in an operator's words.
//!
//! Certificates and keys arrive parsed (`rustls-pki-types` DER types); reading PEM files
//! belongs to the `palisade` crate.

mod chain_cache;
pub mod config;
pub mod crl;
pub mod error;
pub mod names;
mod scope;
pub(crate) mod session;
mod verify;

pub use chain_cache::remember_verified_chains;
pub use config::{
    default_cipher_suites, Authorization, Identity, TlsConfig, TlsConfigError, TlsVersion,
    TrustAnchors,
};
pub use error::{CertRefusal, TlsError};
pub use names::{CertNames, CertSummary, NamePattern, NodeIdNames};
pub use rustls::pki_types;
pub(crate) use verify::rfc3339;

/// The exporter label of the channel binding (RFC 5705 / RFC 8446 §7.5).
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-palisade-join-v1";

/// Bytes of exporter output mixed into the join proofs.
pub const CHANNEL_BINDING_LEN: usize = 32;

/// What TLS established about the peer.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The negotiated version (`TLSv1_3`, `TLSv1_2`).
    pub version: &'static str,
    /// The negotiated cipher suite's IANA name.
    pub cipher_suite: &'static str,
    /// The names in the peer's certificate.
    pub names: CertNames,
    /// The peer's end-entity certificate (DER), as verified: which certificate a link
    /// was made with, so a rotation can be followed link by link (see [`Self::serial`]).
    pub certificate: pki_types::CertificateDer<'static>,
}

impl TlsPeer {
    /// The serial number of the peer's certificate (big-endian bytes as encoded), the
    /// way an operator tells a renewed certificate from the one before.
    pub fn serial(&self) -> Option<Vec<u8>> {
        use x509_parser::prelude::FromDer;
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(&self.certificate).ok()?;
        Some(cert.raw_serial().to_vec())
    }
}

/// Not derived: the certificate shows as its serial, not a kilobyte of DER.
impl std::fmt::Debug for TlsPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let serial: String = self
            .serial()
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        f.debug_struct("TlsPeer")
            .field("version", &self.version)
            .field("cipher_suite", &self.cipher_suite)
            .field("names", &self.names)
            .field("certificate_serial", &serial)
            .finish()
    }
}
