//! palisade on tokio: [`Listener`] and [`connect`] give joined [`Connection`]s. The
//! socket loop, the handles (with `Stream` / `Sink`) and the error type are
//! `palisade-driver`'s; this crate holds tokio's sockets, timer and spawn.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use palisade_core::{Config, Endpoint};
use palisade_driver::{establish, server_name_of, Acceptor, FailureHook, Runtime};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::compat::TokioAsyncReadCompatExt;

pub use palisade_driver::{Connection, Error, HandshakeFailure, RecvHalf, SendHalf};

/// tokio's sleep and spawn, on the runtime current when the listener or connection was
/// made.
#[derive(Debug, Clone)]
pub struct Tokio(Handle);

impl Runtime for Tokio {
    type Sleep = tokio::time::Sleep;

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.spawn(task);
    }
}

fn runtime() -> Tokio {
    Tokio(Handle::current())
}

/// Accepts palisade links; every handshake runs in its own task.
#[derive(Debug)]
pub struct Listener {
    acceptor: Acceptor<Tokio>,
    local_addr: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl Listener {
    /// Binds and starts accepting. Failed handshakes are logged (tracing).
    pub async fn bind(addr: impl ToSocketAddrs, config: Config) -> Result<Self, Error> {
        Self::bind_with(addr, Endpoint::new(config)?, None).await
    }

    /// Binds with an endpoint of your own (shared replay cache, seeded randomness) and
    /// an optional hook called for every failed handshake.
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        endpoint: Endpoint,
        on_failure: Option<FailureHook>,
    ) -> Result<Self, Error> {
        let socket = TcpListener::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        let acceptor = Acceptor::new(endpoint, runtime(), on_failure);
        let handler = acceptor.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                match socket.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        handler.handle(stream.compat(), peer);
                    }
                    Err(e) => handler.accept_error(&e),
                }
            }
        });
        Ok(Self {
            acceptor,
            local_addr,
            accept_loop,
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

    /// Handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.acceptor.handshakes_in_progress()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

/// Dials `addr` (`host:port`; the host is the name TLS checks) and joins.
pub async fn connect(addr: &str, config: Config) -> Result<Connection, Error> {
    connect_with(&Endpoint::new(config)?, addr).await
}

/// Dials `addr` with an endpoint of your own and joins.
pub async fn connect_with(endpoint: &Endpoint, addr: &str) -> Result<Connection, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let conn = endpoint.connect(server_name_of(addr), Instant::now(), SystemTime::now())?;
    establish(&runtime(), stream.compat(), conn).await
}
