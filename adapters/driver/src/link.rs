//! One link's shared state: the core connection behind a mutex, plus the bookkeeping
//! every adapter needs (input the core could not take yet, the socket's fate, who waits
//! for what). The socket side (a driver task or thread) and the application side
//! (send / recv / close, possibly from different tasks or threads) meet here.
//!
//! Waiting works for both worlds: async callers register wakers, blocking callers wait
//! on the condition variable; every change wakes both.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use palisade_core::{CloseCause, CloseReason, Connection, Event, PeerInfo, SendError};

use crate::error::Error;
use crate::metrics::Tally;
use crate::observe::{LinkObserver, Stage};

/// Most bytes [`Link::output`] takes from the core per call.
const OUTPUT_BATCH: usize = 64 * 1024;

/// Longest a failed join waits, before `connect` / `establish` report the failure, for the
/// driver to write what the peer is owed (REJECT or CLOSE, TLS close_notify) and shut the
/// socket's write side.
///
/// Why so short: the refusal is at most ~1.1 KiB, written into a socket that carried only
/// the handshake, so the kernel takes it at once from any peer that is alive; the wait is
/// scheduling latency (well under 10 ms even on a loaded machine). It runs out only
/// against a peer whose receive window is closed, and waiting longer for such a peer
/// gains nothing while it holds up a caller that wants to retry or exit. The driver
/// itself keeps trying for up to its flush deadline after this.
pub const REFUSAL_FLUSH: Duration = Duration::from_secs(1);

/// Wakers of the tasks waiting for one kind of change.
#[derive(Debug, Default)]
struct Waiters(Vec<Waker>);

impl Waiters {
    fn register(&mut self, waker: &Waker) {
        if !self.0.iter().any(|w| w.will_wake(waker)) {
            self.0.push(waker.clone());
        }
    }

    fn wake(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// Socket bytes the core did not take yet (its receive window was full, or frames
    /// it handed over still wait in `taken`).
    pending_input: BytesMut,
    /// Frames taken from the core in one batch beyond what the application asked for
    /// (`poll_recv_many`'s `max`), handed out first. While any wait here they still count
    /// against the receive window: the core gets no input until they are gone.
    taken: VecDeque<Bytes>,
    peer: Option<PeerInfo>,
    /// The `Closed` event, once the application side has seen it.
    ended: Option<CloseCause>,
    io_error: Option<(io::ErrorKind, String)>,
    /// The driver has written everything it will write and shut the socket's write
    /// side (or gave up on a peer that does not read).
    write_closed: bool,
    /// The socket is shut and the driver has stopped.
    finished: bool,
    /// Counts changes the application side may wait for (for blocking waits).
    generation: u64,
    /// Threads blocked in `wait_until`: the condition variable is notified only when
    /// there are some (a notify is a syscall even with no waiter).
    sleepers: usize,
    /// Application tasks (join, recv, send, close) waiting for a change.
    app: Waiters,
    /// The socket side waiting for something to write or for room to read.
    driver: Waiters,
    /// Where the link stands for the gauges (handshakes in progress, links open).
    stage: Stage,
    /// Frames and payload bytes not yet added to the node's counters.
    tally: Tally,
}

/// One link's shared state. Wrap it in an `Arc`.
#[derive(Debug)]
pub struct Link {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Closed by the listener to make room: the socket is dropped at once, no linger.
    /// Outside the lock: the driver checks it on every step.
    aborted: AtomicBool,
    /// The link's span and its node's counters.
    observer: LinkObserver,
}

/// What the application side gets from [`Link::poll_recv`].
pub(crate) type Recv = Result<Option<Bytes>, Error>;

/// Where [`Link::poll_take`] puts the frames it takes.
enum Take<'a> {
    /// One frame ([`Link::poll_recv`]): taken from the core event by event, so the
    /// frames behind it stay in the core's receive window, which refills as each one is
    /// taken.
    One(&'a mut Option<Bytes>),
    /// Up to `max` frames appended to the vector ([`Link::poll_recv_many`]), from its
    /// length when the call began.
    Many(&'a mut Vec<Bytes>, usize, usize),
}

impl Take<'_> {
    /// Takes the frames that are ready (those left over from an earlier batch first);
    /// whether any were.
    fn take_frames(&mut self, inner: &mut Inner) -> bool {
        match self {
            Take::One(slot) => {
                if slot.is_none() {
                    **slot = inner.taken.pop_front();
                }
                slot.is_some()
            }
            Take::Many(out, max, start) => {
                let room = (*start + *max).saturating_sub(out.len());
                if !inner.taken.is_empty() {
                    let n = room.min(inner.taken.len());
                    out.extend(inner.taken.drain(..n));
                } else if inner.conn.poll_frames(out) > 0 {
                    // The core hands over every ready frame: keep what the caller did not
                    // ask for (in order, before anything the core has later).
                    let keep = (*start + *max).min(out.len());
                    if out.len() > keep {
                        inner.taken.extend(out.drain(keep..));
                    }
                }
                out.len() > *start
            }
        }
    }

    /// A frame `poll_event` returned (the core hands frames over by events too).
    fn put(&mut self, inner: &mut Inner, frame: Bytes) {
        match self {
            Take::One(slot) if slot.is_none() => **slot = Some(frame),
            Take::Many(out, max, start) if out.len() < *start + *max => out.push(frame),
            _ => inner.taken.push_back(frame),
        }
    }

    /// Frames and payload bytes taken.
    fn size(&self) -> (u64, u64) {
        match self {
            Take::One(slot) => (1, slot.as_ref().map_or(0, |f| f.len() as u64)),
            Take::Many(out, _, start) => {
                let taken = out.get(*start..).unwrap_or_default();
                (
                    taken.len() as u64,
                    taken.iter().map(|f| f.len() as u64).sum(),
                )
            }
        }
    }
}

impl Link {
    /// A link around a fresh core connection, neither counted nor with a span.
    pub fn new(conn: Connection) -> Self {
        Self::observed(conn, LinkObserver::default())
    }

    /// A link counted in `observer`'s metrics and recorded in its span.
    pub fn observed(conn: Connection, observer: LinkObserver) -> Self {
        observer.handshake_started();
        Self {
            inner: Mutex::new(Inner {
                conn,
                pending_input: BytesMut::new(),
                taken: VecDeque::new(),
                peer: None,
                ended: None,
                io_error: None,
                write_closed: false,
                finished: false,
                generation: 0,
                sleepers: 0,
                app: Waiters::default(),
                driver: Waiters::default(),
                stage: Stage::Handshaking,
                tally: Tally::default(),
            }),
            changed: Condvar::new(),
            aborted: AtomicBool::new(false),
            observer,
        }
    }

    /// The link's span and counters.
    pub fn observer(&self) -> &LinkObserver {
        &self.observer
    }

    /// The join completed: counted once, recorded in the span.
    fn on_joined(&self, inner: &mut Inner, peer: &PeerInfo) {
        if inner.stage == Stage::Handshaking {
            let open = !inner.finished;
            inner.stage = if open { Stage::Open } else { Stage::Done };
            self.observer.joined(inner.conn.side(), peer, open);
        }
    }

    /// The join failed with `error`: counted once, recorded in the span.
    fn on_join_failed(&self, inner: &mut Inner, error: &Error) {
        if inner.stage == Stage::Handshaking {
            inner.stage = Stage::Done;
            self.observer.handshake_failed(error);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the core in a consistent state (every
        // core call is atomic from the outside), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the application side (after a socket-side change).
    fn app_changed(&self, inner: &mut Inner) {
        inner.generation = inner.generation.wrapping_add(1);
        inner.app.wake();
        if inner.sleepers > 0 {
            self.changed.notify_all();
        }
    }

    /// Wakes both sides (after an application-side change).
    fn all_changed(&self, inner: &mut Inner) {
        inner.driver.wake();
        self.app_changed(inner);
    }

    // ----- the socket side -----

    /// Bytes read from the socket. Returns whether the link takes more input now (when
    /// not, stop reading until [`Link::wants_input`] says so).
    pub fn input(&self, bytes: &[u8], now: Instant) -> bool {
        let mut g = self.lock();
        let inner = &mut *g;
        // A socket read is a batch boundary.
        self.observer.flush(&mut inner.tally);
        if inner.pending_input.is_empty() && inner.taken.is_empty() {
            let n = inner.conn.handle_input(bytes, now);
            if let Some(rest) = bytes.get(n..) {
                inner.pending_input.extend_from_slice(rest);
            }
        } else {
            inner.pending_input.extend_from_slice(bytes);
            if inner.taken.is_empty() {
                Self::retry_input(inner, now);
            }
        }
        self.app_changed(inner);
        inner.pending_input.is_empty()
    }

    fn retry_input(inner: &mut Inner, now: Instant) {
        while !inner.pending_input.is_empty() {
            let n = inner.conn.handle_input(&inner.pending_input, now);
            if n == 0 {
                break;
            }
            inner.pending_input.advance(n);
        }
        if inner.pending_input.is_empty() {
            // Back to reading straight from the socket: let go of the leftover buffer.
            inner.pending_input = BytesMut::new();
        }
    }

    /// Whether the socket should be read (the core has room and the link is not over).
    /// Registers `waker` to hear when that changes.
    pub fn wants_input(&self, waker: Option<&Waker>) -> bool {
        let mut g = self.lock();
        if let Some(w) = waker {
            g.driver.register(w);
        }
        g.pending_input.is_empty() && !g.conn.is_closed()
    }

    /// The socket reached end of stream.
    pub fn eof(&self) {
        let mut g = self.lock();
        g.conn.handle_eof();
        self.app_changed(&mut g);
    }

    /// The socket failed. The link ends; callers see this error.
    pub fn io_error(&self, err: &io::Error) {
        let mut g = self.lock();
        if g.io_error.is_none() && !g.conn.is_closed() {
            g.io_error = Some((err.kind(), err.to_string()));
        }
        g.conn.handle_eof();
        self.app_changed(&mut g);
    }

    /// Moves what the core wants written into `out`, and registers `waker` to hear of
    /// new output. Wakes senders waiting for room.
    pub fn output(&self, out: &mut VecDeque<Bytes>, waker: Option<&Waker>) {
        let mut g = self.lock();
        if let Some(w) = waker {
            g.driver.register(w);
        }
        // Taking output is a batch boundary.
        self.observer.flush(&mut g.tally);
        let before = out.len();
        // A batch at a time: encrypting the whole send buffer (1 MiB) under the lock
        // stalls the sender (and, on a small runtime, the worker it runs on) and delays
        // the first byte on the wire.
        let mut taken = 0;
        while taken < OUTPUT_BATCH {
            let Some(chunk) = g.conn.poll_transmit() else {
                break;
            };
            taken += chunk.len();
            out.push_back(chunk);
        }
        if out.len() > before {
            self.app_changed(&mut g);
        }
    }

    /// When [`Link::timeout`] is due, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.lock().conn.poll_timeout()
    }

    /// A deadline passed.
    pub fn timeout(&self, now: Instant) {
        let mut g = self.lock();
        g.conn.handle_timeout(now);
        self.app_changed(&mut g);
    }

    /// Whether the link is over and everything owed to the peer has been handed out:
    /// the socket can be shut down.
    pub fn is_drained(&self) -> bool {
        self.lock().conn.is_drained()
    }

    /// Ends the link at once (an eviction): the core is closed with `reason` and the
    /// driver drops the socket without flushing or lingering.
    pub fn abort(&self, reason: CloseReason) {
        self.aborted.store(true, Ordering::Release);
        let mut g = self.lock();
        g.conn.close(reason);
        self.all_changed(&mut g);
    }

    /// Whether [`Link::abort`] was called.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Why the link ended (a CLOSE's code and reason, ours or the peer's, or the error),
    /// once it has.
    pub fn close_cause(&self) -> Option<CloseCause> {
        let g = self.lock();
        g.ended.clone().or_else(|| g.conn.close_cause().cloned())
    }

    /// What the link rests on now: the join's peer info, with the key id of the last
    /// re-join (PROTOCOL.md §5.8).
    pub fn current_peer(&self) -> Option<PeerInfo> {
        self.lock().conn.peer().cloned()
    }

    /// New settings (the listener or dialer reloaded): the core decides the peer again
    /// (`Connection::update_settings`), and whoever waits is woken to move what it
    /// queued (a CLOSE, a REJOIN).
    pub fn update_settings(&self, endpoint: &palisade_core::Endpoint, now: Instant) {
        let mut g = self.lock();
        g.conn.update_settings(endpoint, now);
        self.all_changed(&mut g);
    }

    /// Whether the link ever joined (it may be over now).
    pub fn ever_joined(&self) -> bool {
        let g = self.lock();
        g.peer.is_some() || g.conn.peer().is_some()
    }

    /// Whether the link is over (bytes owed to the peer may remain).
    pub fn is_closed(&self) -> bool {
        self.lock().conn.is_closed()
    }

    /// The driver has written its last bytes (or given up on them) and shut the
    /// socket's write side: whatever the peer was owed is with the kernel now.
    pub fn write_closed(&self) {
        let mut g = self.lock();
        g.write_closed = true;
        self.app_changed(&mut g);
    }

    /// The driver shut the socket and stopped.
    pub fn finish(&self) {
        let mut g = self.lock();
        g.finished = true;
        if !g.conn.is_closed() {
            g.conn.handle_eof();
        }
        let inner = &mut *g;
        self.observer.flush(&mut inner.tally);
        if inner.stage == Stage::Open {
            inner.stage = Stage::Done;
            let io = inner.io_error.as_ref().map(|(_, msg)| msg.as_str());
            let cause = inner.ended.as_ref().or(inner.conn.close_cause());
            self.observer.closed(cause, io);
        }
        self.app_changed(&mut g);
    }

    // ----- the application side -----

    fn io_err(inner: &Inner) -> Option<Error> {
        inner
            .io_error
            .as_ref()
            .map(|(kind, msg)| Error::Io(io::Error::new(*kind, msg.clone())))
    }

    /// The error for an ended link.
    fn ended_error(inner: &Inner) -> Error {
        if let Some(e) = Self::io_err(inner) {
            return e;
        }
        match inner.ended.as_ref().or(inner.conn.close_cause()) {
            Some(cause) => Error::from_cause(cause),
            None => Error::Closed(CloseCause::Local(CloseReason::default())),
        }
    }

    /// Ready once the join completed (or failed).
    pub fn poll_joined(&self, cx: Option<&Context<'_>>) -> Poll<Result<PeerInfo, Error>> {
        let mut g = self.lock();
        if let Some(peer) = &g.peer {
            return Poll::Ready(Ok(peer.clone()));
        }
        if g.ended.is_some() {
            let error = Self::ended_error(&g);
            self.on_join_failed(&mut g, &error);
            return Poll::Ready(Err(error));
        }
        match g.conn.poll_event() {
            Some(Event::Joined(peer)) => {
                self.on_joined(&mut g, &peer);
                g.peer = Some(peer.clone());
                Poll::Ready(Ok(peer))
            }
            Some(Event::Closed(cause)) => {
                g.ended = Some(cause);
                let error = Self::ended_error(&g);
                self.on_join_failed(&mut g, &error);
                Poll::Ready(Err(error))
            }
            // Frames and re-joins come only after Joined; nothing else can be first.
            Some(Event::Frame(_) | Event::Rejoined(_)) | None => {
                if let Some(cx) = cx {
                    g.app.register(cx.waker());
                }
                Poll::Pending
            }
        }
    }

    /// The next frame: `Ok(Some)` a frame, `Ok(None)` the link closed gracefully,
    /// `Err` it ended with an error.
    pub fn poll_recv(&self, cx: Option<&Context<'_>>) -> Poll<Recv> {
        let mut frame = None;
        self.poll_take(Take::One(&mut frame), cx)
            .map(|ended| ended.map(|()| frame))
    }

    /// Up to `max` frames (at least one; a `max` of 0 counts as 1) appended to `out`:
    /// `Ok(n)` how many, `Ok(0)` the link closed gracefully, `Err` it ended with an
    /// error. The batch form of [`Link::poll_recv`], with the same events, counts and
    /// end: every frame that is ready is taken from the core in one call under one lock,
    /// tallied at once, and the receive window reopened (and the driver woken) once per
    /// batch instead of once per frame.
    pub fn poll_recv_many(
        &self,
        out: &mut Vec<Bytes>,
        max: usize,
        cx: Option<&Context<'_>>,
    ) -> Poll<Result<usize, Error>> {
        let before = out.len();
        self.poll_take(Take::Many(out, max.max(1), before), cx)
            .map(|ended| ended.map(|()| out.len() - before))
    }

    /// What [`Link::poll_recv`] and [`Link::poll_recv_many`] share: handles the events in
    /// front of the frames, takes the frames into `into`, tallies them and reopens the
    /// receive window. `Ready(Ok(()))` with nothing taken: the link closed gracefully.
    fn poll_take(&self, mut into: Take<'_>, cx: Option<&Context<'_>>) -> Poll<Result<(), Error>> {
        let mut g = self.lock();
        let inner = &mut *g;
        while inner.ended.is_none() {
            if into.take_frames(inner) {
                let (frames, bytes) = into.size();
                inner.tally.frames_received += frames;
                inner.tally.bytes_received += bytes;
                if inner.tally.is_full() {
                    self.observer.flush(&mut inner.tally);
                }
                if !inner.pending_input.is_empty() && inner.taken.is_empty() {
                    // The receive window has room again.
                    Self::retry_input(inner, Instant::now());
                    self.all_changed(inner);
                }
                return Poll::Ready(Ok(()));
            }
            match inner.conn.poll_event() {
                Some(Event::Frame(frame)) => into.put(inner, frame),
                Some(Event::Joined(peer)) => {
                    self.on_joined(inner, &peer);
                    inner.peer = Some(peer);
                }
                Some(Event::Rejoined(peer)) => {
                    self.observer.rejoined(&peer);
                    inner.peer = Some(peer);
                }
                Some(Event::Closed(cause)) => inner.ended = Some(cause),
                None => {
                    // The application has taken everything that arrived: a batch.
                    self.observer.flush(&mut inner.tally);
                    if let Some(cx) = cx {
                        inner.app.register(cx.waker());
                    }
                    return Poll::Pending;
                }
            }
        }
        self.observer.flush(&mut inner.tally);
        match &inner.ended {
            Some(CloseCause::Error(_)) => Poll::Ready(Err(Self::ended_error(inner))),
            _ if inner.io_error.is_some() => Poll::Ready(Err(Self::ended_error(inner))),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Queues a frame, or hands it back (`Pending`) when the send buffer is full.
    pub fn poll_send(
        &self,
        payload: &mut Option<Bytes>,
        cx: Option<&Context<'_>>,
    ) -> Poll<Result<(), Error>> {
        let Some(frame) = payload.take() else {
            return Poll::Ready(Ok(()));
        };
        match self.poll_send_many(std::slice::from_ref(&frame), cx) {
            Poll::Ready(result) => Poll::Ready(result.map(|_| ())),
            Poll::Pending => {
                *payload = Some(frame);
                Poll::Pending
            }
        }
    }

    /// Queues as many frames from the front of `frames` as fit in the send buffer and
    /// returns how many (`Ready(Ok(0))` only for an empty `frames`); `Pending` when not
    /// even the first fits (`cx` is woken when there is room). The batch form of
    /// [`Link::poll_send`]: one lock, one tally and one wake of the driver per batch
    /// instead of per frame, and small frames are copied next to their headers in one
    /// go (`palisade_core::Connection::send_frames`).
    pub fn poll_send_many(
        &self,
        frames: &[Bytes],
        cx: Option<&Context<'_>>,
    ) -> Poll<Result<usize, Error>> {
        if frames.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut g = self.lock();
        if g.conn.is_closed() {
            return Poll::Ready(Err(Self::ended_error(&g)));
        }
        match g.conn.send_frames(frames) {
            Ok(n) => {
                let sent = frames.get(..n).unwrap_or_default();
                g.tally.frames_sent += n as u64;
                g.tally.bytes_sent += sent.iter().map(|f| f.len() as u64).sum::<u64>();
                if g.tally.is_full() {
                    self.observer.flush(&mut g.tally);
                }
                g.driver.wake();
                Poll::Ready(Ok(n))
            }
            Err(SendError::Full(_)) => {
                if let Some(cx) = cx {
                    g.app.register(cx.waker());
                }
                // The driver may be idle with bytes queued: let it write them.
                g.driver.wake();
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(Error::Send(e))),
        }
    }

    /// Ready when everything queued has been handed to the socket.
    pub fn poll_flushed(&self, cx: Option<&Context<'_>>) -> Poll<Result<(), Error>> {
        let mut g = self.lock();
        if g.conn.send_buffered() == 0 {
            return Poll::Ready(Ok(()));
        }
        if g.finished {
            return Poll::Ready(Err(Self::ended_error(&g)));
        }
        if let Some(cx) = cx {
            g.app.register(cx.waker());
        }
        g.driver.wake();
        Poll::Pending
    }

    /// Starts a graceful close: queued frames, then CLOSE (and TLS close_notify).
    pub fn close(&self, reason: CloseReason) {
        let mut g = self.lock();
        g.conn.close(reason);
        self.all_changed(&mut g);
    }

    /// Ready when the driver has shut the socket.
    pub fn poll_finished(&self, cx: Option<&Context<'_>>) -> Poll<()> {
        let mut g = self.lock();
        if g.finished {
            return Poll::Ready(());
        }
        if let Some(cx) = cx {
            g.app.register(cx.waker());
        }
        Poll::Pending
    }

    /// Ready once the driver has written its last bytes and shut the socket's write side
    /// (see [`Link::write_closed`]), or has stopped.
    pub fn poll_write_closed(&self, cx: Option<&Context<'_>>) -> Poll<()> {
        let mut g = self.lock();
        if g.write_closed || g.finished {
            return Poll::Ready(());
        }
        if let Some(cx) = cx {
            g.app.register(cx.waker());
        }
        Poll::Pending
    }

    /// Blocks until the driver has written its last bytes and shut the socket's write
    /// side, or `within` passes. For a failed join, before reporting it (see
    /// [`REFUSAL_FLUSH`]).
    pub fn wait_write_closed(&self, within: Duration) {
        let _ = self.wait_until(Some(Instant::now() + within), |l| l.poll_write_closed(None));
    }

    /// What the join revealed about the peer (after the join).
    pub fn peer(&self) -> Option<PeerInfo> {
        self.lock().peer.clone()
    }

    /// Blocks the calling thread until `poll` is ready. For the blocking adapter.
    pub fn wait<T>(&self, mut poll: impl FnMut(&Self) -> Poll<T>) -> T {
        loop {
            if let Some(v) = self.wait_until(None, &mut poll) {
                return v;
            }
        }
    }

    /// Blocks until `poll` is ready or `deadline` passes (`None`).
    pub fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut poll: impl FnMut(&Self) -> Poll<T>,
    ) -> Option<T> {
        loop {
            let seen = self.lock().generation;
            if let Poll::Ready(v) = poll(self) {
                return Some(v);
            }
            // Every change bumps the generation under the lock, so one that happened
            // after the check is not missed.
            let mut g = self.lock();
            let unchanged = |inner: &mut Inner| inner.generation == seen;
            g.sleepers += 1;
            let mut g = match deadline {
                None => self
                    .changed
                    .wait_while(g, unchanged)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        g.sleepers -= 1;
                        return None;
                    }
                    self.changed
                        .wait_timeout_while(g, left, unchanged)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            g.sleepers -= 1;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // However the link goes (its driver never ran, say), the gauges let go of it.
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        self.observer.flush(&mut inner.tally);
        match inner.stage {
            Stage::Handshaking => {
                let error = Self::ended_error(inner);
                self.observer.handshake_failed(&error);
            }
            Stage::Open => self.observer.closed(inner.conn.close_cause(), None),
            Stage::Done => {}
        }
        inner.stage = Stage::Done;
    }
}

impl crate::follow::Follows for Link {
    fn follow(&self, endpoint: &palisade_core::Endpoint, now: Instant) {
        self.update_settings(endpoint, now);
    }
}
