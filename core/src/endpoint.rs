//! An endpoint: one node's validated settings and the state its connections share (the
//! replay cache, the random source, the compiled TLS settings). It makes connections; it
//! never touches a socket.

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError, Side};
use crate::connection::Connection;
use crate::join::ReplayCache;
use crate::random::{OsRandom, RandomError, RandomSource};
use crate::tls::config::TlsContext;
use crate::tls::pki_types::ServerName;
use crate::tls::session::TlsSession;
use crate::tls::TlsError;
use crate::transport::Transport;

/// One node's settings plus what its links share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Endpoint {
    config: Arc<Config>,
    tls: Option<Arc<TlsContext>>,
    replay: Arc<ReplayCache>,
    random: Arc<dyn RandomSource>,
}

/// A connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// The random source failed.
    Random(RandomError),
    /// The name given to `connect` is neither a DNS name nor an IP address.
    InvalidServerName(String),
    /// The TLS session could not be set up.
    Tls(TlsError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Random(e) => e.fmt(f),
            Self::InvalidServerName(name) => write!(
                f,
                "{name:?} is neither a DNS name nor an IP address; dial the peer by one of the names in its certificate"
            ),
            Self::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnectError {}

impl Endpoint {
    /// An endpoint using the operating system's random source.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::with_random(config, Arc::new(OsRandom::new()))
    }

    /// An endpoint drawing nonces from `random` (a seeded source in tests).
    pub fn with_random(config: Config, random: Arc<dyn RandomSource>) -> Result<Self, ConfigError> {
        let tls = config.compile()?.map(Arc::new);
        let replay = Arc::new(ReplayCache::new(config.replay_cache_capacity));
        Ok(Self {
            config: Arc::new(config),
            tls,
            replay,
            random,
        })
    }

    /// The same endpoint with new settings (a rotated keyring, a renewed certificate),
    /// keeping the replay cache so no nonce is forgotten. Open connections keep the
    /// settings they began with.
    pub fn reconfigure(&self, config: Config) -> Result<Self, ConfigError> {
        let tls = config.compile()?.map(Arc::new);
        Ok(Self {
            config: Arc::new(config),
            tls,
            replay: Arc::clone(&self.replay),
            random: Arc::clone(&self.random),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A connection for a link this node dialed. `server_name` is the DNS name or IP the
    /// node dialed (TLS sends it as SNI and, with `verify_hostname`, checks it against
    /// the acceptor's certificate). `now` is the monotonic time and `wall` the wall clock
    /// at the same moment; later calls pass only monotonic time.
    pub fn connect(
        &self,
        server_name: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Connection, ConnectError> {
        let transport = match &self.tls {
            None => Transport::Plain,
            Some(tls) => {
                let name = ServerName::try_from(server_name.to_owned())
                    .map_err(|_| ConnectError::InvalidServerName(server_name.to_owned()))?;
                let session =
                    TlsSession::client(tls, name, unix_ms(wall)).map_err(ConnectError::Tls)?;
                Transport::Tls(Box::new(session))
            }
        };
        self.connection(Side::Initiator, now, wall, transport)
    }

    /// A connection for a link this node accepted.
    pub fn accept(&self, now: Instant, wall: SystemTime) -> Result<Connection, ConnectError> {
        let transport = match &self.tls {
            None => Transport::Plain,
            Some(tls) => Transport::Tls(Box::new(
                TlsSession::server(tls, unix_ms(wall)).map_err(ConnectError::Tls)?,
            )),
        };
        self.connection(Side::Acceptor, now, wall, transport)
    }

    fn connection(
        &self,
        side: Side,
        now: Instant,
        wall: SystemTime,
        transport: Transport,
    ) -> Result<Connection, ConnectError> {
        let mut nonce = [0u8; crate::join::NONCE_LEN];
        self.random.fill(&mut nonce).map_err(ConnectError::Random)?;
        Ok(Connection::new(
            side,
            Arc::clone(&self.config),
            Arc::clone(&self.replay),
            nonce,
            now,
            unix_ms(wall),
            transport,
        ))
    }
}

/// Milliseconds since the unix epoch (0 for a time before it).
pub(crate) fn unix_ms(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
