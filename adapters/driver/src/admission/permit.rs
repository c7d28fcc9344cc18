//! One admitted connection's place among the unjoined.

use super::*;

pub(super) struct PermitInner {
    pub(super) admission: Arc<Admission>,
    pub(super) slot: Arc<Slot>,
}

impl Drop for PermitInner {
    fn drop(&mut self) {
        self.admission.release(&self.slot);
    }
}

/// One admitted connection's place among the unjoined. Clones share it; the place is
/// given back when [`Permit::joined`] is called or when the last clone is dropped (the
/// driver holds one until the socket is closed, so sockets never outnumber the slots by
/// more than those being torn down after an eviction).
#[derive(Clone)]
pub struct Permit(pub(super) Arc<PermitInner>, pub(super) LinkObserver);

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("id", &self.0.slot.id)
            .field("source", &self.0.slot.source)
            .field("evicted", &self.was_evicted())
            .finish()
    }
}

impl Permit {
    /// The connection joined: it no longer counts as unjoined.
    pub fn joined(&self) {
        if !self.0.slot.released.load(Ordering::Acquire) {
            bump(&self.0.admission.counters.joined);
            self.0.admission.record_join(&self.0.slot, Instant::now());
        }
        self.0.admission.release(&self.0.slot);
    }

    /// The connection's join failed. Counts against its source unless we evicted it
    /// (a mid-handshake eviction was counted then) or it sent nothing (silence is not
    /// failure); returns the backoff this started, if any.
    pub fn failed(&self, now: Instant) -> Option<Duration> {
        if self.was_evicted() {
            return None;
        }
        if !self.heard() {
            bump(&self.0.admission.counters.silent);
            return None;
        }
        self.0.admission.failed(self.0.slot.source, now)
    }

    /// The peer sent its first bytes: the driver calls this on every read until it
    /// has, before handing them to the handshake. Takes a token of the source's
    /// new-connection rate; `false` if none is left, and then the connection must be
    /// closed unread (reported as [`AdmissionError::ConnectionRate`], not counted as a
    /// failed join). From then on the connection is mid-handshake, not silent.
    #[must_use]
    pub fn mark_heard(&self, now: Instant) -> bool {
        let slot = &self.0.slot;
        if slot.heard.load(Ordering::Acquire) {
            return true;
        }
        if slot.over_rate.load(Ordering::Acquire) {
            return false;
        }
        let admission = &self.0.admission;
        let limits = &admission.limits;
        let allowed = {
            let mut st = admission.lock();
            let src = st
                .sources
                .entry(slot.source)
                .or_insert_with(|| Source::new(limits, now));
            src.last_seen = now;
            src.connections.take(
                limits.new_connection_rate_per_source,
                limits.new_connection_burst_per_source,
                now,
            )
        };
        if allowed {
            slot.heard.store(true, Ordering::Release);
            return true;
        }
        bump(&admission.counters.refused_rate);
        slot.over_rate.store(true, Ordering::Release);
        // Closed by us, not the peer's failure: like an eviction.
        slot.evict_state().0 = true;
        false
    }

    /// Whether the peer sent any byte.
    pub fn heard(&self) -> bool {
        self.0.slot.heard.load(Ordering::Acquire)
    }

    /// Whether the connection was evicted to make room.
    pub fn was_evicted(&self) -> bool {
        self.0.slot.evict_state().0
    }

    /// The error an evicted connection (or one closed over its source's rate) is
    /// reported with.
    pub fn eviction_error(&self) -> AdmissionError {
        let limits = &self.0.admission.limits;
        if self.0.slot.over_rate.load(Ordering::Acquire) {
            return AdmissionError::ConnectionRate {
                source: self.0.slot.source,
                rate: limits.new_connection_rate_per_source,
                burst: limits.new_connection_burst_per_source,
            };
        }
        AdmissionError::Evicted {
            limit: limits.max_unjoined,
        }
    }

    /// How to close the connection if it is evicted (at once, if it already was).
    pub fn on_evict(&self, close: impl FnOnce() + Send + 'static) {
        let mut e = self.0.slot.evict_state();
        if e.0 {
            drop(e);
            close();
        } else {
            e.1 = Some(Box::new(close));
        }
    }

    /// The source this connection counts against.
    pub fn source(&self) -> IpAddr {
        self.0.slot.source
    }

    /// The link's span and counters travel with its permit, so whichever adapter runs
    /// the handshake counts it for the listener that admitted it.
    pub(crate) fn observed_by(mut self, observer: LinkObserver) -> Self {
        self.1 = observer;
        self
    }

    /// The span and counters of the admitted link.
    pub fn observer(&self) -> &LinkObserver {
        &self.1
    }
}
