//! The TLS part of a node's settings, as written in its config file: file paths and
//! rules, before any file is read. `crate::tls_load` turns it into the core's
//! `TlsConfig` and the report's findings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How peer certificates are trusted (`tls_trust`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsTrust {
    /// Mutual TLS against the CA bundle in `tls_ca_file` (the default).
    #[default]
    Ca,
    /// Every node shares one self-signed certificate (`tls_cert_file`), trusted byte
    /// for byte: the development setup.
    Pinned,
}

/// The lowest TLS version (`min_tls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MinTls {
    /// TLS 1.2 or 1.3 (1.3 preferred), the default.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// The TLS settings, keys as in the config file (flattened into its top level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// `tls_enabled`: TLS under the frame stream (Arc's key).
    pub tls_enabled: bool,
    /// `tls_cert_file`: this node's certificate chain, PEM (leaf first).
    pub tls_cert_file: Option<PathBuf>,
    /// `tls_key_file`: this node's private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub tls_key_file: Option<PathBuf>,
    /// `tls_ca_file`: the CA bundle peers are checked against, PEM, one or more CAs.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls_crl_files`: X.509 CRLs (PEM or DER), each signed by a CA of `tls_ca_file`.
    /// Not with `tls_trust = "pinned"` (revoke a pinned certificate with a `serial` or
    /// `spki-sha256` line of `revocation_file`).
    pub tls_crl_files: Vec<PathBuf>,
    /// `tls_trust`: `ca` or `pinned`.
    pub tls_trust: TlsTrust,
    /// `verify_hostname`: the dialer checks that the acceptor's certificate names the
    /// host it dialed (or the name it was told to expect). `None`: the mode's default,
    /// ON in CA mode (a CA signs many certificates; the dialer must know it reached the
    /// node it meant) and OFF in pinned mode (every node holds the same certificate, so
    /// the name proves nothing).
    pub verify_hostname: Option<bool>,
    /// `same_name_as_own_cert`: the peer's certificate must share a DNS name with ours.
    /// `None`: off in both modes (it suits clusters whose certificates all carry the
    /// cluster's name; `node_id_in_cert` is the general rule).
    pub same_name_as_own_cert: Option<bool>,
    /// `allowed_names`: patterns (`*.svc.cluster.local`) one of the peer certificate's
    /// names must match. Empty: no allow-list.
    pub allowed_names: Vec<String>,
    /// `node_id_in_cert`: the peer's node id must be one of its certificate's DNS names.
    /// `None`: the mode's default, ON in CA mode (without it any certificate the CA
    /// ever signed joins under any node id it claims) and OFF in pinned mode (one shared
    /// certificate names no single node). Loading refuses a node whose own `node_id` is
    /// not among its certificate's DNS names while this is on, and warns when a CA-mode
    /// node has every rule off.
    pub node_id_in_cert: Option<bool>,
    /// `min_tls`: `"1.2"` or `"1.3"`.
    pub min_tls: MinTls,
    /// `cipher_suites`: IANA names in preference order. Empty: the defaults.
    pub cipher_suites: Vec<String>,
}
