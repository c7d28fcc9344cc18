//! One palisade link to one peer, shared by every openraft client to that peer (the
//! replication stream and the elections), carrying requests with ids so several can be in
//! flight and their responses come back in any order.
//!
//! The link is dialed on first use and again after it breaks, never more often than the
//! backoff allows: after `n` failed dials in a row the next waits `min(base · 2ⁿ⁻¹, cap)`,
//! so a node that is down costs its peers one refused dial per interval, not a storm of
//! TLS handshakes, and a node that comes back is found within `cap`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::tokio::{Connection, Dial, Dialer, SendHalf};
use tokio::net::TcpSocket;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

/// How often a broken link is dialed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failed dial.
    pub base: Duration,
    /// The longest wait between dials.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 50 ms doubling up to 1 s: below openraft's default election timeout (150–300 ms)
    /// for the first retries, and a restored node is found within a second.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait after `failures` failed dials in a row (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }
}

/// Why a call on a link failed; the network maps each onto openraft's `RPCError`.
#[derive(Debug)]
pub enum CallError {
    /// No link could be had (the dial failed, the backoff runs, or the node is
    /// isolated): openraft backs off.
    Unreachable(String),
    /// The link broke while the request was in flight.
    Broken(String),
    /// No answer within the RPC's time to live.
    Timeout,
    /// The request did not encode (nothing was sent).
    Encode(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "peer unreachable: {why}"),
            Self::Broken(why) => write!(f, "the link broke during the RPC: {why}"),
            Self::Timeout => write!(f, "no response within the RPC's time to live"),
            Self::Encode(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CallError {}

/// Requests in flight on one joined link, by id.
#[derive(Default)]
struct Pending {
    waiting: StdMutex<HashMap<u64, oneshot::Sender<Bytes>>>,
    dead: AtomicBool,
}

impl Pending {
    /// The link is gone: every waiter learns it (its sender is dropped).
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Ok(mut w) = self.waiting.lock() {
            w.clear();
        }
    }
}

struct Live {
    send: Arc<Mutex<SendHalf>>,
    pending: Arc<Pending>,
    reader: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // The reader holds the receiving half: stopping it (and dropping the sending
        // half with `self`) closes the link.
        self.reader.abort();
        self.pending.kill();
    }
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// The link to one peer.
pub(crate) struct PeerLink {
    dial: Dial,
    source: Option<IpAddr>,
    dialer: Dialer,
    backoff: Backoff,
    enabled: Arc<AtomicBool>,
    state: Mutex<State>,
    next_id: AtomicU64,
}

impl PeerLink {
    pub(crate) fn new(
        dial: Dial,
        source: Option<IpAddr>,
        dialer: Dialer,
        backoff: Backoff,
        enabled: Arc<AtomicBool>,
    ) -> Self {
        Self {
            dial,
            source,
            dialer,
            backoff,
            enabled,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Drops the joined link, if any; the next call dials at once.
    pub(crate) async fn disconnect(&self) {
        let mut state = self.state.lock().await;
        state.live = None;
        state.failures = 0;
        state.retry_at = None;
    }

    /// The joined link, dialed if need be.
    async fn link(&self) -> Result<(Arc<Mutex<SendHalf>>, Arc<Pending>), CallError> {
        if !self.enabled.load(Ordering::SeqCst) {
            return Err(CallError::Unreachable(
                "this node's network is switched off".into(),
            ));
        }
        let mut state = self.state.lock().await;
        if let Some(live) = &state.live {
            if !live.pending.dead.load(Ordering::SeqCst) {
                return Ok((Arc::clone(&live.send), Arc::clone(&live.pending)));
            }
            state.live = None;
        }
        if let Some(at) = state.retry_at {
            if Instant::now() < at {
                return Err(CallError::Unreachable(format!(
                    "{} (next dial to {} in {:?})",
                    state.last_error,
                    self.dial.addr(),
                    at - Instant::now()
                )));
            }
        }
        match self.connect().await {
            Ok(_) if !self.enabled.load(Ordering::SeqCst) => Err(CallError::Unreachable(
                "this node's network was switched off during the dial".into(),
            )),
            Ok(conn) => {
                state.failures = 0;
                state.retry_at = None;
                let (send, mut recv) = conn.split();
                let pending = Arc::new(Pending::default());
                let routes = Arc::clone(&pending);
                let reader = tokio::spawn(async move {
                    while let Ok(Some(frame)) = recv.recv().await {
                        let Ok((id, _)) = postcard::take_from_bytes::<u64>(&frame) else {
                            break;
                        };
                        let waiter = routes.waiting.lock().ok().and_then(|mut w| w.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(frame);
                        }
                    }
                    routes.kill();
                });
                let send = Arc::new(Mutex::new(send));
                state.live = Some(Live {
                    send: Arc::clone(&send),
                    pending: Arc::clone(&pending),
                    reader,
                });
                Ok((send, pending))
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + self.backoff.delay(state.failures));
                state.last_error = format!("dialing {} failed: {e}", self.dial.addr());
                Err(CallError::Unreachable(state.last_error.clone()))
            }
        }
    }

    /// Dials, from the source address if one is set.
    async fn connect(&self) -> Result<Connection, palisade::tokio::Error> {
        let Some(source) = self.source else {
            return self.dialer.dial(&self.dial).await;
        };
        let addr = tokio::net::lookup_host(self.dial.addr())
            .await?
            .find(|a| a.is_ipv4() == source.is_ipv4())
            .ok_or_else(|| palisade::tokio::Error::NoAddress(self.dial.addr().to_owned()))?;
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let timeout = self.dial.timeout().unwrap_or(Duration::from_secs(5));
        let stream = tokio::time::timeout(timeout, socket.connect(addr))
            .await
            .map_err(|_| self.dial.timed_out())??;
        self.dialer.connect_stream(stream, &self.dial).await
    }

    /// Sends the frame `encode(id)` and waits for the frame answering `id`.
    pub(crate) async fn call(
        &self,
        encode: impl FnOnce(u64) -> Result<Bytes, crate::wire::WireError>,
        ttl: Duration,
    ) -> Result<Bytes, CallError> {
        let deadline = tokio::time::Instant::now() + ttl;
        let (send, pending) = tokio::time::timeout_at(deadline, self.link())
            .await
            .map_err(|_| CallError::Timeout)??;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode(id).map_err(|e| CallError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = pending.waiting.lock() {
            w.insert(id, tx);
        }
        if pending.dead.load(Ordering::SeqCst) {
            return Err(CallError::Broken("the link closed".into()));
        }
        let sent =
            tokio::time::timeout_at(deadline, async { send.lock().await.send(frame).await }).await;
        let outcome = match sent {
            Err(_) => Err(CallError::Timeout),
            Ok(Err(e)) => {
                pending.kill();
                Err(CallError::Broken(e.to_string()))
            }
            Ok(Ok(())) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(frame)) => return Ok(frame),
                Ok(Err(_)) => Err(CallError::Broken("the link closed".into())),
                Err(_) => Err(CallError::Timeout),
            },
        };
        if let Ok(mut w) = pending.waiting.lock() {
            w.remove(&id);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let b = Backoff::default();
        let ms = |n| b.delay(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(5), ms(6), ms(60)],
            [50, 100, 200, 800, 1000, 1000]
        );
    }
}
