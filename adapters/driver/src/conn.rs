//! The application's handle on a joined link for async runtimes: `send`, `recv`,
//! `close`, `peer`, splittable into halves that work from different tasks, with the
//! `futures` `Stream` / `Sink` traits (which tokio-stream and tokio-util users also use).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_core::Stream;
use futures_io::{AsyncRead, AsyncWrite};
use futures_sink::Sink;
use palisade_core::{CloseCode, CloseReason, Endpoint, PeerInfo};
use tracing::Instrument;

use crate::admission::Permit;
use crate::dial::Dial;
use crate::driver::{Driver, Runtime};
use crate::error::Error;
use crate::link::{Link, REFUSAL_FLUSH};
use crate::observe::{link_span, LinkObserver};

/// Closes the link when the application has dropped every handle on it.
#[derive(Debug)]
struct Owner(Arc<Link>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close(CloseReason::new(
            CloseCode::Normal,
            "the connection was dropped",
        ));
    }
}

/// A joined link.
#[derive(Debug)]
pub struct Connection {
    send: SendHalf,
    recv: RecvHalf,
    peer: PeerInfo,
}

/// The sending half of a [`Connection`].
#[derive(Debug)]
pub struct SendHalf {
    owner: Arc<Owner>,
    /// A frame `Sink::start_send` accepted that the core had no room for yet.
    pending: Option<Bytes>,
}

/// The receiving half of a [`Connection`].
#[derive(Debug)]
pub struct RecvHalf {
    owner: Arc<Owner>,
}

/// Starts the driver for `conn` over `socket` and waits for the join.
///
/// When the join fails, the error is returned only once what the peer is owed (a REJECT
/// or CLOSE, then TLS close_notify) has been written and the socket's write side shut,
/// or [`REFUSAL_FLUSH`] has passed (a peer that does not read): a caller that exits on
/// the error still leaves the peer the reason, not a bare EOF. A successful join returns
/// at once.
///
/// The link has a span (without the peer's address, which this function is not told)
/// and is not counted: dialers use [`establish_dialed`], listeners
/// [`establish_admitted`].
pub async fn establish<S, R>(
    runtime: &R,
    socket: S,
    conn: palisade_core::Connection,
) -> Result<Connection, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let observer = LinkObserver::new(None, link_span(conn.side(), None));
    establish_inner(runtime, socket, conn, None, observer).await
}

/// [`establish`] for a socket connected as `dial` says: the core connection is made from
/// `endpoint` for `dial` (the name TLS checks, the node that must answer), the link's
/// span names the address dialed, and the link is counted in the dial's
/// [`Dial::metrics`], if any.
pub async fn establish_dialed<S, R>(
    runtime: &R,
    socket: S,
    endpoint: &Endpoint,
    dial: &Dial,
) -> Result<Connection, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let conn = dial.connection(endpoint)?;
    establish_inner(runtime, socket, conn, None, dial.observer()).await
}

/// [`establish`] for a connection a listener admitted: the driver holds `permit` until
/// the socket is closed (so the listener's slot count bounds its sockets), and an
/// eviction closes the link at once.
pub async fn establish_admitted<S, R>(
    runtime: &R,
    socket: S,
    conn: palisade_core::Connection,
    permit: Permit,
) -> Result<Connection, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let observer = permit.observer().clone();
    establish_inner(runtime, socket, conn, Some(permit), observer).await
}

async fn establish_inner<S, R>(
    runtime: &R,
    socket: S,
    conn: palisade_core::Connection,
    permit: Option<Permit>,
    observer: LinkObserver,
) -> Result<Connection, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let span = observer.span().clone();
    let (conn, driver) = join(runtime, socket, conn, permit, observer, false)
        .instrument(span.clone())
        .await?;
    if let Some(driver) = driver {
        runtime.spawn(driver.instrument(span));
    }
    Ok(conn)
}

/// [`establish_admitted`] for a listener's handshake task, which goes on as the link's
/// driver once it has handed the joined link over: one task per accepted link, not a
/// handshake task and a driver task.
pub(crate) async fn establish_admitted_driving<S, R>(
    runtime: &R,
    socket: S,
    conn: palisade_core::Connection,
    permit: Permit,
) -> Result<(Connection, impl Future<Output = ()> + Send + 'static), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let observer = permit.observer().clone();
    let (conn, driver) = join(runtime, socket, conn, Some(permit), observer, true).await?;
    Ok((conn, async move {
        if let Some(driver) = driver {
            driver.await;
        }
    }))
}

/// Starts the link's driver and waits for the join; returns the link, and the driver
/// when `inline`.
///
/// `inline`: the calling task drives the handshake itself and is handed the driver to
/// run from then on (a listener's handshake task goes on as its link's driver: one task
/// per accepted link instead of two, and no wake-up from the driver at the join).
/// Otherwise the driver runs in a task of its own from the start, which is what a
/// dialer does: driving the handshake in the caller's task and spawning the driver
/// after the join measured slower on an idle machine (tokio loopback handshakes 1.01×
/// against 1.08× tokio-rustls: the spawn lands right when the caller goes on to use the
/// link). A failed join's driver is spawned to write what the peer is owed.
async fn join<S, R>(
    runtime: &R,
    socket: S,
    conn: palisade_core::Connection,
    permit: Option<Permit>,
    observer: LinkObserver,
    inline: bool,
) -> Result<(Connection, Option<Driver<Heard<S>, R>>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    let span = observer.span().clone();
    let link = Arc::new(Link::observed(conn, observer));
    let follower: Arc<dyn crate::follow::Follows> = link.clone();
    link.observer().register(Arc::downgrade(&follower));
    let owner = Arc::new(Owner(Arc::clone(&link)));
    if let Some(permit) = &permit {
        let weak = Arc::downgrade(&link);
        permit.on_evict(move || {
            if let Some(link) = weak.upgrade() {
                link.abort(CloseReason::new(
                    CloseCode::ShuttingDown,
                    "too many connections are waiting to join; this one was evicted (its source held the most, and it had sent nothing or was oldest)",
                ));
            }
        });
    }
    let socket = Heard {
        socket,
        permit: permit.clone(),
    };
    let mut driver = Some(Driver::new(Arc::clone(&link), socket, runtime.clone()).holding(permit));
    if !inline {
        if let Some(driver) = driver.take() {
            runtime.spawn(driver.instrument(span.clone()));
        }
    }
    let joined = poll_fn(|cx| match driver.as_mut() {
        Some(d) => {
            if Pin::new(d).poll(cx).is_ready() {
                // The socket is done with before the join: the link has ended.
                driver = None;
                return link.poll_joined(Some(cx));
            }
            // Only the driver's own progress joins the link, and the driver is polled
            // again whenever it can make some: waiting for the join as well would have
            // the driver's input wake this very task while it runs, for nothing.
            link.poll_joined(None)
        }
        None => link.poll_joined(Some(cx)),
    })
    .await;
    let peer = match joined {
        Ok(peer) => peer,
        Err(e) => {
            if let Some(driver) = driver {
                runtime.spawn(driver.instrument(span));
            }
            write_closed_within(runtime, &link, REFUSAL_FLUSH).await;
            return Err(e);
        }
    };
    let conn = Connection {
        send: SendHalf {
            owner: Arc::clone(&owner),
            pending: None,
        },
        recv: RecvHalf { owner },
        peer,
    };
    Ok((conn, driver))
}

/// Waits until the driver has written its last bytes and shut the socket's write side,
/// or `within` passes.
async fn write_closed_within<R: Runtime>(runtime: &R, link: &Link, within: Duration) {
    let mut sleep = Box::pin(runtime.sleep_until(Instant::now() + within));
    poll_fn(|cx| {
        if link.poll_write_closed(Some(cx)).is_ready() || sleep.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

impl Connection {
    /// What the join established: the peer's node id, key id, TLS version, suite and
    /// certificate names.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Sends a frame, waiting while the send buffer is full (memory stays bounded).
    pub async fn send(&mut self, frame: Bytes) -> Result<(), Error> {
        self.send.send(frame).await
    }

    /// The next frame; `Ok(None)` once the peer closed gracefully.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        self.recv.recv().await
    }

    /// Sends frames from the front of `frames`, as many as fit, waiting while none does
    /// (see [`SendHalf::send_many`]). Returns how many were queued.
    pub async fn send_many(&mut self, frames: &[Bytes]) -> Result<usize, Error> {
        self.send.send_many(frames).await
    }

    /// Appends up to `max` received frames to `out`, waiting for at least one (see
    /// [`RecvHalf::recv_many`]). Returns how many; `Ok(0)` once the peer closed
    /// gracefully.
    pub async fn recv_many(&mut self, out: &mut Vec<Bytes>, max: usize) -> Result<usize, Error> {
        self.recv.recv_many(out, max).await
    }

    /// Why the link ended, once it has (see [`RecvHalf::close_cause`]).
    pub fn close_cause(&self) -> Option<palisade_core::CloseCause> {
        self.recv.close_cause()
    }

    /// The peer as the link rests on it now (the key id changes with a re-join).
    pub fn current_peer(&self) -> Option<PeerInfo> {
        self.recv.current_peer()
    }

    /// Closes gracefully (queued frames, CLOSE, TLS close_notify, socket shutdown) and
    /// waits until the socket is shut.
    pub async fn close(self, reason: CloseReason) {
        self.send.close(reason).await;
    }

    /// Splits into halves that can be used from different tasks.
    pub fn split(self) -> (SendHalf, RecvHalf) {
        (self.send, self.recv)
    }

    /// The link's shared state (for [`crate::stream::ByteStream`]).
    pub(crate) fn link(&self) -> &Link {
        self.send.link()
    }
}

impl SendHalf {
    fn link(&self) -> &Link {
        &self.owner.0
    }

    /// Sends a frame, waiting while the send buffer is full.
    pub async fn send(&mut self, frame: Bytes) -> Result<(), Error> {
        self.send_many(std::slice::from_ref(&frame))
            .await
            .map(|_| ())
    }

    /// Sends frames from the front of `frames` (each its own frame, in order), as many
    /// as the send buffer takes now, waiting while it takes none: returns how many were
    /// queued, at least one unless `frames` is empty. Send the rest with another call.
    ///
    /// Why: `send` takes the link's lock, counts the frame and wakes the driver for each
    /// frame; this does that once per batch, and copies small frames next to their
    /// headers in one go, which is most of the cost of small frames.
    pub async fn send_many(&mut self, frames: &[Bytes]) -> Result<usize, Error> {
        if frames.is_empty() {
            return Ok(0);
        }
        let link = &self.owner.0;
        let pending = &mut self.pending;
        poll_fn(|cx| {
            // A frame `Sink::start_send` left behind goes first, keeping the order.
            if pending.is_some() {
                std::task::ready!(link.poll_send(pending, Some(cx)))?;
            }
            link.poll_send_many(frames, Some(cx))
        })
        .await
    }

    /// Waits until every queued frame has been handed to the socket.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.owner.0.poll_flushed(Some(cx))).await
    }

    /// Closes the link gracefully and waits until the socket is shut.
    pub async fn close(self, reason: CloseReason) {
        self.link().close(reason);
        poll_fn(|cx| self.owner.0.poll_finished(Some(cx))).await;
    }
}

impl RecvHalf {
    /// Why the link ended, once it has: after `recv` gave `Ok(None)`, the CLOSE's code
    /// and reason (e.g. code 6 when the peer revoked this node at a reload).
    pub fn close_cause(&self) -> Option<palisade_core::CloseCause> {
        self.owner.0.close_cause()
    }

    /// The peer as the link rests on it now (the key id changes with a re-join).
    pub fn current_peer(&self) -> Option<PeerInfo> {
        self.owner.0.current_peer()
    }

    /// The next frame; `Ok(None)` once the peer closed gracefully.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        poll_fn(|cx| self.owner.0.poll_recv(Some(cx))).await
    }

    /// Appends the frames that have arrived, in order, up to `max` (a `max` of 0 counts
    /// as 1), to `out`, waiting for at least one: returns how many. `Ok(0)` once the
    /// peer closed gracefully (as `recv`'s `Ok(None)`), `Err` when the link ended with
    /// an error.
    ///
    /// Why: `recv` takes the link's lock, counts the frame and reopens the receive
    /// window (waking the driver) for each frame; this does that once per batch.
    pub async fn recv_many(&mut self, out: &mut Vec<Bytes>, max: usize) -> Result<usize, Error> {
        poll_fn(|cx| self.owner.0.poll_recv_many(out, max, Some(cx))).await
    }
}

impl Stream for RecvHalf {
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.owner.0.poll_recv(Some(cx)).map(Result::transpose)
    }
}

impl Stream for Connection {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.recv).poll_next(cx)
    }
}

impl Sink<Bytes> for SendHalf {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = &mut *self;
        this.owner.0.poll_send(&mut this.pending, Some(cx))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Error> {
        // `poll_ready` returned Ready, so nothing is pending; queue now if there is room,
        // else keep it for the next poll.
        let this = &mut *self;
        this.pending = Some(item);
        match this.owner.0.poll_send(&mut this.pending, None) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = &mut *self;
        if this.pending.is_some() {
            match this.owner.0.poll_send(&mut this.pending, Some(cx)) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        this.owner.0.poll_flushed(Some(cx))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        self.link().close(CloseReason::default());
        self.owner.0.poll_finished(Some(cx)).map(Ok)
    }
}

impl Sink<Bytes> for Connection {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.send).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Error> {
        Pin::new(&mut self.send).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Pin::new(&mut self.send).poll_close(cx)
    }
}

// The futures of both halves can move between threads (multi-threaded runtimes).
#[allow(dead_code)]
fn futures_are_send(send: &mut SendHalf, recv: &mut RecvHalf) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&send.send(Bytes::new()));
    is_send(&send.send_many(&[]));
    is_send(&recv.recv());
    is_send(&recv.recv_many(&mut Vec::new(), 1));
}

/// A socket that tells its admission [`Permit`] when the peer's first byte arrives (then
/// lets go of it): a connection that sent nothing is silent, not failed.
/// The read error of a connection whose source is over its new-connection rate.
pub(crate) fn over_rate() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "closed unread: its address is over new_connection_rate_per_source",
    )
}

struct Heard<S> {
    socket: S,
    permit: Option<Permit>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.socket).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(n)) if n > 0) {
            if let Some(permit) = this.permit.take() {
                if !permit.mark_heard(std::time::Instant::now()) {
                    return Poll::Ready(Err(over_rate()));
                }
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_close(cx)
    }
}
