//! A deterministic random source (SplitMix64). Never for production: it is predictable.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::{RandomError, RandomSource};

/// Predictable bytes from a seed, so a test run can be repeated exactly.
#[derive(Debug)]
pub struct SeededRandom {
    counter: AtomicU64,
}

impl SeededRandom {
    /// A source whose output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            counter: AtomicU64::new(seed),
        }
    }

    fn next(&self) -> u64 {
        let mut z = self
            .counter
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), RandomError> {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}
