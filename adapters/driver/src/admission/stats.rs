//! The counters an operator reads.

use super::*;

/// Counters an operator can read (`Listener::stats()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionStats {
    /// Connections that have not joined now (their sockets may still be closing).
    pub unjoined: usize,
    /// Sources remembered now.
    pub tracked_sources: usize,
    /// Connections admitted to a handshake.
    pub admitted: u64,
    /// Admitted connections that joined.
    pub joined: u64,
    /// Admitted connections whose join failed by the peer's doing.
    pub failed: u64,
    /// Connections evicted to make room: because `max_unjoined` was reached, or a
    /// source at `max_unjoined_per_source` gave up a silent one.
    pub evicted: u64,
    /// Of `evicted`, those that were mid-handshake (counted as failed joins too).
    pub evicted_mid_handshake: u64,
    /// Connections closed at admission: `max_unjoined` reached, none evictable.
    pub refused_full: u64,
    /// Admitted connections closed having sent nothing (never counted as failures).
    pub silent: u64,
    /// Connections closed at admission: source over `max_unjoined_per_source`.
    pub refused_per_source_cap: u64,
    /// Connections closed before their first bytes were read: source over its
    /// handshake rate (`new_connection_rate_per_source`).
    pub refused_rate: u64,
    /// Connections closed at admission: source backed off.
    pub refused_backoff: u64,
    /// Times a source was backed off.
    pub backoffs: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) admitted: AtomicU64,
    pub(super) joined: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) evicted: AtomicU64,
    pub(super) evicted_mid_handshake: AtomicU64,
    pub(super) refused_full: AtomicU64,
    pub(super) silent: AtomicU64,
    pub(super) refused_per_source_cap: AtomicU64,
    pub(super) refused_rate: AtomicU64,
    pub(super) refused_backoff: AtomicU64,
    pub(super) backoffs: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
