//! palisade-driver: what every palisade adapter does, written once.
//!
//! The core (`palisade-core`) is a pure state machine. Running it on a socket takes the
//! same bookkeeping in every runtime: input the core could not take yet, output to
//! write in order, the core's timer, the graceful shutdown of the socket, waking whoever
//! waits in `send` / `recv` / `accept`, and the error type. That lives here:
//!
//! - [`link::Link`]: one link's shared state (the core connection behind a mutex), with
//!   waiting for async tasks (wakers) and for threads (a condition variable);
//! - [`driver::Driver`]: the socket loop for async runtimes over `futures-io`, generic
//!   over a [`driver::Runtime`] (sleep + spawn);
//! - [`conn`]: the async application handle, its halves, `Stream` and `Sink`;
//! - [`stream`]: a joined link as a byte stream (`futures-io` `AsyncRead` / `AsyncWrite`);
//! - [`admission`]: which accepted sockets get a handshake at all (per-source caps and
//!   token buckets, backoff, oldest-first eviction), before any TLS or HMAC work;
//! - [`listener`]: concurrent handshakes for accepted sockets, bounded, with failures
//!   reported and the accept loop undisturbed;
//! - [`blocking`]: the same for blocking std sockets (reader thread + writer lock);
//! - [`error::Error`]: one error type for every adapter;
//! - [`metrics`] and [`observe`]: a node's counters ([`Metrics`], read as a
//!   [`MetricsSnapshot`]; the `metrics` feature also feeds the `metrics` facade) and
//!   each link's `tracing` span (`palisade_link`);
//! - [`serve`]: the async accept loop and [`serve::Listener`], over a runtime's [`Net`];
//! - [`dialer`]: [`Dialer`] and [`BlockingDialer`], settings replaceable while they run;
//! - [`async_adapter!`]: an async adapter's public `Listener`, `Dialer` and dial functions.
//!
//! An adapter crate then holds only its runtime's socket, timer and spawn calls.

mod adapter;
pub mod admission;
pub mod backlog;
pub mod blocking;
pub mod conn;
pub mod dial;
pub mod dialer;
pub mod driver;
pub mod error;
pub mod follow;
pub mod link;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod observe;
mod outgoing;
pub mod serve;
pub mod stream;

pub use admission::{AdmissionError, AdmissionLimits, AdmissionStats, Permit};
pub use blocking::{
    establish_blocking, establish_blocking_admitted, establish_blocking_dialed, BlockingConnection,
    BlockingRecvHalf, BlockingSendHalf,
};
pub use conn::{establish, establish_admitted, establish_dialed, Connection, RecvHalf, SendHalf};
pub use dial::Dial;
pub use dialer::{Blocking, BlockingDialer, Dialer};
pub use driver::{Driver, Runtime};
pub use error::{Error, HandshakeFailure};
pub use follow::LinkRegistry;
pub use link::REFUSAL_FLUSH;
pub use listener::{Acceptor, FailureHook, Gate};
pub use live::LiveEndpoint;
pub use metrics::{Direction, Metrics, MetricsSnapshot};
pub use serve::{FuturesSocket, Net, ShutdownWrite};
pub use stream::ByteStream;

// What `async_adapter!` names from the core, reachable as `$crate::__core`.
#[doc(hidden)]
pub use palisade_core as __core;

/// The host part of `host:port` (brackets removed from an IPv6 literal): the name TLS
/// checks the acceptor's certificate against.
pub fn server_name_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::server_name_of;

    #[test]
    fn server_names_come_from_the_dialed_address() {
        assert_eq!(
            server_name_of("node-b.cluster.local:7000"),
            "node-b.cluster.local"
        );
        assert_eq!(server_name_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(server_name_of("[::1]:7000"), "::1");
        assert_eq!(server_name_of("node-b"), "node-b");
    }
}
