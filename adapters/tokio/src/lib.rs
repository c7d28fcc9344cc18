//! palisade on tokio: [`Listener`] and [`connect`] (or a [`Dialer`]) give joined
//! [`Connection`]s. The socket loop, the accept loop, the handles (with `Stream` /
//! `Sink`), the dialer and the error type are `palisade-driver`'s; this crate holds
//! tokio's sockets, timer and spawn, and [`ByteStream`]: a link as a tokio byte stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use palisade_driver::Runtime;

mod stream;
pub use stream::ByteStream;
use tokio::io::{AsyncRead as TokioRead, AsyncWrite as TokioWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

pub use palisade_driver::{
    AdmissionError, AdmissionLimits, AdmissionStats, Connection, Dial, Error, HandshakeFailure,
    Metrics, MetricsSnapshot, RecvHalf, SendHalf,
};

palisade_driver::async_adapter!(Tokio, tokio::net::ToSocketAddrs);

/// tokio's sleep, spawn and TCP, on the runtime current when the listener or connection
/// was made.
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

palisade_driver::tcp_net!(
    Tokio,
    current: Tokio(Handle::current()),
    listener: TcpListener,
    stream: TcpStream,
    socket: Socket = Socket,
    backlog: palisade_driver::backlog::widen,
);

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
