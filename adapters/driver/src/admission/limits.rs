//! The limits of admission control and why it closes a connection.

use super::*;

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
    /// Connections per second one source may start a handshake on (send its first
    /// bytes), sustained (default 20). At 0.5 ms of TLS work each this bounds one
    /// address to about 1 % of a core. Silent connections take none: they cost no work
    /// and are bounded by the caps, and an address shared with legitimate peers must
    /// not be drained by sockets that never speak.
    pub new_connection_rate_per_source: f64,
    /// Handshakes one source may start at once, above the rate (default 40).
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
    /// for a newer one (default 1 s): covers a slow-WAN join. The age applied is the
    /// larger of this and 3 × the 99th percentile of the join times this listener has
    /// seen (once 20 joins were seen; the derived age at most 10 s), so peers that are
    /// far away keep their joins protected. When every unjoined connection is younger,
    /// a newcomer over `max_unjoined` is refused instead.
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
    /// The source starts handshakes (connections that send their first bytes) faster
    /// than its token bucket allows.
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
                "{source} starts handshakes faster than {rate}/s (burst {burst}); connection \
                 closed before its first bytes were read (raise new_connection_rate_per_source or \
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
