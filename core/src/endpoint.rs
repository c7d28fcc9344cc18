//! An endpoint: one node's validated settings and the state its connections share (the
//! replay cache, the random source, the compiled TLS settings). It makes connections; it
//! never touches a socket.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError, Mode};
use crate::connection::{Connection, Peer};
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
        let replay = Arc::new(ReplayCache::new(
            config.replay_cache_capacity,
            config.replay_cache_per_source,
        ));
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

    /// The compiled TLS settings, for re-deciding joined links' peers.
    pub(crate) fn tls_context(&self) -> Option<Arc<TlsContext>> {
        self.tls.clone()
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
        self.connect_expecting(server_name, None, now, wall)
    }

    /// [`Endpoint::connect`] to the node with node id `expected_peer`: a WELCOME from any
    /// other node is refused (reject code 9), so a dialer learns when its address book
    /// and the cluster disagree, or when something else answers at that address.
    pub fn connect_expecting(
        &self,
        server_name: &str,
        expected_peer: Option<&str>,
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
        let peer = Peer::Dialed(expected_peer.map(str::to_owned));
        self.connection(peer, now, wall, transport)
    }

    /// A connection for a link this node accepted. With `mode` permissive and TLS on,
    /// the peer's first byte decides between TLS and plaintext.
    pub fn accept(&self, now: Instant, wall: SystemTime) -> Result<Connection, ConnectError> {
        self.accept_from(None, now, wall)
    }

    /// [`Endpoint::accept`] for a peer at `source` (the socket's peer address): a
    /// plaintext join's nonce counts against that address's share of the replay cache
    /// (`replay_cache_per_source`) as well as against its node id's.
    pub fn accept_from(
        &self,
        source: Option<IpAddr>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Connection, ConnectError> {
        let transport = match &self.tls {
            None => Transport::Plain,
            Some(tls) => {
                let session =
                    Box::new(TlsSession::server(tls, unix_ms(wall)).map_err(ConnectError::Tls)?);
                match self.config.mode {
                    Mode::Strict => Transport::Tls(session),
                    // TLS or plaintext, as the peer's first byte says (PROTOCOL.md §8.1).
                    Mode::Permissive => Transport::Sniffing(session),
                }
            }
        };
        self.connection(Peer::Accepted(source), now, wall, transport)
    }

    fn connection(
        &self,
        peer: Peer,
        now: Instant,
        wall: SystemTime,
        transport: Transport,
    ) -> Result<Connection, ConnectError> {
        let mut nonce = [0u8; crate::join::NONCE_LEN];
        self.random.fill(&mut nonce).map_err(ConnectError::Random)?;
        Ok(Connection::new(
            peer,
            Arc::clone(&self.config),
            Arc::clone(&self.replay),
            Arc::clone(&self.random),
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
