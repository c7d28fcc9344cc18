//! Admission control: which accepted sockets get a handshake at all, decided before any
//! TLS or HMAC work, the same for every listener (async and blocking).
//!
//! A listener faces the network before it knows who is calling, and a TLS handshake
//! costs it 0.3–0.55 ms of CPU. One address must never lock out another, so per source
//! (an IPv4 address; an IPv6 /64, the block one host or subscriber usually gets, so an
//! attacker cannot take a fresh address per connection):
//!
//! - a cap on its connections that have not joined ([`AdmissionLimits::max_unjoined_per_source`]);
//! - a token bucket on its new connections: past the rate, a connection is closed at
//!   once, before its first byte is read;
//! - a token bucket on its failed joins (failures the peer caused: a bad preface, a TLS
//!   failure, a REJECT we sent, a join timeout, an eviction while mid-handshake): once
//!   empty, the source is backed off for [`AdmissionLimits::source_backoff`], and its
//!   new connections are closed at once.
//!
//! Silence is not failure: a connection that sent no byte (closed at the first-bytes
//! deadline, or by its peer) holds one of its source's unjoined slots while it lives and
//! never touches the failure bucket, so silent sockets from an address shared with
//! legitimate peers (a NAT, Kubernetes SNAT) cannot back that address off. When a source
//! at its cap opens another connection, the source's OLDEST SILENT connection is evicted
//! to make room for it; only a source with no silent connection to give up is refused.
//!
//! And for the whole listener, a cap on connections that have not joined
//! ([`AdmissionLimits::max_unjoined`]). When it is reached, one connection is evicted
//! (closed at once) to make room, chosen so that neither a crowd of addresses nor one
//! address can starve a slow legitimate join:
//!
//! - never one younger than [`AdmissionLimits::min_evict_age`] (a slow-WAN join must be
//!   able to finish); if every connection is that young, the newcomer is refused instead;
//! - a silent connection before one mid-handshake (it cost us nothing and owes us a
//!   first byte); while any silent connection is held, even a young one, no
//!   mid-handshake connection is evicted (the silent one becomes evictable within
//!   `min_evict_age`; the newcomer is refused meanwhile);
//! - from the source holding the most unjoined slots, its oldest first;
//! - a mid-handshake connection evicted counts as a failed join of its source, so a
//!   ClientHello-then-silence flood runs into its failure budget and backoff like any
//!   other failed join.
//!
//! The per-source table is bounded too ([`AdmissionLimits::max_tracked_sources`]): when
//! full, sources that hold nothing (no unjoined connection, no backoff, full buckets) are
//! dropped, then the least recently seen idle one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::observe::LinkObserver;

/// The limits of [`Admission`]. The field names are the settings' config keys.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionLimits {
    /// Connections that have not joined yet, all sources together (default 1024). When
    /// reached, one is evicted to make room for the newest: a silent one (no byte sent)
    /// before one mid-handshake, from the source holding the most, its oldest first, and
    /// never one younger than `min_evict_age` (then the newest is refused instead).
    pub max_unjoined: usize,
    /// Connections that have not joined yet from one source (default 32). A node
    /// dials a peer once and keeps the link, so a handful per address is normal; 32
    /// leaves room for a NAT or a Kubernetes node fronting a few dozen restarting pods,
    /// while one address can hold at most 1/32 of the default `max_unjoined`. A source
    /// at its cap that opens another connection gives up its oldest silent connection
    /// (one that sent no byte) for it; with none silent, the new one is refused.
    pub max_unjoined_per_source: usize,
    /// New connections per second one source may open, sustained (default 20). At
    /// 0.5 ms of TLS work each this bounds one address to about 1 % of a core.
    pub new_connection_rate_per_source: f64,
    /// New connections one source may open at once, above the rate (default 40).
    pub new_connection_burst_per_source: u32,
    /// Failed joins per second one source may cause, sustained (default 1). A failed
    /// join is one the peer caused after sending bytes (a bad preface, a TLS failure, a
    /// REJECT, the join deadline) or a mid-handshake connection evicted; a connection
    /// that sent nothing never counts.
    pub failed_join_rate_per_source: f64,
    /// Failed joins one source may cause at once before it is backed off (default 10).
    pub failed_join_burst_per_source: u32,
    /// How long a source whose failed joins ran out is refused (default 15 s).
    pub source_backoff: Duration,
    /// Sources remembered at once (default 16384); must exceed `max_unjoined`.
    pub max_tracked_sources: usize,
    /// How old an unjoined connection must be before it may be evicted to make room
    /// for a newer one (default 1 s): covers a slow-WAN join. When every unjoined
    /// connection is younger, a newcomer over `max_unjoined` is refused instead.
    pub min_evict_age: Duration,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_unjoined: 1024,
            max_unjoined_per_source: 32,
            new_connection_rate_per_source: 20.0,
            new_connection_burst_per_source: 40,
            failed_join_rate_per_source: 1.0,
            failed_join_burst_per_source: 10,
            source_backoff: Duration::from_secs(15),
            max_tracked_sources: 16 * 1024,
            min_evict_age: Duration::from_secs(1),
        }
    }
}

impl AdmissionLimits {
    /// Refuses limits that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), AdmissionError> {
        let bad = |setting| Err(AdmissionError::BadSetting { setting });
        let positive_rate = |r: f64| r.is_finite() && r > 0.0;
        if self.max_unjoined == 0 {
            return bad("max_unjoined");
        }
        if self.max_unjoined_per_source == 0 {
            return bad("max_unjoined_per_source");
        }
        if !positive_rate(self.new_connection_rate_per_source) {
            return bad("new_connection_rate_per_source");
        }
        if self.new_connection_burst_per_source == 0 {
            return bad("new_connection_burst_per_source");
        }
        if !positive_rate(self.failed_join_rate_per_source) {
            return bad("failed_join_rate_per_source");
        }
        if self.failed_join_burst_per_source == 0 {
            return bad("failed_join_burst_per_source");
        }
        if self.source_backoff.is_zero() {
            return bad("source_backoff");
        }
        if self.max_tracked_sources <= self.max_unjoined {
            return bad("max_tracked_sources");
        }
        Ok(())
    }
}

/// Why admission control closed a connection (or refused the settings). Each names the
/// setting that raises the limit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The source already holds its share of connections that have not joined.
    PerSourceCap {
        /// The source (an IPv4 address, or an IPv6 /64).
        source: IpAddr,
        /// `max_unjoined_per_source`.
        limit: usize,
    },
    /// The source opens connections faster than its token bucket allows.
    ConnectionRate {
        /// The source.
        source: IpAddr,
        /// `new_connection_rate_per_source`.
        rate: f64,
        /// `new_connection_burst_per_source`.
        burst: u32,
    },
    /// The source failed to join too often and is backed off.
    Backoff {
        /// The source.
        source: IpAddr,
        /// How much of the backoff is left.
        remaining: Duration,
    },
    /// The listener held `max_unjoined` connections that had not joined; this one was
    /// closed to make room (see the module docs for which one is chosen).
    Evicted {
        /// `max_unjoined`.
        limit: usize,
    },
    /// The listener holds `max_unjoined` connections that have not joined, none of
    /// them evictable (all younger than `min_evict_age`, or only handshakes in
    /// progress while silent connections are held); this new one was closed.
    Full {
        /// `max_unjoined`.
        limit: usize,
        /// `min_evict_age`.
        min_age: Duration,
    },
    /// A limit that cannot work.
    BadSetting {
        /// The setting.
        setting: &'static str,
    },
}

impl fmt::Display for AdmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PerSourceCap { source, limit } => write!(
                f,
                "{source} already has {limit} connections that have not joined; connection \
                 closed at admission (raise max_unjoined_per_source if that many peers share \
                 this address)"
            ),
            Self::ConnectionRate {
                source,
                rate,
                burst,
            } => write!(
                f,
                "{source} opens connections faster than {rate}/s (burst {burst}); connection \
                 closed at admission (raise new_connection_rate_per_source or \
                 new_connection_burst_per_source if this peer is legitimate)"
            ),
            Self::Backoff { source, remaining } => write!(
                f,
                "{source} failed to join too often and is backed off for another {} ms; \
                 connection closed at admission (fix the peer, or raise \
                 failed_join_rate_per_source / failed_join_burst_per_source, or lower \
                 source_backoff)",
                remaining.as_millis()
            ),
            Self::Evicted { limit } => write!(
                f,
                "{limit} connections were waiting to join; this one was closed to make \
                 room for a newer one (raise max_unjoined or min_evict_age if joins are \
                 legitimately that slow)"
            ),
            Self::Full { limit, min_age } => write!(
                f,
                "{limit} connections are waiting to join and none may be evicted yet \
                 (younger than {} ms, or handshakes in progress); connection closed at \
                 admission (raise max_unjoined if that many peers join at once)",
                min_age.as_millis()
            ),
            Self::BadSetting { setting } => {
                if *setting == "max_tracked_sources" {
                    f.write_str("max_tracked_sources must be larger than max_unjoined")
                } else {
                    write!(f, "{setting} must be positive")
                }
            }
        }
    }
}

impl std::error::Error for AdmissionError {}

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
    /// Connections closed at admission: source over its new-connection rate.
    pub refused_rate: u64,
    /// Connections closed at admission: source backed off.
    pub refused_backoff: u64,
    /// Times a source was backed off.
    pub backoffs: u64,
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    joined: AtomicU64,
    failed: AtomicU64,
    evicted: AtomicU64,
    evicted_mid_handshake: AtomicU64,
    refused_full: AtomicU64,
    silent: AtomicU64,
    refused_per_source_cap: AtomicU64,
    refused_rate: AtomicU64,
    refused_backoff: AtomicU64,
    backoffs: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A token bucket, refilled lazily from the time passed in.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.at = now;
    }

    fn take(&mut self, rate: f64, burst: u32, now: Instant) -> bool {
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
struct Source {
    unjoined: usize,
    connections: Bucket,
    failures: Bucket,
    backoff_until: Option<Instant>,
    last_seen: Instant,
}

impl Source {
    fn new(limits: &AdmissionLimits, now: Instant) -> Self {
        Self {
            unjoined: 0,
            connections: Bucket::full(limits.new_connection_burst_per_source, now),
            failures: Bucket::full(limits.failed_join_burst_per_source, now),
            backoff_until: None,
            last_seen: now,
        }
    }

    /// Holds nothing a fresh entry would not: forgetting it changes nothing.
    fn is_idle(&self, limits: &AdmissionLimits, now: Instant) -> bool {
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

/// The source a peer address counts against: the IPv4 address (an IPv4-mapped IPv6
/// address counts as its IPv4 address), or the IPv6 /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & (!0u128 << 64)).into()),
        },
    }
}

type EvictFn = Box<dyn FnOnce() + Send>;

/// One admitted connection's place.
struct Slot {
    id: u64,
    source: IpAddr,
    /// When it was admitted.
    at: Instant,
    /// The peer sent at least one byte (set by the driver on the first input).
    heard: AtomicBool,
    /// The slot no longer counts (joined, evicted, or its socket closed).
    released: AtomicBool,
    /// Closes the connection; set once its link exists.
    evict: Mutex<(bool, Option<EvictFn>)>,
}

impl Slot {
    fn evict_state(&self) -> MutexGuard<'_, (bool, Option<EvictFn>)> {
        self.evict.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct State {
    sources: HashMap<IpAddr, Source>,
    /// Unjoined connections, oldest first.
    unjoined: BTreeMap<u64, Arc<Slot>>,
    next_id: u64,
}

/// Admission control for one listener. Share it (`Arc`) between the accept loop and
/// the handshakes.
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
    counters: Counters,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Admission {
    /// Admission control with `limits` (validated).
    pub fn new(limits: AdmissionLimits) -> Result<Arc<Self>, AdmissionError> {
        limits.validate()?;
        Ok(Arc::new(Self {
            limits,
            state: Mutex::default(),
            counters: Counters::default(),
        }))
    }

    /// Admission control with `limits` as they are (for defaults known to validate).
    pub(crate) fn unchecked(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::default(),
            counters: Counters::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections that have not joined now.
    pub fn unjoined(&self) -> usize {
        self.lock().unjoined.len()
    }

    /// The counters.
    pub fn stats(&self) -> AdmissionStats {
        let (unjoined, tracked_sources) = {
            let s = self.lock();
            (s.unjoined.len(), s.sources.len())
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AdmissionStats {
            unjoined,
            tracked_sources,
            admitted: get(&c.admitted),
            joined: get(&c.joined),
            failed: get(&c.failed),
            evicted: get(&c.evicted),
            evicted_mid_handshake: get(&c.evicted_mid_handshake),
            refused_full: get(&c.refused_full),
            silent: get(&c.silent),
            refused_per_source_cap: get(&c.refused_per_source_cap),
            refused_rate: get(&c.refused_rate),
            refused_backoff: get(&c.refused_backoff),
            backoffs: get(&c.backoffs),
        }
    }

    /// Makes room in the source table for one more (see the module docs).
    fn make_room(&self, state: &mut State, now: Instant) {
        if state.sources.len() < self.limits.max_tracked_sources {
            return;
        }
        let limits = &self.limits;
        state.sources.retain(|_, s| !s.is_idle(limits, now));
        if state.sources.len() < limits.max_tracked_sources {
            return;
        }
        let stalest = state
            .sources
            .iter()
            .filter(|(_, s)| s.unjoined == 0)
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(k, _)| *k);
        if let Some(k) = stalest {
            state.sources.remove(&k);
        }
    }

    /// Decides on a connection from `peer` accepted at `now`: a [`Permit`] for its
    /// handshake, or why it is to be closed at once. May evict the oldest unjoined
    /// connection (closing it) to make room.
    pub fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Permit, AdmissionError> {
        let limits = &self.limits;
        let source = source_of(peer.ip());
        let mut state = self.lock();
        if !state.sources.contains_key(&source) {
            self.make_room(&mut state, now);
        }
        let st = &mut *state;
        let src = st
            .sources
            .entry(source)
            .or_insert_with(|| Source::new(limits, now));
        src.last_seen = now;
        if let Some(until) = src.backoff_until {
            if now < until {
                bump(&self.counters.refused_backoff);
                return Err(AdmissionError::Backoff {
                    source,
                    remaining: until - now,
                });
            }
            src.backoff_until = None;
        }
        if !src.connections.take(
            limits.new_connection_rate_per_source,
            limits.new_connection_burst_per_source,
            now,
        ) {
            bump(&self.counters.refused_rate);
            return Err(AdmissionError::ConnectionRate {
                source,
                rate: limits.new_connection_rate_per_source,
                burst: limits.new_connection_burst_per_source,
            });
        }
        let mut evicted = Vec::new();
        if src.unjoined >= limits.max_unjoined_per_source {
            // The source gives up its oldest silent connection, or the newcomer is refused.
            let silent = st
                .unjoined
                .values()
                .find(|s| s.source == source && !s.heard.load(Ordering::Acquire))
                .map(|s| s.id);
            match silent {
                Some(id) => evicted.extend(self.evict_locked(st, id, now)),
                None => {
                    bump(&self.counters.refused_per_source_cap);
                    return Err(AdmissionError::PerSourceCap {
                        source,
                        limit: limits.max_unjoined_per_source,
                    });
                }
            }
        }
        if st.unjoined.len() >= limits.max_unjoined {
            match self.victim(st, now) {
                Some(id) => evicted.extend(self.evict_locked(st, id, now)),
                None => {
                    bump(&self.counters.refused_full);
                    return Err(AdmissionError::Full {
                        limit: limits.max_unjoined,
                        min_age: limits.min_evict_age,
                    });
                }
            }
        }
        if let Some(src) = st.sources.get_mut(&source) {
            src.unjoined += 1;
        }
        let slot = Arc::new(Slot {
            id: st.next_id,
            source,
            at: now,
            heard: AtomicBool::new(false),
            released: AtomicBool::new(false),
            evict: Mutex::new((false, None)),
        });
        st.next_id += 1;
        st.unjoined.insert(slot.id, Arc::clone(&slot));
        drop(state);
        bump(&self.counters.admitted);
        for (victim, backoff) in evicted {
            if let Some(backoff) = backoff {
                tracing::warn!(
                    target: "palisade",
                    source = %victim.source,
                    "{} failed to join too often (handshakes evicted unfinished); its \
                     connections are refused for {} ms (failed_join_rate_per_source, \
                     failed_join_burst_per_source, source_backoff)",
                    victim.source,
                    backoff.as_millis()
                );
            }
            let close = {
                let mut e = victim.evict_state();
                e.0 = true;
                e.1.take()
            };
            if let Some(close) = close {
                close();
            }
        }
        Ok(Permit(
            Arc::new(PermitInner {
                admission: Arc::clone(self),
                slot,
            }),
            LinkObserver::default(),
        ))
    }

    /// The unjoined connection to evict for a newcomer when `max_unjoined` is reached,
    /// or `None` if none may be (see the module docs): only those at least
    /// `min_evict_age` old; silent before mid-handshake, and no mid-handshake one while
    /// any silent one is held; from the source holding the most; the oldest first.
    fn victim(&self, st: &State, now: Instant) -> Option<u64> {
        let min_age = self.limits.min_evict_age;
        let held = |source: &IpAddr| st.sources.get(source).map_or(0, |s| s.unjoined);
        let mut any_silent = false;
        // (slots held by its source, id) of the best candidate of each kind.
        let mut silent: Option<(usize, u64)> = None;
        let mut talking: Option<(usize, u64)> = None;
        for slot in st.unjoined.values() {
            let heard = slot.heard.load(Ordering::Acquire);
            any_silent |= !heard;
            if now.saturating_duration_since(slot.at) < min_age {
                continue;
            }
            let best = if heard { &mut talking } else { &mut silent };
            let n = held(&slot.source);
            // Oldest first: a later slot wins only by holding strictly more.
            if best.is_none_or(|(m, _)| n > m) {
                *best = Some((n, slot.id));
            }
        }
        match (silent, talking) {
            (Some((_, id)), _) => Some(id),
            (None, Some((_, id))) if !any_silent => Some(id),
            _ => None,
        }
    }

    /// Takes slot `id` out of the unjoined (the caller closes it once the lock is
    /// dropped); a mid-handshake one counts as a failure of its source. Returns the slot
    /// and the backoff that failure started, if any.
    fn evict_locked(
        &self,
        st: &mut State,
        id: u64,
        now: Instant,
    ) -> Option<(Arc<Slot>, Option<Duration>)> {
        let slot = st.unjoined.remove(&id)?;
        slot.released.store(true, Ordering::Release);
        if let Some(s) = st.sources.get_mut(&slot.source) {
            s.unjoined = s.unjoined.saturating_sub(1);
        }
        bump(&self.counters.evicted);
        let backoff = if slot.heard.load(Ordering::Acquire) {
            bump(&self.counters.evicted_mid_handshake);
            self.failed_locked(st, slot.source, now)
        } else {
            None
        };
        Some((slot, backoff))
    }

    /// The slot stops counting (joined, or its socket closed).
    fn release(&self, slot: &Slot) {
        if slot.released.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut state = self.lock();
        state.unjoined.remove(&slot.id);
        if let Some(s) = state.sources.get_mut(&slot.source) {
            s.unjoined = s.unjoined.saturating_sub(1);
        }
    }

    /// A join from `source` failed by the peer's doing; returns the backoff it started.
    fn failed(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        let mut state = self.lock();
        self.failed_locked(&mut state, source, now)
    }

    fn failed_locked(&self, state: &mut State, source: IpAddr, now: Instant) -> Option<Duration> {
        bump(&self.counters.failed);
        let limits = &self.limits;
        let src = state
            .sources
            .entry(source)
            .or_insert_with(|| Source::new(limits, now));
        if src.backoff_until.is_some_and(|t| now < t) {
            return None;
        }
        if src.failures.take(
            limits.failed_join_rate_per_source,
            limits.failed_join_burst_per_source,
            now,
        ) {
            return None;
        }
        // Empty: back off, and start afresh once the backoff is over.
        src.backoff_until = Some(now + limits.source_backoff);
        src.failures = Bucket::full(
            limits.failed_join_burst_per_source,
            now + limits.source_backoff,
        );
        bump(&self.counters.backoffs);
        Some(limits.source_backoff)
    }
}

struct PermitInner {
    admission: Arc<Admission>,
    slot: Arc<Slot>,
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
pub struct Permit(Arc<PermitInner>, LinkObserver);

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

    /// The peer sent its first byte: the driver calls this on the first input (cheap,
    /// an atomic store). From then on the connection is mid-handshake, not silent.
    pub fn mark_heard(&self) {
        if !self.0.slot.heard.load(Ordering::Relaxed) {
            self.0.slot.heard.store(true, Ordering::Release);
        }
    }

    /// Whether the peer sent any byte.
    pub fn heard(&self) -> bool {
        self.0.slot.heard.load(Ordering::Acquire)
    }

    /// Whether the connection was evicted to make room.
    pub fn was_evicted(&self) -> bool {
        self.0.slot.evict_state().0
    }

    /// The error an evicted connection is reported with.
    pub fn eviction_error(&self) -> AdmissionError {
        AdmissionError::Evicted {
            limit: self.0.admission.limits.max_unjoined,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_unjoined: 4,
            max_unjoined_per_source: 2,
            new_connection_rate_per_source: 1.0,
            new_connection_burst_per_source: 3,
            failed_join_rate_per_source: 1.0,
            failed_join_burst_per_source: 2,
            source_backoff: Duration::from_secs(10),
            max_tracked_sources: 5,
            min_evict_age: Duration::ZERO,
        }
    }

    #[test]
    fn per_source_cap_refuses_the_source_not_others() {
        let a = Admission::new(limits()).unwrap();
        let now = Instant::now();
        let p1 = a.admit(peer("10.0.0.1:1"), now).unwrap();
        let p2 = a.admit(peer("10.0.0.1:2"), now).unwrap();
        p1.mark_heard();
        p2.mark_heard();
        let err = a.admit(peer("10.0.0.1:3"), now).unwrap_err();
        assert!(matches!(err, AdmissionError::PerSourceCap { limit: 2, .. }));
        assert!(err.to_string().contains("max_unjoined_per_source"));
        assert!(a.admit(peer("10.0.0.2:1"), now).is_ok());
    }

    #[test]
    fn a_source_at_its_cap_gives_up_its_oldest_silent_connection() {
        let l = AdmissionLimits {
            new_connection_burst_per_source: 10,
            ..limits()
        };
        let a = Admission::new(l).unwrap();
        let now = Instant::now();
        let talking = a.admit(peer("10.0.0.1:1"), now).unwrap();
        talking.mark_heard();
        let silent = a.admit(peer("10.0.0.1:2"), now).unwrap();
        let newest = a.admit(peer("10.0.0.1:3"), now).unwrap();
        assert!(silent.was_evicted() && !talking.was_evicted());
        // Silence is not failure: neither the eviction nor its closing counts.
        assert_eq!(silent.failed(now), None);
        assert_eq!(newest.failed(now), None);
        let s = a.stats();
        assert_eq!((s.failed, s.evicted, s.silent), (0, 1, 1), "{s:?}");
        newest.mark_heard();
        assert!(matches!(
            a.admit(peer("10.0.0.1:4"), now),
            Err(AdmissionError::PerSourceCap { .. })
        ));
    }

    #[test]
    fn eviction_takes_from_the_biggest_source_silent_first_never_too_young() {
        let l = AdmissionLimits {
            max_unjoined: 5,
            max_unjoined_per_source: 3,
            min_evict_age: Duration::from_secs(1),
            new_connection_burst_per_source: 10,
            max_tracked_sources: 16,
            ..limits()
        };
        let a = Admission::new(l).unwrap();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let lone = a.admit(peer("10.0.0.1:1"), t0).unwrap();
        let big: Vec<_> = (0..3)
            .map(|i| a.admit(peer(&format!("10.0.0.2:{i}")), t0).unwrap())
            .collect();
        let young = a.admit(peer("10.0.0.3:1"), t1).unwrap();
        // All too young: the newcomer is refused, nobody evicted.
        let err = a.admit(peer("10.0.0.4:1"), t0).unwrap_err();
        assert!(
            matches!(err, AdmissionError::Full { limit: 5, .. }),
            "{err}"
        );
        // Old enough: the biggest source's oldest silent one goes, not the older lone one.
        big[0].mark_heard();
        let _n1 = a.admit(peer("10.0.0.4:1"), t1).unwrap();
        assert!(big[1].was_evicted());
        assert!(!lone.was_evicted() && !big[0].was_evicted() && !young.was_evicted());
        assert_eq!(a.stats().failed, 0, "a silent eviction is no failure");
        // While a silent one is held (even a young one), no handshake is evicted.
        lone.mark_heard();
        big[2].mark_heard();
        assert!(a.admit(peer("10.0.0.5:1"), t1).is_err());
        // None silent: the biggest source's oldest handshake goes, and counts against it.
        young.mark_heard();
        _n1.mark_heard();
        let _n2 = a.admit(peer("10.0.0.5:1"), t1).unwrap();
        assert!(big[0].was_evicted() && !lone.was_evicted());
        let s = a.stats();
        assert_eq!((s.failed, s.evicted_mid_handshake), (1, 1), "{s:?}");
        assert_eq!(big[0].failed(t1), None, "counted once, at the eviction");
        assert_eq!(a.stats().failed, 1);
    }

    #[test]
    fn the_oldest_unjoined_is_evicted_and_closed() {
        let a = Admission::new(limits()).unwrap();
        let now = Instant::now();
        let closed = Arc::new(AtomicU64::new(0));
        let mut permits = Vec::new();
        for i in 0..4 {
            let p = a.admit(peer(&format!("10.0.{i}.1:1")), now).unwrap();
            let c = Arc::clone(&closed);
            p.on_evict(move || {
                c.fetch_add(1 << (8 * i), Ordering::Relaxed);
            });
            permits.push(p);
        }
        let newest = a.admit(peer("10.0.9.1:1"), now).unwrap();
        assert_eq!(closed.load(Ordering::Relaxed), 1, "the first one, only");
        assert!(permits[0].was_evicted() && !newest.was_evicted());
        assert_eq!(a.unjoined(), 4);
        // An eviction is ours, not the peer's failure.
        assert_eq!(permits[0].failed(now), None);
        assert_eq!(a.stats().failed, 0);
        assert_eq!(a.stats().evicted, 1);
        assert!(permits[0]
            .eviction_error()
            .to_string()
            .contains("max_unjoined"));
    }

    #[test]
    fn joined_or_dropped_permits_free_their_slot() {
        let a = Admission::new(limits()).unwrap();
        let now = Instant::now();
        let p = a.admit(peer("10.0.0.1:1"), now).unwrap();
        let q = p.clone();
        drop(p);
        assert_eq!(a.unjoined(), 1, "a clone still holds it");
        drop(q);
        assert_eq!(a.unjoined(), 0);
        let p = a.admit(peer("10.0.0.1:1"), now).unwrap();
        p.joined();
        assert_eq!(a.unjoined(), 0);
        drop(p);
        assert_eq!(a.stats().joined, 1);
    }

    #[test]
    fn new_connections_are_rate_limited_per_source() {
        let a = Admission::new(limits()).unwrap();
        let t0 = Instant::now();
        for i in 0..3 {
            drop(a.admit(peer(&format!("10.0.0.1:{i}")), t0).unwrap());
        }
        let err = a.admit(peer("10.0.0.1:9"), t0).unwrap_err();
        assert!(matches!(err, AdmissionError::ConnectionRate { .. }));
        assert!(err.to_string().contains("new_connection_rate_per_source"));
        assert!(a.admit(peer("10.0.0.2:1"), t0).is_ok());
        assert!(a
            .admit(peer("10.0.0.1:9"), t0 + Duration::from_secs(1))
            .is_ok());
    }

    #[test]
    fn failures_past_the_burst_back_the_source_off() {
        let a = Admission::new(limits()).unwrap();
        let t0 = Instant::now();
        let p = a.admit(peer("10.0.0.1:1"), t0).unwrap();
        p.mark_heard();
        assert_eq!(p.failed(t0), None);
        assert_eq!(p.failed(t0), None);
        assert_eq!(p.failed(t0), Some(Duration::from_secs(10)));
        drop(p);
        let err = a
            .admit(peer("10.0.0.1:2"), t0 + Duration::from_secs(5))
            .unwrap_err();
        assert!(
            matches!(err, AdmissionError::Backoff { remaining, .. } if remaining == Duration::from_secs(5))
        );
        assert!(err.to_string().contains("source_backoff"));
        assert!(a.admit(peer("10.0.0.2:1"), t0).is_ok());
        assert!(a
            .admit(peer("10.0.0.1:3"), t0 + Duration::from_secs(10))
            .is_ok());
        assert_eq!(a.stats().backoffs, 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            source_of("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            source_of("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        let a = Admission::new(limits()).unwrap();
        let now = Instant::now();
        let p1 = a.admit(peer("[2001:db8::1]:1"), now).unwrap();
        let p2 = a.admit(peer("[2001:db8::2]:1"), now).unwrap();
        p1.mark_heard();
        p2.mark_heard();
        assert!(a.admit(peer("[2001:db8::3]:1"), now).is_err());
        assert!(a.admit(peer("[2001:db8:0:1::3]:1"), now).is_ok());
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let a = Admission::new(limits()).unwrap();
        let now = Instant::now();
        for i in 0..100 {
            let p = a.admit(peer(&format!("10.1.{}.{}:1", i / 256, i % 256)), now);
            drop(p);
        }
        assert!(a.stats().tracked_sources <= 5);
    }

    #[test]
    fn bad_limits_are_named() {
        let mut l = limits();
        l.max_unjoined_per_source = 0;
        assert_eq!(
            l.validate(),
            Err(AdmissionError::BadSetting {
                setting: "max_unjoined_per_source"
            })
        );
        let mut l = limits();
        l.max_tracked_sources = 4;
        assert!(l
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_unjoined"));
        assert_eq!(AdmissionLimits::default().validate(), Ok(()));
    }
}
