//! How long joins take at this listener: the eviction age follows the slowest joins seen
//! (3 × their 99th percentile), so a listener whose peers are far away protects their
//! joins for longer than `min_evict_age` without being told.

use super::*;

/// Joins remembered before the older half is forgotten (counts halved).
const WINDOW: u32 = 1024;
/// Joins seen before they may raise the eviction age.
const MIN_SAMPLES: u32 = 20;
/// The derived eviction age never exceeds this (a larger `min_evict_age` still wins).
const MAX_DERIVED_AGE: Duration = Duration::from_secs(10);
/// Bucket `i` counts joins that took from 2^(i-1) to 2^i ms (bucket 0: under 1 ms); the
/// last one everything longer.
const BUCKETS: usize = 16;

/// A log-scale histogram of join times.
#[derive(Debug, Default)]
pub(super) struct JoinTimes {
    counts: [u32; BUCKETS],
    total: u32,
}

impl JoinTimes {
    /// A join that took `took` (from admission to joined).
    pub(super) fn record(&mut self, took: Duration) {
        let ms = took.as_millis();
        let i = ((u128::BITS - ms.leading_zeros()) as usize).min(BUCKETS - 1);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
            self.total += 1;
        }
        if self.total >= WINDOW {
            for c in &mut self.counts {
                *c /= 2;
            }
            self.total = self.counts.iter().sum();
        }
    }

    /// An upper bound of the 99th percentile join time, once enough joins were seen.
    pub(super) fn p99(&self) -> Option<Duration> {
        if self.total < MIN_SAMPLES {
            return None;
        }
        let need = (u64::from(self.total) * 99).div_ceil(100);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= need {
                return Some(Duration::from_millis(1u64 << i));
            }
        }
        None
    }
}

impl Admission {
    /// How old an unjoined connection must be to be evicted: `min_evict_age`, or 3 × the
    /// 99th percentile join time seen if that is longer (at most `MAX_DERIVED_AGE`).
    pub(super) fn min_age(&self, st: &State) -> Duration {
        let floor = self.limits.min_evict_age;
        st.joins
            .p99()
            .map_or(floor, |p| floor.max((p * 3).min(MAX_DERIVED_AGE)))
    }

    /// The connection in `slot` joined at `now`.
    pub(super) fn record_join(&self, slot: &Slot, now: Instant) {
        self.lock()
            .joins
            .record(now.saturating_duration_since(slot.at));
    }
}
