//! Admission control: which accepted sockets get a handshake at all, decided before any
//! TLS or HMAC work, the same for every listener (async and blocking).
//!
//! A listener faces the network before it knows who is calling, and a TLS handshake
//! costs it 0.3–0.55 ms of CPU. One address must never lock out another, so per source
//! (an IPv4 address; an IPv6 /64, the block one host or subscriber usually gets, so an
//! attacker cannot take a fresh address per connection):
//!
//! - a cap on its connections that have not joined ([`AdmissionLimits::max_unjoined_per_source`]);
//! - a token bucket on its new connections, taken when a connection sends its first
//!   bytes (when it starts to cost CPU): past the rate, the connection is closed before
//!   they are read. Silent connections take no token: they cost nothing but a slot,
//!   and they are bounded by the caps below, so an attacker reopening silent sockets as
//!   fast as they are closed cannot spend the rate of an address it shares with
//!   legitimate peers (a NAT);
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
//! address can starve a legitimate join, however slow. Holders of unjoined slots are
//! ranked by the slots their network holds (IPv4 /24, IPv6 /48: [`group_of`]), then by
//! the slots their source holds:
//!
//! - a holder ranked above the newcomer gives up its oldest SILENT connection, whatever
//!   its age: silence cost us nothing and proved nothing, and a legitimate dialer speaks
//!   at once (its first bytes follow the TCP handshake), so a crowd reopening silent
//!   sockets faster than they age cannot keep a newcomer from elsewhere out;
//! - a newcomer ranked at the top gives up its own source's oldest silent connection,
//!   whatever its age (as at the per-source cap: it only competes with itself);
//! - otherwise only connections at least [`AdmissionLimits::min_evict_age`] old (or 3 ×
//!   the 99th percentile of the join times seen, if longer, at most 10 s) are evicted,
//!   so a slow-WAN handshake in progress can always finish: a silent one before one
//!   mid-handshake, and no mid-handshake one while any silent one is held; from the
//!   top-ranked holder, its oldest first. If none may be, the newcomer is refused;
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

mod evict;
mod joins;
mod limits;
mod permit;
mod source;
mod stats;
#[cfg(test)]
mod tests;

use joins::JoinTimes;
pub use limits::{AdmissionError, AdmissionLimits};
pub use permit::Permit;
use permit::PermitInner;
use source::{Bucket, Source};
pub use stats::AdmissionStats;
use stats::{bump, Counters};

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

/// The network a source belongs to, for choosing whom to evict: an IPv4 /24, an IPv6
/// /48 (the block a site is usually given). Many addresses of one network are usually
/// one party (a botnet's hosts rarely spread evenly, one cloud tenant's addresses
/// share a /24, an IPv6 attacker holds a whole /48 of /64s): counting them together
/// sends evictions to the crowd before a lone peer that holds as few slots per address.
/// Only the eviction order uses it; caps and budgets stay per source.
pub fn group_of(source: IpAddr) -> IpAddr {
    match source_of(source) {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & !0xff).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (!0u128 << 80)).into()),
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
    /// Its first bytes came when its source was over its new-connection rate: closed
    /// before they were read.
    over_rate: AtomicBool,
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
    /// How long joins took.
    joins: JoinTimes,
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
        let mut evicted = Vec::new();
        if src.unjoined >= limits.max_unjoined_per_source {
            // The source gives up its oldest silent connection, or the newcomer is refused.
            match Self::oldest_silent_of(st, source) {
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
            // The fair choice (see `victim_for`).
            match self.victim_for(st, source, now) {
                Some(id) => evicted.extend(self.evict_locked(st, id, now)),
                None => {
                    bump(&self.counters.refused_full);
                    return Err(AdmissionError::Full {
                        limit: limits.max_unjoined,
                        min_age: self.min_age(st),
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
            over_rate: AtomicBool::new(false),
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
