//! The bounded cache of HELLO nonces that makes a recorded HELLO useless.
//!
//! A HELLO is only accepted while its timestamp is within the clock-skew tolerance, so a
//! nonce needs remembering only until `timestamp + tolerance`. The cache holds at most
//! `capacity` nonces; only HELLOs whose proof verified are entered, so a peer without the
//! secret cannot fill it. When it is full of unexpired nonces, joins are refused (fail
//! closed) rather than forgetting a nonce that could then be replayed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::messages::NONCE_LEN;

/// Why a nonce was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayError {
    /// The nonce is already in the cache.
    Replayed,
    /// The cache holds `capacity` unexpired nonces.
    Full,
}

#[derive(Debug, Default)]
struct Inner {
    expiry: HashMap<[u8; NONCE_LEN], u64>,
    order: VecDeque<[u8; NONCE_LEN]>,
}

/// Nonces seen inside the tolerance window, shared by every connection of an endpoint.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl ReplayCache {
    /// An empty cache that holds at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Nonces currently held.
    pub fn len(&self) -> usize {
        self.lock().expiry.len()
    }

    /// Whether the cache holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock cannot leave the maps inconsistent in a
        // way that matters here, so a poisoned lock is used as is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits `nonce` until `expires_ms` (unix ms), or says why not. `now_ms` drops
    /// expired entries.
    pub(crate) fn admit(
        &self,
        nonce: [u8; NONCE_LEN],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), ReplayError> {
        let mut inner = self.lock();
        let Inner { expiry, order } = &mut *inner;
        if let Some(&until) = expiry.get(&nonce) {
            if until >= now_ms {
                return Err(ReplayError::Replayed);
            }
        }
        // Drop expired nonces from the front (oldest entries first).
        while let Some(front) = order.front() {
            match expiry.get(front) {
                Some(&until) if until >= now_ms => break,
                _ => {
                    if let Some(old) = order.pop_front() {
                        expiry.remove(&old);
                    }
                }
            }
        }
        if expiry.len() >= self.capacity {
            // Entries are not strictly ordered by expiry; sweep all before giving up.
            expiry.retain(|_, until| *until >= now_ms);
            order.retain(|n| expiry.contains_key(n));
            if expiry.len() >= self.capacity {
                return Err(ReplayError::Full);
            }
        }
        if expiry.insert(nonce, expires_ms).is_none() {
            order.push_back(nonce);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_refused_until_it_expires() {
        let cache = ReplayCache::new(4);
        assert_eq!(cache.admit([1; 32], 100, 0), Ok(()));
        assert_eq!(cache.admit([1; 32], 100, 50), Err(ReplayError::Replayed));
        assert_eq!(
            cache.admit([1; 32], 300, 101),
            Ok(()),
            "expired entries are forgotten"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_fails_closed_then_recovers_as_entries_expire() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.admit([1; 32], 100, 0), Ok(()));
        assert_eq!(cache.admit([2; 32], 50, 0), Ok(()));
        assert_eq!(cache.admit([3; 32], 100, 10), Err(ReplayError::Full));
        assert_eq!(
            cache.admit([3; 32], 100, 60),
            Ok(()),
            "the entry expiring at 50 made room"
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.admit([1; 32], 100, 60), Err(ReplayError::Replayed));
    }
}
