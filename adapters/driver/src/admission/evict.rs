//! Which unjoined connection makes room for a newcomer (see the module docs of
//! [`super`]), and what evicting it counts.

use super::*;

impl Admission {
    /// The oldest connection from `source` that sent nothing.
    pub(super) fn oldest_silent_of(st: &State, source: IpAddr) -> Option<u64> {
        st.unjoined
            .values()
            .find(|s| s.source == source && !s.heard.load(Ordering::Acquire))
            .map(|s| s.id)
    }

    /// `source`'s oldest silent connection if `source` holds the most unjoined slots
    /// (at least as many as any other source).
    pub(super) fn own_silent(&self, st: &State, source: IpAddr) -> Option<u64> {
        let held = |s: &IpAddr| st.sources.get(s).map_or(0, |s| s.unjoined);
        let own = held(&source);
        if own == 0 || st.unjoined.values().any(|s| held(&s.source) > own) {
            return None;
        }
        Self::oldest_silent_of(st, source)
    }

    /// The unjoined connection to evict for a newcomer when `max_unjoined` is reached,
    /// or `None` if none may be (see the module docs): only those at least
    /// `min_evict_age` old (or 3 × the p99 join time seen); silent before
    /// mid-handshake, and no mid-handshake one while any silent one is held; from the
    /// network ([`group_of`]) holding the most unjoined slots, within it the source
    /// holding the most; the oldest first.
    pub(super) fn victim(&self, st: &State, now: Instant) -> Option<u64> {
        let min_age = self.min_age(st);
        let held = |source: &IpAddr| st.sources.get(source).map_or(0, |s| s.unjoined);
        // Slots per network: bounded by `max_unjoined`, and only counted when full.
        let mut per_group: HashMap<IpAddr, usize> = HashMap::new();
        for slot in st.unjoined.values() {
            *per_group.entry(group_of(slot.source)).or_default() += 1;
        }
        let mut any_silent = false;
        // ((slots held by its network, by its source), id) of the best candidate of
        // each kind.
        let mut silent: Option<((usize, usize), u64)> = None;
        let mut talking: Option<((usize, usize), u64)> = None;
        for slot in st.unjoined.values() {
            let heard = slot.heard.load(Ordering::Acquire);
            any_silent |= !heard;
            if now.saturating_duration_since(slot.at) < min_age {
                continue;
            }
            let best = if heard { &mut talking } else { &mut silent };
            let group = per_group.get(&group_of(slot.source)).copied().unwrap_or(0);
            let n = (group, held(&slot.source));
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
    pub(super) fn evict_locked(
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
}
