//! palisade on blocking std sockets: [`Listener`] and [`connect`] (or a [`Dialer`]) give
//! joined [`Connection`]s. One reader thread per link; writes happen on the sending thread.
//! The socket loop, the handles and the error type are `palisade-driver`'s; this crate
//! holds `std::net` and threads.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Instant, SystemTime};

use palisade_core::{Config, Endpoint};
use palisade_driver::dialer::{connect_stream_blocking, dial_blocking};
use palisade_driver::listener::{accept_failed, ACCEPT_BACKLOG};
use palisade_driver::{establish_blocking_admitted, FailureHook, Gate, LiveEndpoint, Permit};

pub use palisade_driver::{
    AdmissionError, AdmissionLimits, AdmissionStats, BlockingConnection as Connection,
    BlockingDialer as Dialer, BlockingRecvHalf as RecvHalf, BlockingSendHalf as SendHalf, Dial,
    Error, Metrics, MetricsSnapshot,
};

/// Accepts palisade links; every handshake runs on a thread of its own.
#[derive(Debug)]
pub struct Listener {
    ready: Mutex<Receiver<(Connection, SocketAddr)>>,
    local_addr: SocketAddr,
    gate: Gate,
    endpoint: LiveEndpoint,
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Binds and starts accepting. Failed handshakes are logged (tracing).
    pub fn bind(addr: impl ToSocketAddrs, config: Config) -> Result<Self, Error> {
        Self::bind_with(addr, Endpoint::new(config)?, None)
    }

    /// Binds with an endpoint of your own and an optional failure hook.
    pub fn bind_with(
        addr: impl ToSocketAddrs,
        endpoint: Endpoint,
        on_failure: Option<FailureHook>,
    ) -> Result<Self, Error> {
        Self::bind_with_limits(addr, endpoint, on_failure, AdmissionLimits::default())
    }

    /// [`Listener::bind_with`] with admission limits of your own (per-source caps and
    /// rates, backoff, the cap on connections that have not joined).
    pub fn bind_with_limits(
        addr: impl ToSocketAddrs,
        endpoint: Endpoint,
        on_failure: Option<FailureHook>,
        limits: AdmissionLimits,
    ) -> Result<Self, Error> {
        let metrics = Metrics::new(endpoint.config().node_id.clone());
        metrics.settings_in_use(endpoint.config());
        let gate = Gate::with_limits_and_metrics(on_failure, limits, metrics)?;
        let socket = TcpListener::bind(addr)?;
        palisade_driver::backlog::widen(&socket)?;
        let local_addr = socket.local_addr()?;
        let (tx, rx) = sync_channel(ACCEPT_BACKLOG);
        let stop = Arc::new(AtomicBool::new(false));
        let endpoint = LiveEndpoint::following(endpoint, gate.links().clone());
        let (e, g, s) = (endpoint.clone(), gate.clone(), Arc::clone(&stop));
        thread::Builder::new()
            .name("palisade-accept".into())
            .spawn(move || accept_loop(&socket, &e, &g, &tx, &s))?;
        Ok(Self {
            ready: Mutex::new(rx),
            local_addr,
            gate,
            endpoint,
            stop,
        })
    }

    /// Blocks until the next link has joined; returns it and its peer's address.
    pub fn accept(&self) -> Result<(Connection, SocketAddr), Error> {
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready
            .recv()
            .map_err(|_| Error::Io(std::io::Error::other("the accept loop has stopped")))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Handshakes in progress now (connections that have not joined).
    pub fn handshakes_in_progress(&self) -> usize {
        self.gate.in_progress()
    }

    /// New settings for the links accepted from now on: new handshakes use them, joined
    /// links and handshakes in progress keep theirs. Settings that cannot work are
    /// refused and the old ones stay.
    pub fn reconfigure(&self, config: Config) -> Result<(), Error> {
        self.endpoint.reconfigure(config)?;
        self.gate
            .metrics()
            .settings_in_use(self.endpoint.current().config());
        Ok(())
    }

    /// The admission counters (refusals, evictions, backoffs, joins).
    pub fn stats(&self) -> AdmissionStats {
        self.gate.stats()
    }

    /// The node's counters this listener counts in (joins, refusals, TLS failures,
    /// frames, bytes); give a clone to `Dialer::with_metrics`.
    pub fn metrics(&self) -> &Metrics {
        self.gate.metrics()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.local_addr);
    }
}

fn accept_loop(
    socket: &TcpListener,
    endpoint: &LiveEndpoint,
    gate: &Gate,
    ready: &SyncSender<(Connection, SocketAddr)>,
    stop: &AtomicBool,
) {
    for incoming in socket.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let stream = match incoming {
            Ok(s) => s,
            Err(e) => {
                thread::sleep(accept_failed(&e));
                continue;
            }
        };
        let Ok(peer_addr) = stream.peer_addr() else {
            continue;
        };
        // Refused: the stream is dropped (closed) here, before any TLS or HMAC work.
        let Some(permit) = gate.enter(peer_addr) else {
            continue;
        };
        let (endpoint, gate, ready) = (endpoint.current(), gate.clone(), ready.clone());
        let spawned = thread::Builder::new()
            .name("palisade-handshake".into())
            .spawn(move || match handshake(&endpoint, stream, &permit) {
                Ok(conn) => {
                    permit.joined();
                    match ready.try_send((conn, peer_addr)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => gate.backlog_full(peer_addr),
                        Err(TrySendError::Disconnected(_)) => {}
                    }
                }
                Err(error) => gate.handshake_failed(&permit, peer_addr, error),
            });
        if let Err(e) = spawned {
            tracing::warn!(target: "palisade", "cannot start a handshake thread: {e}");
        }
    }
}

fn handshake(endpoint: &Endpoint, stream: TcpStream, permit: &Permit) -> Result<Connection, Error> {
    stream.set_nodelay(true)?;
    let source = stream.peer_addr().ok().map(|a| a.ip());
    let conn = endpoint.accept_from(source, Instant::now(), SystemTime::now())?;
    establish_blocking_admitted(stream, conn, permit.clone())
}

/// Dials `addr` (`host:port`) and joins. With `verify_hostname` on (the default of
/// settings in CA mode), TLS checks the acceptor's certificate for the host; use
/// [`dial`] with `Dial::server_name` to check another name.
///
/// A failed join is returned only once the refusal owed to the peer (REJECT or CLOSE,
/// TLS close_notify, end of stream) is with the socket, or after at most
/// `palisade_driver::REFUSAL_FLUSH` (1 s) for a peer that does not read; see
/// `palisade_driver::establish_blocking`.
pub fn connect(addr: &str, config: Config) -> Result<Connection, Error> {
    connect_with(&Endpoint::new(config)?, addr)
}

/// Dials `addr` with an endpoint of your own and joins.
pub fn connect_with(endpoint: &Endpoint, addr: &str) -> Result<Connection, Error> {
    connect_expecting(endpoint, addr, None)
}

/// Dials `addr` and joins only if the node answering there has node id `expected_peer`
/// (when given): any other node is refused with reject code 9.
pub fn connect_expecting(
    endpoint: &Endpoint,
    addr: &str,
    expected_peer: Option<&str>,
) -> Result<Connection, Error> {
    dial(endpoint, &Dial::new(addr).expect_peer_opt(expected_peer))
}

/// Dials as `dial` says (the address, the name TLS checks, the node that must answer,
/// the TCP connect timeout) and joins.
pub fn dial(endpoint: &Endpoint, dial: &Dial) -> Result<Connection, Error> {
    dial_blocking(endpoint, dial)
}

/// Joins over a stream the caller connected (say, from a chosen source address); `dial`
/// gives the name TLS checks and the node that must answer (its address and timeout are
/// not used).
pub fn connect_stream(
    endpoint: &Endpoint,
    stream: TcpStream,
    dial: &Dial,
) -> Result<Connection, Error> {
    connect_stream_blocking(endpoint, stream, dial)
}
