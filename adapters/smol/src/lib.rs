//! palisade on smol: [`Listener`] and [`connect`] (or a [`Dialer`]) give joined
//! [`Connection`]s. The socket loop, the accept loop, the handles (with `Stream` /
//! `Sink`), the dialer and the error type are `palisade-driver`'s; this crate holds
//! smol's sockets, timer and spawn.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::time::Instant;

use palisade_driver::{FuturesSocket, Runtime, ShutdownWrite};
use smol::net::{TcpListener, TcpStream};

pub use palisade_driver::{
    AdmissionError, AdmissionLimits, AdmissionStats, ByteStream, Connection, Dial, Error,
    HandshakeFailure, Metrics, MetricsSnapshot, RecvHalf, SendHalf,
};

palisade_driver::async_adapter!(Smol, smol::net::AsyncToSocketAddrs);

/// smol's timer, its global executor and its TCP.
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

palisade_driver::tcp_net!(
    Smol,
    current: Smol,
    listener: TcpListener,
    stream: TcpStream,
    socket: Socket = Socket::new,
    backlog: palisade_driver::backlog::widen,
);

impl ShutdownWrite for Smol {
    fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
        stream.shutdown(Shutdown::Write)
    }
}

/// A smol socket as the driver speaks to it: `poll_close` shuts the write side.
pub type Socket = FuturesSocket<Smol>;
