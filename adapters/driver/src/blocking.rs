//! The socket loop for blocking std sockets: one reader thread per link (reads, timers
//! through the socket's read timeout), and writes done by whichever thread has bytes to
//! send, under one writer lock so chunks never interleave.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_core::{CloseCode, CloseReason, Endpoint, PeerInfo};

use crate::admission::Permit;
use crate::dial::Dial;
use crate::driver::{closing_bounds, READ_BUF};
use crate::error::Error;
use crate::link::{Link, REFUSAL_FLUSH};
use crate::observe::{link_span, LinkObserver};
use crate::outgoing::{consume, Gathered};

/// Longest a reader thread blocks in `read` before it looks at the link again.
const MAX_READ_WAIT: Duration = Duration::from_secs(1);

/// A socket write blocks at most this long before the writer looks again; the reader
/// thread never waits longer than this on a peer that does not read.
const WRITE_SLICE: Duration = Duration::from_millis(50);

/// The socket's write side and the bytes taken from the core but not yet written.
#[derive(Debug)]
struct Writer {
    stream: TcpStream,
    out: VecDeque<Bytes>,
}

/// One blocking link: the shared state and the socket's write side.
#[derive(Debug)]
struct Shared {
    link: Link,
    writer: Mutex<Writer>,
}

impl Shared {
    /// The link is over and every byte owed to the peer has been written.
    fn is_drained(&self) -> bool {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.out.is_empty() && self.link.is_drained()
    }

    /// Writes what the core has queued. Holding the writer lock while taking the output
    /// keeps chunks in order when several threads flush. `wait`: keep going while the
    /// peer is slow (a sender); otherwise give up after one write slice (the reader
    /// thread, which must get back to reading).
    fn flush(&self, wait: bool) -> Result<(), Error> {
        loop {
            let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let w = &mut *guard;
            // Take more from the core only once the socket took what we hold, so the
            // core's send buffer stays the bound on memory.
            if w.out.is_empty() {
                self.link.output(&mut w.out, None);
            }
            if w.out.is_empty() {
                return Ok(());
            }
            match write_some(&mut w.stream, &mut w.out) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if !wait {
                        return Ok(());
                    }
                    // The peer is slow. Let go of the lock between write slices, so the
                    // reader thread keeps reading (two blocking ends that both send
                    // would otherwise wait on each other forever).
                    drop(guard);
                    thread::yield_now();
                }
                Err(e) => {
                    w.out.clear();
                    self.link.io_error(&e);
                    return Err(Error::Io(e));
                }
            }
        }
    }
}

impl crate::follow::Follows for Shared {
    /// New settings: what the core queues (a CLOSE, a REJOIN) is written at once, and a
    /// link they closed has its write side shut, as `close` does.
    fn follow(&self, endpoint: &palisade_core::Endpoint, now: Instant) {
        self.link.update_settings(endpoint, now);
        if self.flush(false).is_ok() && self.is_drained() {
            let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let _ = w.stream.shutdown(Shutdown::Write);
        }
    }
}

fn write_some(w: &mut TcpStream, out: &mut VecDeque<Bytes>) -> io::Result<()> {
    while !out.is_empty() {
        let n = match w.write_vectored(Gathered::front(out).slices()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        consume(out, n);
    }
    Ok(())
}

/// The reader thread: input, timers, and the end of the socket.
fn run_reader(shared: &Shared, mut socket: TcpStream, permit: Option<&Permit>) {
    let mut buf = vec![0u8; READ_BUF];
    let mut give_up_at = None;
    loop {
        if shared.flush(false).is_err() {
            break;
        }
        if shared.is_drained() {
            break;
        }
        let now = Instant::now();
        let deadline = if shared.link.is_closed() {
            let flush = closing_bounds(shared.link.ever_joined()).1;
            Some(*give_up_at.get_or_insert(now + flush))
        } else {
            shared.link.deadline()
        };
        if deadline.is_some_and(|d| d <= now) {
            if shared.link.is_closed() {
                break;
            }
            shared.link.timeout(now);
            continue;
        }
        if !shared.link.wants_input(None) {
            // The receive window is full (or the link is over but not flushed): wait
            // for the application to take frames, or for the deadline.
            shared.link.wait_until(deadline, |l| {
                if l.wants_input(None) || l.is_drained() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            continue;
        }
        // Re-check the link at least every second: the application may close it while
        // this thread waits for bytes.
        let timeout = deadline
            .map_or(MAX_READ_WAIT, |d| d.saturating_duration_since(now))
            .clamp(Duration::from_millis(1), MAX_READ_WAIT);
        if socket.set_read_timeout(Some(timeout)).is_err() {
            break;
        }
        match socket.read(&mut buf) {
            Ok(0) => shared.link.eof(),
            Ok(n) => {
                // The peer is no longer silent (admission tells the two apart).
                if let Some(permit) = permit {
                    if !permit.mark_heard(Instant::now()) {
                        shared.link.io_error(&crate::conn::over_rate());
                        continue;
                    }
                }
                shared
                    .link
                    .input(buf.get(..n).unwrap_or_default(), Instant::now());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => shared.link.io_error(&e),
        }
    }
    // Shut our side, then read until the peer's EOF (bounded) so our last bytes are not
    // destroyed by a reset.
    let _ = socket.shutdown(Shutdown::Write);
    shared.link.write_closed();
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let until = Instant::now() + closing_bounds(shared.link.ever_joined()).0;
    while Instant::now() < until {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    shared.link.finish();
}

/// Closes the link when the application has dropped every handle on it.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.link.close(CloseReason::new(
            CloseCode::Normal,
            "the connection was dropped",
        ));
        let _ = self.0.flush(false);
    }
}

/// A joined link over a blocking socket.
#[derive(Debug)]
pub struct BlockingConnection {
    send: BlockingSendHalf,
    recv: BlockingRecvHalf,
    peer: PeerInfo,
}

/// The sending half of a [`BlockingConnection`].
#[derive(Debug)]
pub struct BlockingSendHalf {
    owner: Arc<Owner>,
}

/// The receiving half of a [`BlockingConnection`].
#[derive(Debug)]
pub struct BlockingRecvHalf {
    owner: Arc<Owner>,
}

/// Starts the reader thread for `conn` over `socket` and waits for the join (the
/// handshake deadline bounds the wait).
///
/// When the join fails, the error is returned only once what the peer is owed (a REJECT
/// or CLOSE, then TLS close_notify) has been written and the socket's write side shut,
/// or [`REFUSAL_FLUSH`] has passed (a peer that does not read): a caller that exits on
/// the error still leaves the peer the reason, not a bare EOF. A successful join returns
/// at once.
///
/// The link has a span naming the socket's peer address, and is not counted: dialers
/// use [`establish_blocking_dialed`], listeners [`establish_blocking_admitted`].
pub fn establish_blocking(
    socket: TcpStream,
    conn: palisade_core::Connection,
) -> Result<BlockingConnection, Error> {
    let peer = socket.peer_addr().ok();
    let span = link_span(conn.side(), peer.as_ref().map(|p| p as _));
    establish_inner(socket, conn, None, LinkObserver::new(None, span))
}

/// [`establish_blocking`] for a socket connected as `dial` says: the core connection is
/// made from `endpoint` for `dial`, the span names the address dialed, and the link is
/// counted in the dial's [`Dial::metrics`], if any.
pub fn establish_blocking_dialed(
    socket: TcpStream,
    endpoint: &Endpoint,
    dial: &Dial,
) -> Result<BlockingConnection, Error> {
    let conn = dial.connection(endpoint)?;
    establish_inner(socket, conn, None, dial.observer())
}

/// [`establish_blocking`] for a connection a listener admitted: the reader thread holds
/// `permit` until the socket is closed, and an eviction shuts the socket at once.
pub fn establish_blocking_admitted(
    socket: TcpStream,
    conn: palisade_core::Connection,
    permit: Permit,
) -> Result<BlockingConnection, Error> {
    let observer = permit.observer().clone();
    establish_inner(socket, conn, Some(permit), observer)
}

fn establish_inner(
    socket: TcpStream,
    conn: palisade_core::Connection,
    permit: Option<Permit>,
    observer: LinkObserver,
) -> Result<BlockingConnection, Error> {
    let span = observer.span().clone();
    let _in_span = span.enter();
    let writer = socket.try_clone()?;
    writer.set_write_timeout(Some(WRITE_SLICE))?;
    let shared = Arc::new(Shared {
        link: Link::observed(conn, observer),
        writer: Mutex::new(Writer {
            stream: writer,
            out: VecDeque::new(),
        }),
    });
    let follower: Arc<dyn crate::follow::Follows> = shared.clone();
    shared.link.observer().register(Arc::downgrade(&follower));
    let owner = Arc::new(Owner(Arc::clone(&shared)));
    if let Some(permit) = &permit {
        let weak = Arc::downgrade(&shared);
        permit.on_evict(move || {
            if let Some(shared) = weak.upgrade() {
                shared.link.close(CloseReason::new(
                    CloseCode::ShuttingDown,
                    "too many connections are waiting to join; this one was evicted (its source held the most, and it had sent nothing or was oldest)",
                ));
                let _ = shared.flush(false);
                // Wakes the reader thread out of its blocking read at once.
                let w = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
                let _ = w.stream.shutdown(Shutdown::Both);
            }
        });
    }
    let reader = Arc::clone(&shared);
    let reader_span = span.clone();
    thread::Builder::new()
        .name("palisade-reader".into())
        .spawn(move || {
            let _in_span = reader_span.enter();
            run_reader(&reader, socket, permit.as_ref());
            // The listener's slot is given back once this thread's socket is closed.
            drop(reader);
            drop(permit);
        })?;
    let peer = match shared.link.wait(|l| l.poll_joined(None)) {
        Ok(peer) => peer,
        Err(e) => {
            // What the peer is owed reaches the socket before the caller hears of the
            // failure (and may exit).
            shared.link.wait_write_closed(REFUSAL_FLUSH);
            return Err(e);
        }
    };
    Ok(BlockingConnection {
        send: BlockingSendHalf {
            owner: Arc::clone(&owner),
        },
        recv: BlockingRecvHalf { owner },
        peer,
    })
}

impl BlockingConnection {
    /// What the join established about the peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Sends a frame; blocks while the socket does not take bytes (memory stays bounded).
    pub fn send(&self, frame: Bytes) -> Result<(), Error> {
        self.send.send(frame)
    }

    /// The next frame; `Ok(None)` once the peer closed gracefully.
    pub fn recv(&self) -> Result<Option<Bytes>, Error> {
        self.recv.recv()
    }

    /// Sends frames from the front of `frames`, as many as fit, blocking while none does
    /// (see [`BlockingSendHalf::send_many`]). Returns how many were queued.
    pub fn send_many(&self, frames: &[Bytes]) -> Result<usize, Error> {
        self.send.send_many(frames)
    }

    /// Appends up to `max` received frames to `out`, blocking until there is at least
    /// one (see [`BlockingRecvHalf::recv_many`]). Returns how many; `Ok(0)` once the
    /// peer closed gracefully.
    pub fn recv_many(&self, out: &mut Vec<Bytes>, max: usize) -> Result<usize, Error> {
        self.recv.recv_many(out, max)
    }

    /// Why the link ended, once it has (see [`BlockingRecvHalf::close_cause`]).
    pub fn close_cause(&self) -> Option<palisade_core::CloseCause> {
        self.recv.close_cause()
    }

    /// The peer as the link rests on it now (the key id changes with a re-join).
    pub fn current_peer(&self) -> Option<PeerInfo> {
        self.recv.current_peer()
    }

    /// Closes gracefully and waits until the socket is shut.
    pub fn close(self, reason: CloseReason) {
        self.send.close(reason);
    }

    /// Splits into halves for different threads.
    pub fn split(self) -> (BlockingSendHalf, BlockingRecvHalf) {
        (self.send, self.recv)
    }
}

impl BlockingSendHalf {
    fn shared(&self) -> &Shared {
        &self.owner.0
    }

    /// Sends a frame; blocks while the socket does not take bytes.
    pub fn send(&self, frame: Bytes) -> Result<(), Error> {
        self.send_many(std::slice::from_ref(&frame)).map(|_| ())
    }

    /// Sends frames from the front of `frames` (each its own frame, in order), as many
    /// as the send buffer takes, blocking while it takes none, then writes them: returns
    /// how many were sent, at least one unless `frames` is empty.
    ///
    /// Why: `send` takes the link's lock, counts the frame and writes to the socket for
    /// each frame; this does that once per batch.
    pub fn send_many(&self, frames: &[Bytes]) -> Result<usize, Error> {
        if frames.is_empty() {
            return Ok(0);
        }
        loop {
            match self.shared().link.poll_send_many(frames, None) {
                Poll::Ready(result) => {
                    let sent = result?;
                    self.shared().flush(true)?;
                    return Ok(sent);
                }
                // Full: writing is what makes room.
                Poll::Pending => self.shared().flush(true)?,
            }
        }
    }

    /// Closes gracefully and waits until the socket is shut (at most a few seconds when
    /// the peer stops answering).
    pub fn close(self, reason: CloseReason) {
        let shared = self.shared();
        shared.link.close(reason);
        if shared.flush(true).is_ok() && shared.is_drained() {
            // Our side is done: EOF tells the peer at once.
            let writer = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writer.stream.shutdown(Shutdown::Write);
        }
        shared.link.wait(|l| l.poll_finished(None));
    }
}

impl BlockingRecvHalf {
    /// Why the link ended, once it has: after `recv` gave `Ok(None)`, the CLOSE's code
    /// and reason.
    pub fn close_cause(&self) -> Option<palisade_core::CloseCause> {
        self.owner.0.link.close_cause()
    }

    /// The peer as the link rests on it now (the key id changes with a re-join).
    pub fn current_peer(&self) -> Option<PeerInfo> {
        self.owner.0.link.current_peer()
    }

    /// The next frame; `Ok(None)` once the peer closed gracefully.
    pub fn recv(&self) -> Result<Option<Bytes>, Error> {
        self.received(|l| l.poll_recv(None))
    }

    /// Appends the frames that have arrived, in order, up to `max` (a `max` of 0 counts
    /// as 1), to `out`, blocking until there is at least one: returns how many. `Ok(0)`
    /// once the peer closed gracefully (as `recv`'s `Ok(None)`), `Err` when the link
    /// ended with an error.
    ///
    /// Why: `recv` takes the link's lock, counts the frame and reopens the receive
    /// window (waking the reader thread) for each frame; this does that once per batch.
    pub fn recv_many(&self, out: &mut Vec<Bytes>, max: usize) -> Result<usize, Error> {
        self.received(|l| l.poll_recv_many(out, max, None))
    }

    /// Waits for `poll`, then writes what taking frames let the core queue.
    fn received<T>(&self, poll: impl FnMut(&Link) -> Poll<T>) -> T {
        let shared = &self.owner.0;
        let result = shared.link.wait(poll);
        // Taking a frame may have let the core answer or resume reading.
        let _ = shared.flush(false);
        result
    }
}

impl Iterator for BlockingRecvHalf {
    type Item = Result<Bytes, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.recv().transpose()
    }
}
