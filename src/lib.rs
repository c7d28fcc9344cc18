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
pub mod watch;

pub use palisade_core as core;
// Everything the core exports, except that its `Connection` (the sans-IO state machine)
// is `CoreConnection` here: `Connection` in this crate's docs and errors always means an
// adapter's joined link (`palisade::tokio::Connection`, ...).
pub use palisade_core::{config, error, frame, frame_auth, join, preface, random, tls};
pub use palisade_core::{
    BelowStrict, CloseCause, CloseCode, CloseReason, Config, ConfigError, ConnectError,
    Connection as CoreConnection, ConnectionError, Endpoint, Event, FieldError, FrameAuthError,
    FrameDecoder, FrameError, FrameKind, JoinError, KeyId, Keyring, Mode, OsRandom, PeerInfo,
    PrefaceError, RandomError, RandomSource, RejectCode, Rejection, SecretError, SendError,
    SharedSecret, Side,
};
/// A node's counters and gauges: [`Metrics`], [`MetricsSnapshot`], the refusal
/// [`Direction`](metrics::Direction) and the label functions. The `metrics` feature also
/// sends every update to the `metrics` crate facade.
pub use palisade_driver::metrics;
pub use palisade_driver::{
    AdmissionError, AdmissionLimits, AdmissionStats, Dial, Error as LinkError, FailureHook,
    HandshakeFailure, Metrics, MetricsSnapshot,
};
pub use report::{Finding, Report, Severity};
pub use settings::{Loaded, Settings, SettingsError, SettingsErrors};
pub use tls_load::load_tls;
pub use watch::{
    ExpiryLevel, ExpiryWarning, FileWatch, Reload, WatchEvent, WatchHandle, WatchStats,
};

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
