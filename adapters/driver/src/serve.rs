//! What every async adapter does with its runtime's TCP sockets, written once: the accept
//! loop (accept → `set_nodelay` → [`Acceptor::handle`]; an accept error pauses as
//! [`Acceptor::accept_error`] says), the [`Listener`] that owns it, and the `futures-io`
//! view of a stream that already speaks `futures-io` ([`FuturesSocket`]).
//!
//! A runtime comes in through [`Net`]: its listening socket, its stream, and how to
//! accept, connect and set `TCP_NODELAY`. Its sleep and spawn are [`Runtime`]'s.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures_io::{AsyncRead, AsyncWrite};
use palisade_core::{Config, Endpoint};

use crate::admission::{AdmissionLimits, AdmissionStats};
use crate::conn::Connection;
use crate::driver::Runtime;
use crate::error::Error;
use crate::listener::{Acceptor, FailureHook};
use crate::metrics::Metrics;

/// An async runtime's TCP: what the accept loop and the dialer need besides sleep and
/// spawn. Each async adapter implements it for its runtime type.
pub trait Net: Runtime {
    /// The runtime's listening socket.
    type TcpListener: Send + Sync + 'static;
    /// The runtime's connected stream.
    type TcpStream: Send + 'static;
    /// The stream seen through `futures-io`, whose `poll_close` shuts the write side.
    type Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The runtime to spawn on now (for tokio, the one whose context we are in).
    fn current() -> Self;
    /// The next connection on `listener`.
    fn accept(
        listener: &Self::TcpListener,
    ) -> impl Future<Output = io::Result<(Self::TcpStream, SocketAddr)>> + Send;
    /// The address `listener` is bound to.
    fn listener_addr(listener: &Self::TcpListener) -> io::Result<SocketAddr>;

    /// Widens a freshly bound listener's accept queue ([`crate::backlog`]). A runtime
    /// whose listener does not lend its descriptor (async-std) keeps its own backlog.
    fn widen_backlog(_listener: &Self::TcpListener) -> io::Result<()> {
        Ok(())
    }
    /// A TCP connect to `addr` (`host:port`, resolved by the runtime).
    fn connect(addr: &str) -> impl Future<Output = io::Result<Self::TcpStream>> + Send;
    /// Turns Nagle off: frames are coalesced by the core, not by the kernel.
    fn set_nodelay(stream: &Self::TcpStream) -> io::Result<()>;
    /// The stream as the driver speaks to it.
    fn socket(stream: Self::TcpStream) -> Self::Socket;
}

/// A runtime whose stream already speaks `futures-io` but whose `poll_close` may only
/// flush: it says how to shut the write side, so [`FuturesSocket`] can send our FIN.
pub trait ShutdownWrite: Net {
    /// Shuts `stream`'s write side.
    fn shutdown_write(stream: &Self::TcpStream) -> io::Result<()>;
}

/// A `futures-io` stream whose `poll_close` shuts the write side (async-std's own only
/// flushes, which would leave the peer waiting for our FIN). Shared by the adapters whose
/// streams speak `futures-io`.
pub struct FuturesSocket<N: ShutdownWrite>(N::TcpStream);

impl<N: ShutdownWrite> FuturesSocket<N> {
    /// Wraps `stream`.
    pub fn new(stream: N::TcpStream) -> Self {
        Self(stream)
    }
}

impl<N: ShutdownWrite> fmt::Debug for FuturesSocket<N>
where
    N::TcpStream: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FuturesSocket").field(&self.0).finish()
    }
}

impl<N: ShutdownWrite> AsyncRead for FuturesSocket<N>
where
    N::TcpStream: AsyncRead + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<N: ShutdownWrite> AsyncWrite for FuturesSocket<N>
where
    N::TcpStream: AsyncWrite + Unpin,
{
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

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(N::shutdown_write(&self.0))
    }
}

/// Accepts palisade links on a runtime's listening socket; every handshake runs in its
/// own task. Each async adapter's `Listener` is this with its runtime's `bind`.
pub struct Listener<N: Net> {
    acceptor: Acceptor<N>,
    local_addr: SocketAddr,
    // Dropping it ends the accept loop, which closes the listening socket.
    _stop: Stop,
}

impl<N: Net> fmt::Debug for Listener<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .field("acceptor", &self.acceptor)
            .finish_non_exhaustive()
    }
}

impl<N: Net> Listener<N> {
    /// Starts accepting on `socket` (already bound), with `endpoint`'s settings, the
    /// failure hook and admission limits given. Limits that cannot work are refused.
    pub fn start(
        socket: N::TcpListener,
        endpoint: Endpoint,
        on_failure: Option<FailureHook>,
        limits: AdmissionLimits,
    ) -> Result<Self, Error> {
        let net = N::current();
        let acceptor = Acceptor::with_limits(endpoint, net.clone(), on_failure, limits)?;
        let local_addr = N::listener_addr(&socket)?;
        let stop = Stop::default();
        let accept_loop = accept_loop(net.clone(), socket, acceptor.clone());
        net.spawn(until_stopped(Arc::clone(&stop.0), accept_loop));
        Ok(Self {
            acceptor,
            local_addr,
            _stop: stop,
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

    /// The node's counters this listener counts in (joins, refusals, TLS failures,
    /// frames, bytes); give a clone to the node's `Dialer::with_metrics`.
    pub fn metrics(&self) -> &Metrics {
        self.acceptor.metrics()
    }
}

/// The accept loop: every accepted socket goes to `acceptor` (admission, then its own
/// handshake task); an accept error pauses the loop when the system is out of something.
async fn accept_loop<N: Net>(net: N, socket: N::TcpListener, acceptor: Acceptor<N>) {
    loop {
        match N::accept(&socket).await {
            Ok((stream, peer)) => {
                // Best effort: a socket that refuses it still works, a little slower.
                let _ = N::set_nodelay(&stream);
                acceptor.handle(N::socket(stream), peer);
            }
            Err(e) => {
                let pause = acceptor.accept_error(&e);
                if !pause.is_zero() {
                    net.sleep_until(Instant::now() + pause).await;
                }
            }
        }
    }
}

/// Ends a spawned task from outside without the runtime's task handle (each runtime has
/// its own kind of handle and its own way to cancel): the task is woken and returns.
#[derive(Debug, Default)]
struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    stopped: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::Release);
        let waker = self
            .0
            .waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Runs `task` until it ends or its [`Stop`] is dropped.
async fn until_stopped(state: Arc<StopState>, task: impl Future<Output = ()>) {
    let mut task = pin!(task);
    poll_fn(|cx| {
        // The waker is stored before the flag is read, so a drop in between still wakes.
        {
            let mut slot = state.waker.lock().unwrap_or_else(|p| p.into_inner());
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        if state.stopped.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        task.as_mut().poll(cx)
    })
    .await;
}
