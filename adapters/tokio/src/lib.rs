//! palisade on tokio: [`Listener`] and [`connect`] give joined [`Connection`]s. The
//! socket loop, the handles (with `Stream` / `Sink`) and the error type are
//! `palisade-driver`'s; this crate holds tokio's sockets, timer and spawn.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use palisade_core::{Config, Endpoint};
use palisade_driver::dial::connect_within;
use palisade_driver::{establish, Acceptor, FailureHook, Runtime};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead as TokioRead, AsyncWrite as TokioWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

pub use palisade_driver::{
    AdmissionError, AdmissionLimits, AdmissionStats, Connection, Dial, Error, HandshakeFailure,
    RecvHalf, SendHalf,
};

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

/// A tokio socket seen through the `futures-io` traits the driver speaks. (tokio-util's
/// `Compat` would do, but it does not forward vectored writes.)
#[derive(Debug)]
pub struct Socket(TcpStream);

impl futures_io::AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut self.0).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_io::AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
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
        Self::bind_with_limits(addr, endpoint, on_failure, AdmissionLimits::default()).await
    }

    /// [`Listener::bind_with`] with admission limits of your own (per-source caps and
    /// rates, backoff, the cap on connections that have not joined).
    pub async fn bind_with_limits(
        addr: impl ToSocketAddrs,
        endpoint: Endpoint,
        on_failure: Option<FailureHook>,
        limits: AdmissionLimits,
    ) -> Result<Self, Error> {
        let acceptor = Acceptor::with_limits(endpoint, runtime(), on_failure, limits)?;
        let socket = TcpListener::bind(addr).await?;
        let local_addr = socket.local_addr()?;
        let handler = acceptor.clone();
        let accept_loop = tokio::spawn(async move {
            loop {
                match socket.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        handler.handle(Socket(stream), peer);
                    }
                    Err(e) => {
                        let pause = handler.accept_error(&e);
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
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

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept_loop.abort();
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
    let stream = connect_within(&runtime(), dial, TcpStream::connect(dial.addr())).await?;
    connect_stream(endpoint, stream, dial).await
}

/// Joins over a stream the caller connected (say, from a chosen source address with
/// `tokio::net::TcpSocket::bind`); `dial` gives the name TLS checks and the node that must
/// answer (its address and timeout are not used).
pub async fn connect_stream(
    endpoint: &Endpoint,
    stream: TcpStream,
    dial: &Dial,
) -> Result<Connection, Error> {
    stream.set_nodelay(true)?;
    establish(&runtime(), Socket(stream), dial.connection(endpoint)?).await
}
