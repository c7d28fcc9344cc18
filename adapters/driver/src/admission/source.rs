//! What is remembered per source: its unjoined connections, token buckets, backoff.

use super::*;

/// A token bucket, refilled lazily from the time passed in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) at: Instant,
}

impl Bucket {
    pub(super) fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    pub(super) fn refill(&mut self, rate: f64, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.at = now;
    }

    pub(super) fn take(&mut self, rate: f64, burst: u32, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub(super) struct Source {
    pub(super) unjoined: usize,
    pub(super) connections: Bucket,
    pub(super) failures: Bucket,
    pub(super) backoff_until: Option<Instant>,
    pub(super) last_seen: Instant,
}

impl Source {
    pub(super) fn new(limits: &AdmissionLimits, now: Instant) -> Self {
        Self {
            unjoined: 0,
            connections: Bucket::full(limits.new_connection_burst_per_source, now),
            failures: Bucket::full(limits.failed_join_burst_per_source, now),
            backoff_until: None,
            last_seen: now,
        }
    }

    /// Holds nothing a fresh entry would not: forgetting it changes nothing.
    pub(super) fn is_idle(&self, limits: &AdmissionLimits, now: Instant) -> bool {
        let mut c = self.connections;
        c.refill(
            limits.new_connection_rate_per_source,
            limits.new_connection_burst_per_source,
            now,
        );
        let mut f = self.failures;
        f.refill(
            limits.failed_join_rate_per_source,
            limits.failed_join_burst_per_source,
            now,
        );
        self.unjoined == 0
            && self.backoff_until.is_none_or(|t| t <= now)
            && c.tokens >= f64::from(limits.new_connection_burst_per_source)
            && f.tokens >= f64::from(limits.failed_join_burst_per_source)
    }
}
