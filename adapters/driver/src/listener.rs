//! What every async listener does once a socket is accepted: run its handshake in a task
//! of its own (so one slow or hostile peer never delays another), queue the links that
//! join, and report the ones that do not without disturbing the accept loop.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures_io::{AsyncRead, AsyncWrite};
use palisade_core::Endpoint;

use crate::conn::{establish, Connection};
use crate::driver::Runtime;
use crate::error::{Error, HandshakeFailure};

/// How long an accept loop pauses after the listening socket runs out of a resource
/// (file descriptors, buffers, memory): retrying at once would fail again at once and
/// spin a core.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// Logs an accept error and returns the pause before the next `accept`: none for
/// errors about one connection (it was reset before we took it), [`ACCEPT_BACKOFF`] when
/// the process or system is out of something.
pub fn accept_failed(err: &std::io::Error) -> Duration {
    use std::io::ErrorKind;
    let per_connection = matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    );
    if per_connection {
        tracing::debug!(target: "palisade", "accept failed: {err}");
        Duration::ZERO
    } else {
        tracing::warn!(
            target: "palisade",
            "accept failed: {err}; pausing {} ms before accepting again",
            ACCEPT_BACKOFF.as_millis()
        );
        ACCEPT_BACKOFF
    }
}

/// Handshakes a listener runs at once; sockets beyond this are closed at once (and
/// reported), so a flood of connections cannot exhaust memory.
pub const MAX_HANDSHAKES: usize = 1024;

/// Joined links waiting for `accept`, bounded like a socket backlog.
pub const ACCEPT_BACKLOG: usize = 1024;

/// Called for every handshake a listener gives up on.
pub type FailureHook = Arc<dyn Fn(&HandshakeFailure) + Send + Sync>;

/// Counts handshakes in progress, refuses past [`MAX_HANDSHAKES`], and reports
/// failures. Shared by the async and the blocking listeners.
#[derive(Clone, Default)]
pub struct Gate {
    in_flight: Arc<AtomicUsize>,
    hook: Option<FailureHook>,
}

/// One handshake's place at the [`Gate`]; freed on drop.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate calling `hook` for every failure (and logging it).
    pub fn new(hook: Option<FailureHook>) -> Self {
        Self {
            in_flight: Arc::default(),
            hook,
        }
    }

    /// Handshakes in progress now.
    pub fn in_progress(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A place for one more handshake, or `None` (reported) when all are taken.
    pub fn enter(&self, peer_addr: SocketAddr) -> Option<Permit> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_HANDSHAKES {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            let error = Error::Io(std::io::Error::other(format!(
                "{MAX_HANDSHAKES} handshakes already in progress; connection dropped"
            )));
            self.report(HandshakeFailure { peer_addr, error });
            return None;
        }
        Some(Permit(Arc::clone(&self.in_flight)))
    }

    /// Logs a failed handshake (tracing, target `palisade`) and tells the hook.
    pub fn report(&self, failure: HandshakeFailure) {
        tracing::warn!(
            target: "palisade",
            peer = %failure.peer_addr,
            code = ?failure.reject_code(),
            "{failure}"
        );
        if let Some(hook) = &self.hook {
            hook(&failure);
        }
    }

    /// The error for a joined link nobody accepts in time.
    pub fn backlog_full(&self, peer_addr: SocketAddr) {
        let error = Error::Io(std::io::Error::other(format!(
            "{ACCEPT_BACKLOG} joined links are waiting for accept(); link closed"
        )));
        self.report(HandshakeFailure { peer_addr, error });
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<(Connection, SocketAddr)>,
    waiters: Vec<Waker>,
}

/// The runtime-independent part of an async listener.
#[derive(Clone)]
pub struct Acceptor<R: Runtime> {
    endpoint: Endpoint,
    runtime: R,
    queue: Arc<Mutex<Queue>>,
    gate: Gate,
}

impl<R: Runtime> std::fmt::Debug for Acceptor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Acceptor<R> {
    /// An acceptor making links with `endpoint`'s settings.
    pub fn new(endpoint: Endpoint, runtime: R, hook: Option<FailureHook>) -> Self {
        Self {
            endpoint,
            runtime,
            queue: Arc::default(),
            gate: Gate::new(hook),
        }
    }

    /// Handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.gate.in_progress()
    }

    /// Reports an accept error of the listening socket; returns how long the accept
    /// loop should pause before trying again (see [`accept_failed`]).
    pub fn accept_error(&self, err: &std::io::Error) -> Duration {
        accept_failed(err)
    }

    /// Takes an accepted socket: its handshake runs in a task of its own.
    pub fn handle<S>(&self, socket: S, peer_addr: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(permit) = self.gate.enter(peer_addr) else {
            return;
        };
        let conn =
            match self
                .endpoint
                .accept_from(Some(peer_addr.ip()), Instant::now(), SystemTime::now())
            {
                Ok(c) => c,
                Err(e) => {
                    self.gate.report(HandshakeFailure {
                        peer_addr,
                        error: e.into(),
                    });
                    return;
                }
            };
        let this = self.clone();
        self.runtime.spawn(async move {
            let result = establish(&this.runtime, socket, conn).await;
            drop(permit);
            match result {
                Ok(conn) => this.push(conn, peer_addr),
                Err(error) => this.gate.report(HandshakeFailure { peer_addr, error }),
            }
        });
    }

    fn push(&self, conn: Connection, peer_addr: SocketAddr) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.ready.len() >= ACCEPT_BACKLOG {
            drop(q);
            // Dropping the connection closes it gracefully.
            drop(conn);
            self.gate.backlog_full(peer_addr);
            return;
        }
        q.ready.push_back((conn, peer_addr));
        for w in q.waiters.drain(..) {
            w.wake();
        }
    }

    /// The next joined link and its peer's address.
    pub async fn accept(&self) -> (Connection, SocketAddr) {
        poll_fn(|cx| {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            match q.ready.pop_front() {
                Some(next) => Poll::Ready(next),
                None => {
                    if !q.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        q.waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }
}
