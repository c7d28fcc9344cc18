//! palisade on async-std: [`Listener`] and [`connect`] (or a [`Dialer`]) give joined
//! [`Connection`]s. The socket loop, the accept loop, the handles (with `Stream` /
//! `Sink`), the dialer and the error type are `palisade-driver`'s; this crate holds
//! async-std's sockets, timer and spawn.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::time::Instant;

use async_std::net::{TcpListener, TcpStream};
use palisade_driver::{FuturesSocket, Runtime, ShutdownWrite};

pub use palisade_driver::{
    AdmissionError, AdmissionLimits, AdmissionStats, ByteStream, Connection, Dial, Error,
    HandshakeFailure, Metrics, MetricsSnapshot, RecvHalf, SendHalf,
};

palisade_driver::async_adapter!(AsyncStd, async_std::net::ToSocketAddrs);

/// async-std's sleep, spawn and TCP.
#[derive(Debug, Clone, Copy)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        Box::pin(async_std::task::sleep(
            deadline.saturating_duration_since(Instant::now()),
        ))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        async_std::task::spawn(task);
    }
}

palisade_driver::tcp_net!(
    AsyncStd,
    current: AsyncStd,
    listener: TcpListener,
    stream: TcpStream,
    socket: Socket = Socket::new,
);

impl ShutdownWrite for AsyncStd {
    fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
        stream.shutdown(Shutdown::Write)
    }
}

/// An async-std socket whose `poll_close` shuts the write side (async-std's own only
/// flushes, which would leave the peer waiting for our FIN).
pub type Socket = FuturesSocket<AsyncStd>;
