//! Which unjoined connection makes room for a newcomer (see the module docs of
//! [`super`]), and what evicting it counts.

use super::*;

/// Unjoined slots per network, and (through the state) per source.
pub(super) struct Holders<'a> {
    st: &'a State,
    networks: HashMap<IpAddr, usize>,
}

impl Holders<'_> {
    /// A source's rank: (slots its network holds, slots it holds).
    fn rank(&self, source: IpAddr) -> (usize, usize) {
        let network = self.networks.get(&group_of(source)).copied().unwrap_or(0);
        let own = self.st.sources.get(&source).map_or(0, |s| s.unjoined);
        (network, own)
    }
}

impl Admission {
    /// The oldest connection from `source` that sent nothing.
    pub(super) fn oldest_silent_of(st: &State, source: IpAddr) -> Option<u64> {
        st.unjoined
            .values()
            .find(|s| s.source == source && !s.heard.load(Ordering::Acquire))
            .map(|s| s.id)
    }

    /// The unjoined connection to evict for a newcomer from `source` when
    /// `max_unjoined` is reached, or `None` if none may be (see the module docs).
    ///
    /// Holders are ranked by (slots their network holds, slots their source holds):
    /// [`Self::holders`].
    /// 1. A holder ranked above the newcomer gives up its oldest silent connection, at
    ///    any age: silence costs the listener nothing and has proven nothing, so a crowd
    ///    churning silent sockets cannot keep out a newcomer from elsewhere.
    /// 2. A newcomer ranked at the top competes only with itself: its own source's
    ///    oldest silent connection, at any age.
    /// 3. Otherwise [`Self::victim`]: only connections past the minimum age.
    pub(super) fn victim_for(&self, st: &State, source: IpAddr, now: Instant) -> Option<u64> {
        let holders = Self::holders(st);
        let newcomer = holders.rank(source);
        let mut top = (0, 0);
        // (rank, id) of the top-ranked holder's oldest silent connection.
        let mut silent: Option<((usize, usize), u64)> = None;
        for slot in st.unjoined.values() {
            let rank = holders.rank(slot.source);
            top = top.max(rank);
            if slot.heard.load(Ordering::Acquire) {
                continue;
            }
            // Oldest first: a later slot wins only by ranking strictly higher.
            if silent.is_none_or(|(r, _)| rank > r) {
                silent = Some((rank, slot.id));
            }
        }
        if let Some((rank, id)) = silent {
            if newcomer < rank {
                return Some(id);
            }
        }
        if newcomer >= top {
            if let Some(id) = Self::oldest_silent_of(st, source) {
                return Some(id);
            }
        }
        self.victim(st, &holders, now)
    }

    /// How many unjoined slots each network and each source holds.
    fn holders(st: &State) -> Holders<'_> {
        // Bounded by `max_unjoined`, and only counted when the table is full.
        let mut networks: HashMap<IpAddr, usize> = HashMap::new();
        for slot in st.unjoined.values() {
            *networks.entry(group_of(slot.source)).or_default() += 1;
        }
        Holders { st, networks }
    }

    /// The unjoined connection to evict when no holder ranks above the newcomer: only
    /// those at least `min_evict_age` old (or 3 × the p99 join time seen); silent
    /// before mid-handshake, and no mid-handshake one while any silent one is held;
    /// from the top-ranked holder; the oldest first.
    fn victim(&self, st: &State, holders: &Holders<'_>, now: Instant) -> Option<u64> {
        let min_age = self.min_age(st);
        let mut any_silent = false;
        // (rank of its holder, id) of the best candidate of each kind.
        let mut silent: Option<((usize, usize), u64)> = None;
        let mut talking: Option<((usize, usize), u64)> = None;
        for slot in st.unjoined.values() {
            let heard = slot.heard.load(Ordering::Acquire);
            any_silent |= !heard;
            if now.saturating_duration_since(slot.at) < min_age {
                continue;
            }
            let best = if heard { &mut talking } else { &mut silent };
            let rank = holders.rank(slot.source);
            // Oldest first: a later slot wins only by ranking strictly higher.
            if best.is_none_or(|(r, _)| rank > r) {
                *best = Some((rank, slot.id));
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
