//! palisade secures the links between the nodes of a cluster: an encrypted, mutually
//! authenticated channel carrying length-prefixed frames, and a join handshake that
//! refuses any peer that cannot prove it knows the cluster's shared secret.
//!
//! This crate is what applications depend on. It re-exports the sans-IO core
//! ([`palisade_core`]) and, behind features of the same names, the runtime adapters:
//! `tokio`, `async-std`, `smol` and `blocking` (std sockets and threads). Every adapter
//! has the same shape: `Listener::bind(addr, config)` → `accept()` → joined
//! `Connection`; `connect(addr, config)` → joined `Connection`; `send`, `recv`, `peer`,
//! `close`, `split`; one [`Error`](palisade_driver::Error) type.

pub mod pem;
pub mod report;
pub mod settings;
pub mod tls_load;

pub use palisade_core as core;
pub use palisade_core::*;
pub use palisade_driver::{Error as LinkError, HandshakeFailure};
pub use report::{Finding, Report, Severity};
pub use tls_load::load_tls;

/// palisade on tokio.
#[cfg(feature = "tokio")]
pub use palisade_tokio as tokio;

/// palisade on async-std.
#[cfg(feature = "async-std")]
pub use palisade_async_std as async_std;

/// palisade on smol.
#[cfg(feature = "smol")]
pub use palisade_smol as smol;

/// palisade on blocking std sockets.
#[cfg(feature = "blocking")]
pub use palisade_blocking as blocking;
