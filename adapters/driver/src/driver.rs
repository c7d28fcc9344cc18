//! The socket loop for async runtimes, written once over the `futures-io` traits and a
//! runtime's sleep: write what the core queued (vectored), read into one large buffer
//! and hand it to the core, fire the core's timer, and shut the socket when the link is
//! drained. Each async adapter spawns one per link.
//!
//! The read buffer belongs to the thread, not the link: a read is over when `poll_read`
//! returns, and the core takes (or decrypts) the bytes at once, keeping only what does
//! not fit its window. So an idle link holds no 64 KiB buffer of its own, and a new
//! link allocates and zeroes none.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};

use crate::admission::Permit;
use crate::link::Link;
use crate::outgoing::{consume, Gathered};

/// What an async runtime provides: a sleep and a way to run tasks.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The runtime's sleep future.
    type Sleep: Future<Output = ()> + Send + 'static;
    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;
    /// Runs `task` in the background.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static);
}

/// Bytes read from the socket per call: large reads keep syscalls few.
pub const READ_BUF: usize = 64 * 1024;

thread_local! {
    /// The read buffer of every driver polled on this thread.
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF].into_boxed_slice());
}

/// Runs `f` with this thread's read buffer (or, if it is somehow in use already, a
/// buffer of its own).
fn with_read_buf<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    READ_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(&mut buf),
        Err(_) => f(&mut vec![0; READ_BUF]),
    })
}

/// How long a closed link keeps reading (and discarding) after shutting its write side,
/// so the peer's last bytes do not turn our close into a reset that could destroy the
/// CLOSE frame in flight.
pub const LINGER: Duration = Duration::from_secs(2);

/// How long a closed link may take to hand its last bytes (REJECT, CLOSE) to a peer that
/// does not read before the socket is shut anyway.
pub const FLUSH_AFTER_CLOSE: Duration = Duration::from_secs(5);

/// [`LINGER`] for a link that never joined. What it owes the peer (a REJECT, a CLOSE)
/// is a few bytes written at once; a peer that is told reads them and closes within a
/// round trip. Seconds of lingering would let a flood of refused sockets hold file
/// descriptors long after their listener slot was given back.
pub const UNJOINED_LINGER: Duration = Duration::from_millis(250);

/// [`FLUSH_AFTER_CLOSE`] for a link that never joined: a peer that does not take a
/// few bytes of REJECT or CLOSE is not waited for.
pub const UNJOINED_FLUSH: Duration = Duration::from_millis(500);

/// The linger and flush bounds for a link: short unless it ever joined.
pub(crate) fn closing_bounds(joined: bool) -> (Duration, Duration) {
    if joined {
        (LINGER, FLUSH_AFTER_CLOSE)
    } else {
        (UNJOINED_LINGER, UNJOINED_FLUSH)
    }
}

/// Polls before the driver yields to other tasks even when it could go on.
const BUDGET: usize = 32;

/// Socket bytes (read plus written) one link moves per scheduling turn before it yields
/// to other tasks, by default: one bulk link then holds a runtime thread for well under
/// a millisecond at a time, so another link's small frames wait for a few such turns at
/// most instead of behind megabytes (issue 21: fairness between links).
pub const DEFAULT_TURN_BYTES: usize = 256 * 1024;

static TURN_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_TURN_BYTES);

/// Sets the bytes one link moves per scheduling turn ([`DEFAULT_TURN_BYTES`]), for every
/// driver of the process. For measuring what the bound costs and buys (`usize::MAX`:
/// only the poll count bounds a turn, as before the bound existed); not a tuning knob.
pub fn set_turn_bytes(bytes: usize) {
    TURN_BYTES.store(bytes.max(1), Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Moving bytes.
    Open,
    /// Shutting the write side.
    Closing,
    /// Reading and discarding until EOF or the linger deadline.
    Lingering(Instant),
}

/// Drives one link's socket until the link is over. Spawn it.
pub struct Driver<S, R: Runtime> {
    link: Arc<Link>,
    socket: S,
    runtime: R,
    out: VecDeque<Bytes>,
    sleep: Option<(Instant, Pin<Box<R::Sleep>>)>,
    phase: Phase,
    /// When the link was seen closed with bytes still to write.
    give_up_at: Option<Instant>,
    /// The listener's slot for this socket, given back when the driver (and with it the
    /// socket, dropped first) is gone.
    _permit: Option<Permit>,
    /// Socket bytes moved in this scheduling turn.
    turn: usize,
}

impl<S, R: Runtime> std::fmt::Debug for Driver<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("phase", &self.phase)
            .field("queued_chunks", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl<S, R> Driver<S, R>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    /// A driver for `link` over `socket`.
    pub fn new(link: Arc<Link>, socket: S, runtime: R) -> Self {
        Self {
            link,
            socket,
            runtime,
            out: VecDeque::new(),
            sleep: None,
            phase: Phase::Open,
            give_up_at: None,
            _permit: None,
            turn: 0,
        }
    }

    /// Holds `permit` until the socket is closed.
    pub fn holding(mut self, permit: Option<Permit>) -> Self {
        self._permit = permit;
        self
    }

    /// Writes queued bytes; `Ok(true)` if any were written.
    fn write(&mut self, cx: &mut Context<'_>) -> std::io::Result<bool> {
        let mut wrote = false;
        while !self.out.is_empty() {
            let gathered = Gathered::front(&self.out);
            match Pin::new(&mut self.socket).poll_write_vectored(cx, gathered.slices()) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    wrote = true;
                    self.turn += n;
                    consume(&mut self.out, n);
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(wrote)
    }

    /// Fires the core's timer (or the linger deadline); `true` if it fired.
    fn timer(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> bool {
        let Some(deadline) = deadline else {
            self.sleep = None;
            return false;
        };
        if self.sleep.as_ref().is_none_or(|(at, _)| *at != deadline) {
            self.sleep = Some((deadline, Box::pin(self.runtime.sleep_until(deadline))));
        }
        let Some((_, sleep)) = self.sleep.as_mut() else {
            return false;
        };
        if sleep.as_mut().poll(cx).is_ready() {
            self.sleep = None;
            return true;
        }
        false
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.link.is_aborted() {
            // Evicted: the socket goes now (so the listener's file descriptors stay
            // within its cap), nothing is owed to a peer that never spoke in time.
            return Poll::Ready(false);
        }
        let mut progress = false;
        match self.phase {
            Phase::Open => {
                // Take more from the core only once the socket took what we hold: the
                // core's send buffer is the only place bytes wait, so it bounds memory.
                if self.out.is_empty() {
                    self.link.output(&mut self.out, Some(cx.waker()));
                }
                match self.write(cx) {
                    Ok(w) => progress |= w,
                    Err(e) => {
                        self.link.io_error(&e);
                        self.out.clear();
                        self.phase = Phase::Closing;
                        return Poll::Ready(true);
                    }
                }
                if self.link.wants_input(Some(cx.waker())) {
                    let (socket, link, turn) = (&mut self.socket, &self.link, &mut self.turn);
                    progress |= with_read_buf(|buf| match Pin::new(socket).poll_read(cx, buf) {
                        Poll::Ready(Ok(0)) => {
                            link.eof();
                            true
                        }
                        Poll::Ready(Ok(n)) => {
                            *turn += n;
                            link.input(buf.get(..n).unwrap_or_default(), Instant::now());
                            true
                        }
                        Poll::Ready(Err(e)) => {
                            link.io_error(&e);
                            true
                        }
                        Poll::Pending => false,
                    });
                }
                if self.out.is_empty() && self.link.is_drained() {
                    self.phase = Phase::Closing;
                    return Poll::Ready(true);
                }
                if self.link.is_closed() {
                    // Over, but the peer is not taking our last bytes: not forever.
                    let flush = closing_bounds(self.link.ever_joined()).1;
                    let until = *self
                        .give_up_at
                        .get_or_insert_with(|| Instant::now() + flush);
                    if self.timer(cx, Some(until)) {
                        self.out.clear();
                        self.phase = Phase::Closing;
                        return Poll::Ready(true);
                    }
                } else {
                    let deadline = self.link.deadline();
                    if self.timer(cx, deadline) {
                        self.link.timeout(Instant::now());
                        progress = true;
                    }
                }
            }
            Phase::Closing => match Pin::new(&mut self.socket).poll_close(cx) {
                Poll::Ready(_) => {
                    self.link.write_closed();
                    let linger = closing_bounds(self.link.ever_joined()).0;
                    self.phase = Phase::Lingering(Instant::now() + linger);
                    progress = true;
                }
                Poll::Pending => {}
            },
            Phase::Lingering(until) => {
                let socket = &mut self.socket;
                match with_read_buf(|buf| Pin::new(socket).poll_read(cx, buf)) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(false),
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Pending => {}
                }
                if self.timer(cx, Some(until)) {
                    return Poll::Ready(false);
                }
            }
        }
        if progress {
            Poll::Ready(true)
        } else {
            Poll::Pending
        }
    }
}

// No field is pinned structurally (the sleep is boxed), so moving the driver is fine.
impl<S: Unpin, R: Runtime> Unpin for Driver<S, R> {}

impl<S, R> Future for Driver<S, R>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Runtime,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.turn = 0;
        let turn_bytes = TURN_BYTES.load(Ordering::Relaxed);
        for _ in 0..BUDGET {
            if self.turn >= turn_bytes {
                break;
            }
            match self.step(cx) {
                Poll::Ready(true) => continue,
                Poll::Ready(false) => {
                    self.link.finish();
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        // Busy link: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S, R: Runtime> Drop for Driver<S, R> {
    fn drop(&mut self) {
        // However the driver ends (done, or its runtime shut down), waiters must not
        // wait forever.
        self.link.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::task::Waker;
    use std::time::SystemTime;

    use bytes::BytesMut;
    use palisade_core::frame::{encode, FrameKind};
    use palisade_core::{Config, Endpoint};

    use super::*;

    /// Never fires: the test polls once and looks at what one turn did.
    #[derive(Clone)]
    struct NoTimers;

    impl Runtime for NoTimers {
        type Sleep = std::future::Pending<()>;
        fn sleep_until(&self, _: Instant) -> Self::Sleep {
            std::future::pending()
        }
        fn spawn(&self, _: impl Future<Output = ()> + Send + 'static) {}
    }

    /// A socket whose peer sends DATA frames without end, counting what was read.
    struct Endless {
        frames: Bytes,
        at: usize,
        read: usize,
    }

    impl AsyncRead for Endless {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            while n < buf.len() {
                let chunk = self.frames.slice(self.at..);
                let take = chunk.len().min(buf.len() - n);
                buf[n..n + take].copy_from_slice(&chunk[..take]);
                n += take;
                self.at = (self.at + take) % self.frames.len();
            }
            self.read += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Endless {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A joined acceptor connection whose receive window never fills in this test.
    fn joined_acceptor() -> palisade_core::Connection {
        let config = |id: &str| {
            let mut c = Config::new("turns", id);
            c.recv_buffer_limit = 1 << 30;
            c
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut i = Endpoint::new(config("i"))
            .unwrap()
            .connect("x", now, wall)
            .unwrap();
        let mut a = Endpoint::new(config("a"))
            .unwrap()
            .accept(now, wall)
            .unwrap();
        for _ in 0..4 {
            while let Some(b) = i.poll_transmit() {
                a.handle_input(&b, now);
            }
            while let Some(b) = a.poll_transmit() {
                i.handle_input(&b, now);
            }
        }
        assert!(a.is_joined() && i.is_joined());
        a
    }

    fn bytes_read_in_one_turn(turn_bytes: usize) -> usize {
        let link = Arc::new(Link::new(joined_acceptor()));
        let mut frames = BytesMut::new();
        encode(FrameKind::Data, &[9; 16 * 1024], &mut frames);
        let socket = Endless {
            frames: frames.freeze(),
            at: 0,
            read: 0,
        };
        let mut driver = Driver::new(link, socket, NoTimers);
        TURN_BYTES.store(turn_bytes, Ordering::Relaxed);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut driver).poll(&mut cx).is_pending());
        TURN_BYTES.store(DEFAULT_TURN_BYTES, Ordering::Relaxed);
        driver.socket.read
    }

    /// A link that always has input yields once it moved the turn's bytes (plus the one
    /// read that crossed the bound), not after the poll budget's worth of reads.
    #[test]
    fn a_busy_link_yields_after_its_turn_of_bytes() {
        let bounded = bytes_read_in_one_turn(DEFAULT_TURN_BYTES);
        assert!(
            (DEFAULT_TURN_BYTES..DEFAULT_TURN_BYTES + READ_BUF).contains(&bounded),
            "{bounded}"
        );
        let unbounded = bytes_read_in_one_turn(usize::MAX);
        assert_eq!(
            unbounded,
            BUDGET * READ_BUF,
            "only the poll budget bounds it"
        );
    }
}
