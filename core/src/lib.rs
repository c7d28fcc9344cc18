//! palisade-core: the sans-IO heart of palisade.
//!
//! Everything here is a pure state machine driven from byte buffers. The core never
//! opens a socket, reads a file, reads a clock or spawns a task: time is passed in as
//! [`std::time::Instant`] arguments, randomness comes from a [`RandomSource`] the caller
//! chooses, and bytes move in through [`Connection::handle_input`] and out through
//! [`Connection::poll_transmit`]. The IO adapters (tokio, async-std, smol, blocking std)
//! are loops that move bytes between a socket and these calls.
//!
//! Layers, from the socket up:
//!
//! 1. transport: plaintext, or a TLS session ([`tls`], rustls with the ring provider),
//! 2. the [`preface`] and the [`frame`] codec,
//! 3. the [`join`] handshake (HELLO / WELCOME / REJECT),
//! 4. application frames ([`Event::Frame`]).
//!
//! The wire format is specified in `docs/PROTOCOL.md`.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![warn(missing_docs)]

pub mod authorize;
mod close;
pub mod config;
mod connection;
mod endpoint;
pub mod error;
mod events;
pub mod frame;
pub mod frame_auth;
pub mod frame_run;
pub mod join;
mod mode;
pub mod preface;
pub mod random;
pub mod revocation;
mod send_queue;
mod time;
pub mod tls;
mod transport;
mod wire;

pub use authorize::NodePattern;
pub use close::{CloseCode, CloseReason};
pub use config::{Config, ConfigError, Side};
pub use connection::{CloseCause, Connection, Event, SendError};

/// The re-join's inputs (PROTOCOL.md §5.8), public for test vectors and second
/// implementations.
pub mod rejoin {
    pub use crate::connection::{rejoin_binding, transcript};
}
pub use endpoint::{ConnectError, Endpoint};
pub use error::ConnectionError;
pub use frame::{FrameDecoder, FrameError, FrameKind};
pub use frame_auth::FrameAuthError;
pub use frame_run::{FrameRun, Payloads};
pub use join::{
    JoinError, KeyId, Keyring, PeerInfo, RejectCode, Rejection, SecretError, SharedSecret,
};
pub use mode::{BelowStrict, Mode};
pub use preface::PrefaceError;
pub use random::{OsRandom, RandomError, RandomSource};
pub use revocation::{Revocations, Revoked};
pub use wire::FieldError;
