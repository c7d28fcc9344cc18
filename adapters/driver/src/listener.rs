//! What every async listener does once a socket is accepted: run its handshake in a task
//! of its own (so one slow or hostile peer never delays another), queue the links that
//! join, and report the ones that do not without disturbing the accept loop.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures_io::{AsyncRead, AsyncWrite};
use palisade_core::{Endpoint, RejectCode, Side};
use tracing::Instrument;

use crate::admission::{Admission, AdmissionError, AdmissionLimits, AdmissionStats, Permit};
use crate::conn::{establish_admitted_driving, Connection};
use crate::driver::Runtime;
use crate::error::{Error, HandshakeFailure};
use crate::follow::LinkRegistry;
use crate::live::LiveEndpoint;
use crate::metrics::Metrics;
use crate::observe::{link_span, LinkObserver};

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

/// The default cap on handshakes in progress (connections that have not joined):
/// [`AdmissionLimits::max_unjoined`]'s default. Past it, the oldest is evicted.
pub const MAX_HANDSHAKES: usize = 1024;

/// Joined links waiting for `accept`, bounded like a socket backlog.
pub const ACCEPT_BACKLOG: usize = 1024;

/// Called for every handshake a listener gives up on, and for every connection its
/// admission control closes (`Error::Admission`).
pub type FailureHook = Arc<dyn Fn(&HandshakeFailure) + Send + Sync>;

/// Admission control in front of every handshake, the failure report, and the node's
/// counters for the links it admits. Shared by the async and the blocking listeners.
#[derive(Clone)]
pub struct Gate {
    admission: Arc<Admission>,
    hook: Option<FailureHook>,
    metrics: Metrics,
    /// The links this gate admitted, which follow the listener's settings.
    links: LinkRegistry,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(None)
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate with the default [`AdmissionLimits`], calling `hook` for every failure
    /// (and logging it).
    pub fn new(hook: Option<FailureHook>) -> Self {
        // The defaults validate (a unit test checks it).
        Self {
            admission: Admission::unchecked(AdmissionLimits::default()),
            hook,
            metrics: Metrics::default(),
            links: LinkRegistry::default(),
        }
    }

    /// A gate with `limits` (refused when they cannot work).
    pub fn with_limits(hook: Option<FailureHook>, limits: AdmissionLimits) -> Result<Self, Error> {
        Self::with_limits_and_metrics(hook, limits, Metrics::default())
    }

    /// A gate with `limits` counting its links into `metrics` (a node's listener and
    /// dialers share one [`Metrics`]).
    pub fn with_limits_and_metrics(
        hook: Option<FailureHook>,
        limits: AdmissionLimits,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        Ok(Self {
            admission: Admission::new(limits)?,
            hook,
            metrics,
            links: LinkRegistry::default(),
        })
    }

    /// The links this gate admitted: give it to the listener's
    /// [`LiveEndpoint::following`], so a reload decides their peers again.
    pub fn links(&self) -> &LinkRegistry {
        &self.links
    }

    /// The counters of the links this gate admits.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Connections that have not joined now.
    pub fn in_progress(&self) -> usize {
        self.admission.unjoined()
    }

    /// The admission counters.
    pub fn stats(&self) -> AdmissionStats {
        self.admission.stats()
    }

    /// A place for a handshake with `peer_addr`, or `None` (reported) when admission
    /// control closes it: drop the socket at once. May evict an unjoined connection
    /// (see [`crate::admission`] for which).
    ///
    /// The permit carries the link's span (`palisade_link`, made here) and this gate's
    /// counters to whichever `establish_*_admitted` runs the handshake.
    pub fn enter(&self, peer_addr: SocketAddr) -> Option<Permit> {
        let span = link_span(Side::Acceptor, Some(&peer_addr));
        let _in_span = span.enter();
        match self.admission.admit(peer_addr, Instant::now()) {
            Ok(permit) => Some(
                permit.observed_by(
                    LinkObserver::new(Some(self.metrics.clone()), span.clone())
                        .following(Some(self.links.clone())),
                ),
            ),
            Err(e) => {
                // A flood is refused thousands of times a second: the counters and the
                // hook see each one, the log only at debug level (backoffs starting and
                // evictions are logged as warnings).
                tracing::debug!(target: "palisade", peer = %peer_addr, "{e}");
                self.notify(&HandshakeFailure {
                    peer_addr,
                    error: Error::Admission(e),
                });
                None
            }
        }
    }

    /// Reports how an admitted handshake ended in failure: counts it against the peer's
    /// source (unless the peer sent nothing, or we evicted it, reported as an eviction,
    /// or refused it as busy),
    /// maybe starting a backoff; logs it and tells the hook.
    pub fn handshake_failed(&self, permit: &Permit, peer_addr: SocketAddr, error: Error) {
        let _in_span = permit.observer().span().enter();
        // Refusing a join because this node is busy (its replay cache is full) is not
        // the peer's doing.
        let ours = error.reject_code() == Some(RejectCode::Busy);
        let error = if permit.was_evicted() {
            let error = permit.eviction_error();
            if matches!(error, AdmissionError::ConnectionRate { .. }) {
                // Like a refusal at admission: a flood of these must not flood the log.
                tracing::debug!(target: "palisade", peer = %peer_addr, "{error}");
                let error = Error::Admission(error);
                return self.notify(&HandshakeFailure { peer_addr, error });
            }
            Error::Admission(error)
        } else if ours {
            error
        } else {
            if let Some(backoff) = permit.failed(Instant::now()) {
                tracing::warn!(
                    target: "palisade",
                    source = %permit.source(),
                    "{} failed to join too often; its connections are refused for {} ms \
                     (failed_join_rate_per_source, failed_join_burst_per_source, source_backoff)",
                    permit.source(),
                    backoff.as_millis()
                );
            }
            error
        };
        self.report(HandshakeFailure { peer_addr, error });
    }

    /// Logs a failed handshake (tracing, target `palisade`) and tells the hook.
    pub fn report(&self, failure: HandshakeFailure) {
        tracing::warn!(
            target: "palisade",
            peer = %failure.peer_addr,
            code = ?failure.reject_code(),
            "{failure}"
        );
        self.notify(&failure);
    }

    fn notify(&self, failure: &HandshakeFailure) {
        if let Some(hook) = &self.hook {
            hook(failure);
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
    endpoint: LiveEndpoint,
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
    /// An acceptor making links with `endpoint`'s settings and the default
    /// [`AdmissionLimits`], counting into metrics of its own (labelled with the
    /// endpoint's node id).
    pub fn new(endpoint: Endpoint, runtime: R, hook: Option<FailureHook>) -> Self {
        let metrics = Metrics::new(endpoint.config().node_id.clone());
        let gate = Gate {
            metrics,
            ..Gate::new(hook)
        };
        Self {
            endpoint: LiveEndpoint::following(endpoint, gate.links().clone()),
            runtime,
            queue: Arc::default(),
            gate,
        }
    }

    /// An acceptor with admission limits of your own.
    pub fn with_limits(
        endpoint: Endpoint,
        runtime: R,
        hook: Option<FailureHook>,
        limits: AdmissionLimits,
    ) -> Result<Self, Error> {
        let metrics = Metrics::new(endpoint.config().node_id.clone());
        Self::with_limits_and_metrics(endpoint, runtime, hook, limits, metrics)
    }

    /// An acceptor with admission limits of your own, counting into `metrics` (share
    /// the handle with the node's dials: [`Dial::metrics`](crate::Dial::metrics)).
    pub fn with_limits_and_metrics(
        endpoint: Endpoint,
        runtime: R,
        hook: Option<FailureHook>,
        limits: AdmissionLimits,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        metrics.settings_in_use(endpoint.config());
        let gate = Gate::with_limits_and_metrics(hook, limits, metrics)?;
        Ok(Self {
            endpoint: LiveEndpoint::following(endpoint, gate.links().clone()),
            runtime,
            queue: Arc::default(),
            gate,
        })
    }

    /// The counters of this acceptor's links.
    pub fn metrics(&self) -> &Metrics {
        self.gate.metrics()
    }

    /// Handshakes in progress now (connections that have not joined).
    pub fn handshakes_in_progress(&self) -> usize {
        self.gate.in_progress()
    }

    /// New settings for the links accepted from now on, and for the joined links this
    /// acceptor made: each is decided again under them (see [`LiveEndpoint`]).
    pub fn reconfigure(&self, config: palisade_core::Config) -> Result<(), Error> {
        self.endpoint.reconfigure(config)?;
        self.metrics()
            .settings_in_use(self.endpoint.current().config());
        Ok(())
    }

    /// The admission counters.
    pub fn stats(&self) -> AdmissionStats {
        self.gate.stats()
    }

    /// Reports an accept error of the listening socket; returns how long the accept
    /// loop should pause before trying again (see [`accept_failed`]).
    pub fn accept_error(&self, err: &std::io::Error) -> Duration {
        accept_failed(err)
    }

    /// Takes an accepted socket: admission control first (a refused socket is dropped,
    /// closed at once), then its handshake runs in a task of its own, which goes on as
    /// the link's driver once the link is handed to `accept` (one task per link).
    pub fn handle<S>(&self, socket: S, peer_addr: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(permit) = self.gate.enter(peer_addr) else {
            return;
        };
        let conn = match self.endpoint.current().accept_from(
            Some(peer_addr.ip()),
            Instant::now(),
            SystemTime::now(),
        ) {
            Ok(c) => c,
            Err(e) => {
                let _in_span = permit.observer().span().enter();
                self.gate.report(HandshakeFailure {
                    peer_addr,
                    error: e.into(),
                });
                return;
            }
        };
        let this = self.clone();
        let span = permit.observer().span().clone();
        let handshake = async move {
            // The driver holds a clone of the permit until the socket is closed.
            match establish_admitted_driving(&this.runtime, socket, conn, permit.clone()).await {
                Ok((conn, driver)) => {
                    permit.joined();
                    this.push(conn, peer_addr);
                    // This task drives the link from now on.
                    driver.await;
                }
                Err(error) => this.gate.handshake_failed(&permit, peer_addr, error),
            }
        };
        self.runtime.spawn(handshake.instrument(span));
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
