//! The nonces an endpoint must recognise: those of recent plaintext HELLOs (so a recorded
//! HELLO cannot be replayed) and those of its own HELLOs still in flight (so a HELLO
//! reflected back to this node is recognised as its own).
//!
//! Only plaintext joins need the replay cache. With TLS the proofs are bound to the
//! session's exporter value, which no other session shares, so a recorded HELLO fails
//! its proof anywhere else and the cache is not consulted.
//!
//! A plaintext HELLO is accepted while its timestamp is within the clock-skew tolerance,
//! so a nonce is remembered until `timestamp + tolerance`. Three bounds keep the cache
//! from locking legitimate peers out:
//!
//! - only HELLOs whose proof verified are entered, so a peer without the secret adds
//!   nothing;
//! - each source (the peer's IP address, or its node id when the address is unknown) may
//!   hold at most `per_source` entries, so one node in a reconnect loop exhausts only its
//!   own budget;
//! - entries are kept in expiry order, so expired ones are dropped in O(log n) each and a
//!   full cache never costs a sweep.
//!
//! When the cache (or a source's budget) is full of unexpired nonces, the join is refused
//! as busy (fail closed) rather than forgetting a nonce that could then be replayed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::messages::NONCE_LEN;

/// Why a nonce was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayError {
    /// The nonce is already in the cache.
    Replayed,
    /// The cache holds `capacity` unexpired nonces.
    Full,
    /// This source holds its whole budget of unexpired nonces.
    SourceFull,
}

/// Whose budget a nonce counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplaySource {
    /// The peer's address. IPv6 addresses count per /64, the block one host is given.
    Addr(IpAddr),
    /// The node id the peer joined with, when its address is not known.
    Node(Box<str>),
}

impl ReplaySource {
    /// The budget key for a peer address (IPv6 folded to its /64).
    pub fn from_addr(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::Addr(addr),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::Addr(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Self::Addr(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

type Nonce = [u8; NONCE_LEN];

#[derive(Debug, Default)]
struct Inner {
    /// nonce → (expiry, source).
    seen: HashMap<Nonce, (u64, ReplaySource)>,
    /// The same entries ordered by expiry, oldest first.
    by_expiry: BTreeSet<(u64, Nonce)>,
    /// Entries held per source.
    per_source: HashMap<ReplaySource, usize>,
    /// Nonces of this endpoint's own HELLOs whose join is still in progress.
    own: HashSet<Nonce>,
}

impl Inner {
    /// Drops every entry that expired before `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(until, nonce)) = self.by_expiry.first() {
            if until >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            if let Some((_, source)) = self.seen.remove(&nonce) {
                if let Some(n) = self.per_source.get_mut(&source) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.per_source.remove(&source);
                    }
                }
            }
        }
    }
}

/// Nonces seen inside the tolerance window, shared by every connection of an endpoint.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    per_source: usize,
    inner: Mutex<Inner>,
}

impl ReplayCache {
    /// An empty cache that holds at most `capacity` nonces, at most `per_source` of them
    /// from any one source.
    pub fn new(capacity: usize, per_source: usize) -> Self {
        Self {
            capacity,
            per_source: per_source.min(capacity),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Nonces currently held.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether the cache holds no nonce.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most nonces one source may hold.
    pub fn per_source(&self) -> usize {
        self.per_source
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below leaves the maps consistent before anything can panic, so a
        // poisoned lock is used as is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits `nonce` until `expires_ms` (unix ms) against `source`'s budget, or says
    /// why not. `now_ms` drops expired entries.
    pub(crate) fn admit(
        &self,
        nonce: Nonce,
        expires_ms: u64,
        now_ms: u64,
        source: &ReplaySource,
    ) -> Result<(), ReplayError> {
        let mut inner = self.lock();
        inner.expire(now_ms);
        if inner.seen.contains_key(&nonce) {
            return Err(ReplayError::Replayed);
        }
        if inner.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        let held = inner.per_source.get(source).copied().unwrap_or(0);
        if held >= self.per_source {
            return Err(ReplayError::SourceFull);
        }
        inner.per_source.insert(source.clone(), held + 1);
        inner.by_expiry.insert((expires_ms, nonce));
        inner.seen.insert(nonce, (expires_ms, source.clone()));
        Ok(())
    }

    /// Records `nonce` as the nonce of one of this endpoint's own HELLOs until the
    /// returned guard is dropped (when that join completes or fails).
    pub(crate) fn register_own(self: &Arc<Self>, nonce: Nonce) -> OwnNonce {
        self.lock().own.insert(nonce);
        OwnNonce {
            cache: Arc::clone(self),
            nonce,
        }
    }

    /// Whether `nonce` is the nonce of one of this endpoint's own HELLOs in flight.
    pub(crate) fn is_own(&self, nonce: &Nonce) -> bool {
        self.lock().own.contains(nonce)
    }
}

/// This endpoint's own HELLO nonce, remembered while its join is in progress.
#[derive(Debug)]
pub(crate) struct OwnNonce {
    cache: Arc<ReplayCache>,
    nonce: Nonce,
}

impl Drop for OwnNonce {
    fn drop(&mut self) {
        self.cache.lock().own.remove(&self.nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(n: u8) -> ReplaySource {
        ReplaySource::Addr(IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn a_nonce_is_refused_until_it_expires() {
        let cache = ReplayCache::new(4, 4);
        assert_eq!(cache.admit([1; 32], 100, 0, &src(1)), Ok(()));
        assert_eq!(
            cache.admit([1; 32], 100, 50, &src(2)),
            Err(ReplayError::Replayed),
            "a nonce is a replay whichever source sends it again"
        );
        assert_eq!(
            cache.admit([1; 32], 300, 101, &src(1)),
            Ok(()),
            "expired entries are forgotten"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_fails_closed_then_recovers_as_entries_expire() {
        let cache = ReplayCache::new(2, 2);
        assert_eq!(cache.admit([1; 32], 100, 0, &src(1)), Ok(()));
        assert_eq!(cache.admit([2; 32], 50, 0, &src(1)), Ok(()));
        assert_eq!(
            cache.admit([3; 32], 100, 10, &src(2)),
            Err(ReplayError::Full)
        );
        assert_eq!(
            cache.admit([3; 32], 100, 60, &src(2)),
            Ok(()),
            "the entry expiring at 50 made room, though it was not the oldest inserted"
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.admit([1; 32], 100, 60, &src(1)),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn one_source_exhausts_only_its_own_budget() {
        let cache = ReplayCache::new(100, 3);
        for n in 0..3 {
            assert_eq!(cache.admit([n; 32], 1_000, 0, &src(1)), Ok(()));
        }
        assert_eq!(
            cache.admit([9; 32], 1_000, 0, &src(1)),
            Err(ReplayError::SourceFull)
        );
        assert_eq!(cache.admit([10; 32], 1_000, 0, &src(2)), Ok(()));
        let node = ReplaySource::Node("node-a".into());
        assert_eq!(cache.admit([11; 32], 1_000, 0, &node), Ok(()));
        // Once its entries expire the source has its whole budget again.
        assert_eq!(cache.admit([12; 32], 2_000, 1_001, &src(1)), Ok(()));
        assert_eq!(cache.len(), 1, "everything else expired at 1000");
    }

    #[test]
    fn ipv6_sources_share_a_budget_per_64_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ReplaySource::from_addr(a), ReplaySource::from_addr(b));
        assert_ne!(ReplaySource::from_addr(a), ReplaySource::from_addr(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(ReplaySource::from_addr(mapped), src(1));
    }

    #[test]
    fn expiry_drops_entries_in_order_without_a_sweep() {
        let cache = ReplayCache::new(10_000, 10_000);
        for n in 0..10_000u32 {
            let mut nonce = [0u8; 32];
            nonce[..4].copy_from_slice(&n.to_be_bytes());
            // Expiries out of insertion order.
            let until = u64::from((n * 7919) % 10_000);
            assert_eq!(cache.admit(nonce, until, 0, &src(1)), Ok(()));
        }
        let mut fresh = [0xff; 32];
        fresh[0] = 1;
        assert_eq!(cache.admit(fresh, 20_000, 5_000, &src(1)), Ok(()));
        assert_eq!(
            cache.len(),
            5_001,
            "exactly the entries expiring at 5000 and later remain"
        );
    }

    #[test]
    fn own_nonces_are_known_while_their_guard_lives() {
        let cache = Arc::new(ReplayCache::new(4, 4));
        let guard = cache.register_own([5; 32]);
        assert!(cache.is_own(&[5; 32]));
        assert!(!cache.is_own(&[6; 32]));
        drop(guard);
        assert!(!cache.is_own(&[5; 32]));
    }
}
