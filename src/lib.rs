//! palisade secures the links between the nodes of a cluster: an encrypted, mutually
//! authenticated channel carrying length-prefixed frames, and a join handshake that
//! refuses any peer that cannot prove it knows the cluster's shared secret.
//!
//! This crate is what applications depend on. Today it re-exports the sans-IO core
//! ([`palisade_core`]); the runtime adapters, configuration loading and certificate
//! handling arrive here behind features.

pub use palisade_core as core;
pub use palisade_core::*;
