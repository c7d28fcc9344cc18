//! palisade on smol: [`Listener`] and [`connect`] give joined [`Connection`]s. The
//! socket loop, the handles (with `Stream` / `Sink`) and the error type are
//! `palisade-driver`'s; this crate holds smol's sockets, timer and spawn.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use palisade_core::{Config, Endpoint};
use palisade_driver::dial::connect_within;
use palisade_driver::{establish, Acceptor, FailureHook, Runtime};
use smol::net::{AsyncToSocketAddrs, TcpListener, TcpStream};
use smol::Task;

pub use palisade_driver::{
    AdmissionError, AdmissionLimits, AdmissionStats, Connection, Dial, Error, HandshakeFailure,
    RecvHalf, SendHalf,
};

/// smol's timer and its global executor.
#[derive(Debug, Clone, Copy)]
pub struct Smol;

impl Runtime for Smol {
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        let timer = smol::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        smol::spawn(task).detach();
    }
}

/// Accepts palisade links; every handshake runs in its own task.
#[derive(Debug)]
pub struct Listener {
    acceptor: Acceptor<Smol>,
    local_addr: SocketAddr,
    // Dropping the task cancels the accept loop.
    _accept_loop: Task<()>,
}

impl Listener {
    /// Binds and starts accepting. Failed handshakes are logged (tracing).
    pub async fn bind(addr: impl AsyncToSocketAddrs, config: Config) -> Result<Self, Error> {
        Self::bind_with(addr, Endpoint::new(config)?, None).await
    }

    /// Binds with an endpoint of your own and an optional failure hook.
    pub async fn bind_with(
        addr: impl AsyncToSocketAddrs,
        endpoint: Endpoint,
        on_failure: Option<FailureHook>,
    ) -> Result<Self, Error> {
        Self::bind_with_limits(addr, endpoint, on_failure, AdmissionLimits::default()).await
    }

    /// [`Listener::bind_with`] with admission limits of your own (per-source caps and
    /// rates, backoff, the cap on connections that have not joined).
    pub async fn bind_with_limits(
        addr: impl AsyncToSocketAddrs,
        endpoint: Endpoint,
        on_failure: Option<FailureHook>,
        limits: AdmissionLimits,
    ) -> Result<Self, Error> {
        let acceptor = Acceptor::with_limits(endpoint, Smol, on_failure, limits)?;
        let socket = TcpListener::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        let handler = acceptor.clone();
        let accept_loop = smol::spawn(async move {
            loop {
                match socket.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        handler.handle(stream, peer);
                    }
                    Err(e) => {
                        let pause = handler.accept_error(&e);
                        if !pause.is_zero() {
                            smol::Timer::after(pause).await;
                        }
                    }
                }
            }
        });
        Ok(Self {
            acceptor,
            local_addr,
            _accept_loop: accept_loop,
        })
    }

    /// The next joined link and its peer's address.
    pub async fn accept(&self) -> (Connection, SocketAddr) {
        self.acceptor.accept().await
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Handshakes in progress now (connections that have not joined).
    pub fn handshakes_in_progress(&self) -> usize {
        self.acceptor.handshakes_in_progress()
    }

    /// New settings for the links accepted from now on: new handshakes use them, joined
    /// links and handshakes in progress keep theirs. Settings that cannot work are
    /// refused and the old ones stay.
    pub fn reconfigure(&self, config: Config) -> Result<(), Error> {
        self.acceptor.reconfigure(config)
    }

    /// The admission counters (refusals, evictions, backoffs, joins).
    pub fn stats(&self) -> AdmissionStats {
        self.acceptor.stats()
    }
}

/// Dials `addr` (`host:port`) and joins. With `verify_hostname` on (the default of
/// settings in CA mode), TLS checks the acceptor's certificate for the host; use
/// [`dial`] with `Dial::server_name` to check another name.
///
/// A failed join is returned only once the refusal owed to the peer (REJECT or CLOSE,
/// TLS close_notify, end of stream) is with the socket, or after at most
/// `palisade_driver::REFUSAL_FLUSH` (1 s) for a peer that does not read; see
/// `palisade_driver::establish`.
pub async fn connect(addr: &str, config: Config) -> Result<Connection, Error> {
    connect_with(&Endpoint::new(config)?, addr).await
}

/// Dials `addr` with an endpoint of your own and joins.
pub async fn connect_with(endpoint: &Endpoint, addr: &str) -> Result<Connection, Error> {
    connect_expecting(endpoint, addr, None).await
}

/// Dials `addr` and joins only if the node answering there has node id `expected_peer`
/// (when given): any other node is refused with reject code 9.
pub async fn connect_expecting(
    endpoint: &Endpoint,
    addr: &str,
    expected_peer: Option<&str>,
) -> Result<Connection, Error> {
    dial(endpoint, &Dial::new(addr).expect_peer_opt(expected_peer)).await
}

/// Dials as `dial` says (the address, the name TLS checks, the node that must answer,
/// the TCP connect timeout) and joins.
pub async fn dial(endpoint: &Endpoint, dial: &Dial) -> Result<Connection, Error> {
    let stream = connect_within(&Smol, dial, TcpStream::connect(dial.addr())).await?;
    stream.set_nodelay(true)?;
    establish(&Smol, stream, dial.connection(endpoint)?).await
}
