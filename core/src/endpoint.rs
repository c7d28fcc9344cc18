//! An endpoint: one node's validated settings and the state its connections share (the
//! replay cache, the random source). It makes connections; it never touches a socket.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError, Side};
use crate::connection::Connection;
use crate::join::ReplayCache;
use crate::random::{OsRandom, RandomError, RandomSource};

/// One node's settings plus what its links share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Endpoint {
    config: Arc<Config>,
    replay: Arc<ReplayCache>,
    random: Arc<dyn RandomSource>,
}

impl Endpoint {
    /// An endpoint using the operating system's random source.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::with_random(config, Arc::new(OsRandom::new()))
    }

    /// An endpoint drawing nonces from `random` (a seeded source in tests).
    pub fn with_random(config: Config, random: Arc<dyn RandomSource>) -> Result<Self, ConfigError> {
        config.validate()?;
        let replay = Arc::new(ReplayCache::new(config.replay_cache_capacity));
        Ok(Self {
            config: Arc::new(config),
            replay,
            random,
        })
    }

    /// The same endpoint with new settings (a rotated keyring, say), keeping the replay
    /// cache so no nonce is forgotten. Open connections keep the settings they began with.
    pub fn reconfigure(&self, config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
            replay: Arc::clone(&self.replay),
            random: Arc::clone(&self.random),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A connection for a link this node dialed. `now` is the monotonic time and `wall`
    /// the wall clock at the same moment; later calls pass only monotonic time.
    pub fn connect(&self, now: Instant, wall: SystemTime) -> Result<Connection, RandomError> {
        self.connection(Side::Initiator, now, wall)
    }

    /// A connection for a link this node accepted.
    pub fn accept(&self, now: Instant, wall: SystemTime) -> Result<Connection, RandomError> {
        self.connection(Side::Acceptor, now, wall)
    }

    fn connection(
        &self,
        side: Side,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Connection, RandomError> {
        let mut nonce = [0u8; crate::join::NONCE_LEN];
        self.random.fill(&mut nonce)?;
        Ok(Connection::new(
            side,
            Arc::clone(&self.config),
            Arc::clone(&self.replay),
            nonce,
            now,
            unix_ms(wall),
        ))
    }
}

/// Milliseconds since the unix epoch (0 for a time before it).
pub(crate) fn unix_ms(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
