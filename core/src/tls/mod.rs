//! TLS: the optional bottom layer of a connection, and the only module of the core that
//! names rustls (0.23, ring provider), so a rustls upgrade touches this folder alone.
//!
//! - [`config`]: what the operator chooses ([`TlsConfig`]), checked when an endpoint is
//!   built;
//! - `verify`: trust (CA bundle or pinned certificates) and authorization rules,
//!   per connection so the full reason for a refusal is kept;
//! - `session`: one link's rustls session over byte buffers, with the channel binding;
//! - [`names`]: certificate names and allow-list patterns;
//! - [`error`]: TLS failures in an operator's words.
//!
//! Certificates and keys arrive parsed (`rustls-pki-types` DER types); reading PEM files
//! belongs to the `palisade` crate.

pub mod config;
pub mod error;
pub mod names;
pub(crate) mod session;
mod verify;

pub use config::{Authorization, Identity, TlsConfig, TlsConfigError, TlsVersion, TrustAnchors};
pub use error::{CertRefusal, TlsError};
pub use names::{CertNames, CertSummary, NamePattern, NodeIdNames};
pub use rustls::pki_types;

/// The exporter label of the channel binding (RFC 5705 / RFC 8446 §7.5).
pub const CHANNEL_BINDING_LABEL: &[u8] = b"EXPORTER-palisade-join-v1";

/// Bytes of exporter output mixed into the join proofs.
pub const CHANNEL_BINDING_LEN: usize = 32;

/// What TLS established about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The negotiated version (`TLSv1_3`, `TLSv1_2`).
    pub version: &'static str,
    /// The negotiated cipher suite's IANA name.
    pub cipher_suite: &'static str,
    /// The names in the peer's certificate.
    pub names: CertNames,
}
