//! Turning the monotonic `now` every call passes in into wall-clock milliseconds.
//!
//! A connection is created with both a monotonic [`Instant`] and the wall clock as unix
//! milliseconds; afterwards only `Instant`s are passed in, and wall time is derived from
//! the anchor. The core never reads a clock itself.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    anchor: Instant,
    anchor_unix_ms: u64,
}

impl WallClock {
    pub(crate) fn new(anchor: Instant, anchor_unix_ms: u64) -> Self {
        Self {
            anchor,
            anchor_unix_ms,
        }
    }

    /// Unix milliseconds at `now`.
    pub(crate) fn unix_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.anchor).as_millis();
        self.anchor_unix_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wall_time_follows_the_monotonic_clock_and_never_goes_back() {
        let t0 = Instant::now();
        let clock = WallClock::new(t0 + Duration::from_secs(1), 5_000);
        assert_eq!(clock.unix_ms(t0 + Duration::from_millis(1_250)), 5_250);
        assert_eq!(
            clock.unix_ms(t0),
            5_000,
            "an instant before the anchor saturates"
        );
    }
}
