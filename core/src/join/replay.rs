//! The nonces an endpoint must recognise: those of recent plaintext HELLOs (so a recorded
//! HELLO cannot be replayed) and those of its own HELLOs still in flight (so a HELLO
//! reflected back to this node is recognised as its own).
//!
//! Only plaintext joins need the replay cache. With TLS the proofs are bound to the
//! session's exporter value, which no other session shares, so a recorded HELLO fails
//! its proof anywhere else and the cache is not consulted.
//!
//! A plaintext HELLO is accepted while its timestamp is within the clock-skew tolerance,
//! so a nonce is remembered until `timestamp + tolerance`. Four bounds keep the cache
//! from locking legitimate peers out (docs/PROTOCOL.md §5.5 step 9):
//!
//! - only HELLOs whose proof verified are entered, so a peer without the secret adds
//!   nothing, and the HELLO's node id is authenticated by the secret;
//! - each node id may hold at most `per_source` entries, whichever addresses it joins
//!   from, so one node in a reconnect loop (or flooding from many addresses) exhausts
//!   only its own share;
//! - each source address (IPv6: each /64) may hold at most `per_source` entries too,
//!   so a holder of the secret cannot multiply its share by inventing node ids;
//! - near capacity the room left is kept for the small holders: an entry is admitted
//!   only while its address holds fewer entries than the room left (`capacity - len`).
//!   A holder of the secret inventing node ids from `k` addresses therefore stops with
//!   about `capacity / (k + 1)` entries free, and those go to addresses holding fewer
//!   entries than the flooders, i.e. to everyone else. (Node ids need no such rule:
//!   one node's entries are bounded by its share; invented ones are bounded by the
//!   addresses they come from.)
//!
//! Entries are kept in expiry order, so expired ones are dropped in O(log n) each and a
//! full cache never costs a sweep. When a bound is reached the join is refused as busy
//! (fail closed) rather than forgetting a nonce that could then be replayed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::messages::NONCE_LEN;

/// Why a nonce was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplayError {
    /// The nonce is already in the cache.
    Replayed,
    /// The cache holds `capacity` unexpired nonces.
    Full,
    /// The HELLO's node id holds its whole share of unexpired nonces.
    NodeFull,
    /// The peer's address holds its whole share of unexpired nonces.
    SourceFull,
    /// The cache is nearly full: `free` entries are left, and the peer's address
    /// already holds `held >= free`, so the room is kept for addresses holding fewer.
    Crowded { free: usize, held: usize },
}

/// Whose budget a nonce counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplaySource {
    /// The peer's address. IPv6 addresses count per /64, the block one host is given.
    Addr(IpAddr),
    /// The node id the peer joined with (authenticated: only verified HELLOs enter).
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

#[derive(Debug)]
struct Entry {
    node: ReplaySource,
    addr: Option<ReplaySource>,
}

#[derive(Debug, Default)]
struct Inner {
    /// nonce → (expiry, node id key, address key when known).
    seen: HashMap<Nonce, Entry>,
    /// The same entries ordered by expiry, oldest first.
    by_expiry: BTreeSet<(u64, Nonce)>,
    /// Entries held per node id and per address.
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
            if let Some(entry) = self.seen.remove(&nonce) {
                self.release(&entry.node);
                if let Some(addr) = &entry.addr {
                    self.release(addr);
                }
            }
        }
    }

    fn release(&mut self, key: &ReplaySource) {
        if let Some(n) = self.per_source.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(key);
            }
        }
    }

    fn held(&self, key: &ReplaySource) -> usize {
        self.per_source.get(key).copied().unwrap_or(0)
    }

    fn take(&mut self, key: &ReplaySource) {
        *self.per_source.entry(key.clone()).or_insert(0) += 1;
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

    /// Admits `nonce` until `expires_ms` (unix ms) against the shares of node id `node`
    /// and of address `addr` (when known), or says why not. `now_ms` drops expired
    /// entries. The checks, in order: replayed, cache full, node id's share, address's
    /// share, then near capacity the room left against what the address holds (module
    /// docs).
    pub(crate) fn admit(
        &self,
        nonce: Nonce,
        expires_ms: u64,
        now_ms: u64,
        node: &str,
        addr: Option<IpAddr>,
    ) -> Result<(), ReplayError> {
        let mut inner = self.lock();
        inner.expire(now_ms);
        if inner.seen.contains_key(&nonce) {
            return Err(ReplayError::Replayed);
        }
        if inner.seen.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        let node = ReplaySource::Node(node.into());
        let addr = addr.map(ReplaySource::from_addr);
        let node_held = inner.held(&node);
        if node_held >= self.per_source {
            return Err(ReplayError::NodeFull);
        }
        let addr_held = addr.as_ref().map_or(0, |a| inner.held(a));
        if addr_held >= self.per_source {
            return Err(ReplayError::SourceFull);
        }
        let free = self.capacity - inner.seen.len();
        if addr.is_some() && addr_held >= free {
            return Err(ReplayError::Crowded {
                free,
                held: addr_held,
            });
        }
        inner.take(&node);
        if let Some(a) = &addr {
            inner.take(a);
        }
        inner.by_expiry.insert((expires_ms, nonce));
        inner.seen.insert(nonce, Entry { node, addr });
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

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn a_nonce_is_refused_until_it_expires() {
        let cache = ReplayCache::new(4, 4);
        assert_eq!(cache.admit([1; 32], 100, 0, "n1", ip(1)), Ok(()));
        assert_eq!(
            cache.admit([1; 32], 100, 50, "n2", ip(2)),
            Err(ReplayError::Replayed),
            "a nonce is a replay whichever source sends it again"
        );
        assert_eq!(
            cache.admit([1; 32], 300, 101, "n1", ip(1)),
            Ok(()),
            "expired entries are forgotten"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_fails_closed_then_recovers_as_entries_expire() {
        let cache = ReplayCache::new(2, 2);
        assert_eq!(cache.admit([1; 32], 100, 0, "n1", ip(1)), Ok(()));
        assert_eq!(cache.admit([2; 32], 50, 0, "n3", ip(3)), Ok(()));
        assert_eq!(
            cache.admit([3; 32], 100, 10, "n2", ip(2)),
            Err(ReplayError::Full)
        );
        assert_eq!(
            cache.admit([3; 32], 100, 60, "n2", ip(2)),
            Ok(()),
            "the entry expiring at 50 made room, though it was not the oldest inserted"
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.admit([1; 32], 100, 60, "n1", ip(1)),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn one_source_exhausts_only_its_own_budget() {
        let cache = ReplayCache::new(100, 3);
        for n in 0..3 {
            let node = format!("n1-{n}");
            assert_eq!(cache.admit([n; 32], 1_000, 0, &node, ip(1)), Ok(()));
        }
        assert_eq!(
            cache.admit([9; 32], 1_000, 0, "n1-new", ip(1)),
            Err(ReplayError::SourceFull),
            "a fresh node id does not give the address a fresh share"
        );
        assert_eq!(cache.admit([10; 32], 1_000, 0, "n2", ip(2)), Ok(()));
        assert_eq!(cache.admit([11; 32], 1_000, 0, "node-a", None), Ok(()));
        // Once its entries expire the source has its whole budget again.
        assert_eq!(cache.admit([12; 32], 2_000, 1_001, "n1", ip(1)), Ok(()));
        assert_eq!(cache.len(), 1, "everything else expired at 1000");
    }

    #[test]
    fn one_node_id_exhausts_only_its_own_share_from_any_number_of_addresses() {
        let cache = ReplayCache::new(16, 4);
        for n in 0..4u8 {
            assert_eq!(cache.admit([n; 32], 1_000, 0, "flood", ip(n + 1)), Ok(()));
        }
        for n in 4..16u8 {
            assert_eq!(
                cache.admit([n; 32], 1_000, 0, "flood", ip(n + 1)),
                Err(ReplayError::NodeFull),
                "a fresh address does not give the node id a fresh share"
            );
        }
        assert_eq!(cache.lock().held(&ReplaySource::Node("flood".into())), 4);
        for n in 0..4u8 {
            assert_eq!(
                cache.admit([100 + n; 32], 1_000, 0, "other", ip(200)),
                Ok(())
            );
        }
        assert_eq!(cache.len(), 8);
    }

    #[test]
    fn invented_node_ids_are_bounded_by_the_address_and_leave_room_for_small_holders() {
        let (capacity, share) = (64, 4);
        let cache = ReplayCache::new(capacity, share);
        // 16 addresses, each joining under fresh node ids as fast as it can.
        let mut n = 0u32;
        let mut nonce = || {
            n += 1;
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&n.to_be_bytes());
            b
        };
        for _round in 0..8 {
            for a in 1..=16u8 {
                let id = format!("invented-{a}-{}", cache.len());
                let _ = cache.admit(nonce(), 1_000, 0, &id, ip(a));
            }
        }
        let flooded = cache.len();
        assert!(flooded < capacity, "{flooded}");
        // Every flooding address is now refused, naming itself as the holder.
        for a in 1..=16u8 {
            match cache.admit(nonce(), 1_000, 0, "invented-again", ip(a)) {
                Err(ReplayError::Crowded { held, free }) => assert!(held >= free),
                Err(ReplayError::SourceFull) => {}
                other => panic!("address {a}: {other:?}"),
            }
        }
        // The room left goes to peers holding less than the flooders.
        for k in 0..(capacity - flooded) {
            let addr = ip(100 + u8::try_from(k).unwrap());
            assert_eq!(
                cache.admit(nonce(), 1_000, 0, &format!("legit-{k}"), addr),
                Ok(())
            );
        }
        assert_eq!(
            cache.admit(nonce(), 1_000, 0, "late", ip(250)),
            Err(ReplayError::Full)
        );
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
            // Each from its own node id, without an address: no share is reached.
            let node = n.to_string();
            assert_eq!(cache.admit(nonce, until, 0, &node, None), Ok(()));
        }
        let mut fresh = [0xff; 32];
        fresh[0] = 1;
        assert_eq!(cache.admit(fresh, 20_000, 5_000, "fresh", None), Ok(()));
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
