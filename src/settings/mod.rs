//! A node's settings, as an operator writes them: a TOML file with environment
//! overrides (`PALISADE_<KEY>`), or built in code.

pub mod tls;

pub use tls::{MinTls, TlsSettings, TlsTrust};
