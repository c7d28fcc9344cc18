//! A joined link as a byte stream, so whatever runs over a TCP stream (hyper, tonic,
//! tokio-util codecs) runs over palisade.
//!
//! - A write becomes one DATA frame of at most [`MAX_WRITE`] bytes (and at most the
//!   peer's `max_frame`): a longer write is short, as on a socket. Frames are queued in
//!   the core's send buffer, which coalesces small frames into full TLS records, and
//!   the driver hands what is queued to the socket in one vectored write: many small
//!   writes cost a frame header each, not a TLS record or a syscall each.
//! - A write waits (`Pending`) while the send buffer is full: backpressure, never growth.
//! - A read returns the payloads of the frames in order. A frame larger than the
//!   caller's buffer is kept as `Bytes` and handed out piece by piece (no copy of the
//!   rest); frame boundaries carry no meaning.
//! - Flush waits until the core has handed every queued byte to the driver; shutdown
//!   flushes, closes the link (CLOSE, TLS close_notify, FIN) and waits until the socket's
//!   write side is shut. The peer's reads then end (EOF). A palisade close ends both
//!   directions: after shutdown, reads end too.
//!
//! This module gives the `futures-io` traits (async-std, smol, futures); the tokio
//! adapter wraps [`ByteStream`] for tokio's.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};
use futures_sink::Sink;
use palisade_core::{CloseReason, PeerInfo};

use crate::conn::Connection;
use crate::error::Error;

/// Most bytes one write turns into a frame. Large enough that a frame's 5-byte header
/// is noise, small enough that a full 1 MiB send buffer still takes new writes while the
/// driver drains it (a frame only fits once the buffer has room for all of it).
pub const MAX_WRITE: usize = 64 * 1024;

/// A joined link read and written as a stream of bytes. Made by
/// [`Connection::into_stream`].
#[derive(Debug)]
pub struct ByteStream {
    conn: Connection,
    /// The rest of a frame the reader has taken only part of.
    unread: Bytes,
    /// `shutdown` closed the link.
    closed: bool,
}

impl Connection {
    /// This link as a byte stream (`futures-io` `AsyncRead` + `AsyncWrite`; the tokio
    /// adapter's `ByteStream` gives tokio's traits).
    pub fn into_stream(self) -> ByteStream {
        ByteStream {
            conn: self,
            unread: Bytes::new(),
            closed: false,
        }
    }
}

/// A link error as the `io::Error` a byte stream's user expects.
fn io_error(e: Error) -> io::Error {
    let kind = match &e {
        Error::Io(inner) => inner.kind(),
        Error::Closed(_) => io::ErrorKind::BrokenPipe,
        Error::Send(_) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::ConnectionAborted,
    };
    match e {
        Error::Io(inner) => inner,
        other => io::Error::new(kind, other),
    }
}

impl ByteStream {
    /// What the join established: the peer's node id, key id, TLS version, suite and
    /// certificate names.
    pub fn peer(&self) -> &PeerInfo {
        self.conn.peer()
    }

    /// The frame-level connection. Bytes read from a frame but not yet returned by
    /// `poll_read` are lost.
    pub fn into_inner(self) -> Connection {
        self.conn
    }

    /// Copies as much of `unread` as fits into `buf`.
    fn take_unread(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.unread.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.unread.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.unread.advance(n);
        n
    }

    /// Reads into `buf`; `Ok(0)` at the end of the stream (the peer closed, or this
    /// side shut down).
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        while self.unread.is_empty() {
            match self.conn.link().poll_recv(Some(cx)) {
                Poll::Ready(Ok(Some(frame))) => self.unread = frame,
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(self.take_unread(buf)))
    }

    /// The next bytes as they arrived, without copying: the rest of a partly read frame,
    /// else the next frame. `None` at the end of the stream.
    pub fn poll_read_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.unread.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.unread))));
        }
        loop {
            match self.conn.link().poll_recv(Some(cx)) {
                Poll::Ready(Ok(Some(frame))) if frame.is_empty() => continue,
                Poll::Ready(Ok(Some(frame))) => return Poll::Ready(Ok(Some(frame))),
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes up to [`MAX_WRITE`] bytes of `bufs` (and at most the peer's `max_frame`)
    /// as one frame, waiting while the send buffer is full.
    pub fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the byte stream was shut down; nothing more can be written",
            )));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let cap = total.min(MAX_WRITE).min(self.conn.peer().max_frame);
        if cap == 0 {
            return Poll::Ready(Ok(0));
        }
        // A frame the `Sink` side left pending goes first.
        match Pin::new(&mut self.conn).poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
            Poll::Pending => return Poll::Pending,
        }
        let mut frame = BytesMut::with_capacity(cap);
        for b in bufs {
            let take = (cap - frame.len()).min(b.len());
            frame.extend_from_slice(b.get(..take).unwrap_or_default());
            if frame.len() == cap {
                break;
            }
        }
        // Refused for lack of room, the copy is dropped: the caller offers the bytes
        // again once woken, as `AsyncWrite` requires.
        let mut slot = Some(frame.freeze());
        match self.conn.link().poll_send(&mut slot, Some(cx)) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(cap)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Waits until every queued byte has been handed to the socket.
    pub fn poll_flush_link(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<Bytes>::poll_flush(Pin::new(&mut self.conn), cx).map_err(io_error)
    }

    /// Flushes, closes the link (CLOSE, TLS close_notify) and waits until the socket's
    /// write side is shut.
    pub fn poll_shutdown_link(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.closed {
            match self.poll_flush_link(cx) {
                Poll::Ready(Ok(())) => {}
                // Already over: nothing left to shut.
                Poll::Ready(Err(_)) => {
                    self.closed = true;
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
            }
            self.closed = true;
            self.conn.link().close(CloseReason::default());
        }
        self.conn.link().poll_write_closed(Some(cx)).map(Ok)
    }
}

impl AsyncRead for ByteStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_into(cx, buf)
    }
}

impl AsyncWrite for ByteStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_link(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shutdown_link(cx)
    }
}
