//! [`ByteStream`]: a joined link as a tokio byte stream (`AsyncRead` + `AsyncWrite`), for
//! hyper, tonic and tokio-util codecs. The behaviour (one frame per write, backpressure,
//! coalescing, shutdown as CLOSE then FIN) is `palisade_driver::ByteStream`'s; this
//! wrapper only speaks tokio's traits (and still the `futures-io` ones).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use palisade_core::PeerInfo;
use palisade_driver::Connection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A joined link as a tokio byte stream: `ByteStream::from(connection)`.
///
/// ```no_run
/// # async fn run(config: palisade_core::Config) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let conn = palisade_tokio::connect("node-b.cluster.local:7000", config).await?;
/// let mut stream = palisade_tokio::ByteStream::from(conn);
/// println!("talking to {}", stream.peer().node_id);
/// stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await?; // one DATA frame
/// stream.flush().await?;
/// let mut reply = Vec::new();
/// stream.read_to_end(&mut reply).await?; // until the peer closes
/// stream.shutdown().await?; // CLOSE, close_notify, FIN
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ByteStream(palisade_driver::ByteStream);

impl From<Connection> for ByteStream {
    fn from(conn: Connection) -> Self {
        Self(conn.into_stream())
    }
}

impl From<palisade_driver::ByteStream> for ByteStream {
    fn from(stream: palisade_driver::ByteStream) -> Self {
        Self(stream)
    }
}

impl ByteStream {
    /// What the join established: the peer's node id, key id, TLS version, suite and
    /// certificate names.
    pub fn peer(&self) -> &PeerInfo {
        self.0.peer()
    }

    /// The runtime-independent stream (`futures-io` traits).
    pub fn into_inner(self) -> palisade_driver::ByteStream {
        self.0
    }

    /// The next bytes as they arrived, without copying (see
    /// `palisade_driver::ByteStream::poll_read_bytes`); `None` at the end.
    pub async fn read_bytes(&mut self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.0.poll_read_bytes(cx)).await
    }
}

impl AsyncRead for ByteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = match self
            .get_mut()
            .0
            .poll_read_into(cx, buf.initialize_unfilled())
        {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ByteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_write_from(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_write_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_flush_link(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_shutdown_link(cx)
    }
}

impl futures_io::AsyncRead for ByteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_read_into(cx, buf)
    }
}

impl futures_io::AsyncWrite for ByteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().0.poll_write_from(cx, &[IoSlice::new(buf)])
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_flush_link(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.poll_shutdown_link(cx)
    }
}
