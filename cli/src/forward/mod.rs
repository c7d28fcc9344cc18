//! Forwarding in `palisade node` (issue 22): unmodified programs' TCP connections carried
//! as streams over the node's authenticated links, so etcd or Redis need no TLS of their
//! own.
//!
//! Design: every stream to or from a peer is multiplexed over the one joined link with
//! that peer, with per-stream credit windows (as HTTP/2 and yamux), rather than a link per
//! connection: a connection costs no TLS handshake or join, the link's authentication and
//! reload rules cover every stream at once, and the windows keep one stalled local socket
//! from blocking the link or its other streams. The messages are in [`wire`]
//! (PROTOCOL.md, "Node streams"), the per-link state machine in [`mux`] (sans-IO), the
//! allow rules in [`service`], the tokio glue in [`link`] (one task per link) and
//! [`stream`] (one task per local connection).
//!
//! [`Forwarder`] is what `node.rs` holds: the `[[service]]` tables, the `[[forward]]`
//! listeners, and the links' stream tables by peer node id.

pub mod link;
pub mod mux;
pub mod service;
pub mod stream;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::ops::audit::Audit;
use crate::ops::names::ServiceCounters;
use palisade::settings::ForwardSettings;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use link::{spawn_writer, LinkStreams, Out};
pub use wire::is_stream_kind;

use link::Cmd;
use mux::Limits;
use service::Services;

/// How long a local connection waits for a link to its peer (a dial in progress, a
/// link being replaced) before it is reset.
pub const LINK_WAIT: Duration = Duration::from_secs(5);
/// How often a connection waiting for a free stream slot asks again.
const SLOT_RETRY: Duration = Duration::from_millis(10);

/// How long connecting to a service's target may take before the stream is refused.
pub const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct LinkEntry {
    id: u64,
    /// The link the node keeps if the peer has two (see [`Forwarder::node_id`]).
    preferred: bool,
    handle: LinkHandle,
}

/// A link's command queue, as the registry and the local connections hold it.
#[derive(Debug, Clone)]
pub(crate) struct LinkHandle {
    pub(crate) cmds: mpsc::UnboundedSender<Cmd>,
}

#[derive(Debug)]
struct Listening {
    /// The forward as the accept loop reads it (a reload may change peer or service
    /// without rebinding the port).
    forward: Arc<RwLock<ForwardSettings>>,
    task: JoinHandle<()>,
}

/// What the node's stats block shows of forwarding (SIGUSR1).
#[derive(Debug, Default)]
pub struct Stats {
    /// Local connections to a forward port carried as streams.
    pub outbound: AtomicU64,
    /// Streams from peers connected to a service's target.
    pub inbound: AtomicU64,
    /// Streams from peers refused here (unknown service, not allowed, target unreachable).
    pub refused: AtomicU64,
    /// Local sockets reset (on either side): refused by the peer, no link, reset either way.
    pub reset: AtomicU64,
}

/// The node's forwarding: services, listeners, and every joined link's stream table.
#[derive(Debug)]
pub struct Forwarder {
    /// This node's id: of two links with a peer (both dialed at once), the node keeps the
    /// one the smaller id dialed, so new streams prefer that one.
    node_id: String,
    services: RwLock<Services>,
    links: Mutex<HashMap<String, Vec<LinkEntry>>>,
    link_up: Notify,
    listeners: Mutex<HashMap<SocketAddr, Listening>>,
    next_link: AtomicU64,
    limits: Limits,
    pub(crate) stats: Stats,
    /// `audit_log`: refused streams are recorded there too.
    pub(crate) audit: Audit,
}

impl Forwarder {
    #[cfg(test)]
    pub fn new(node_id: &str) -> Arc<Self> {
        Self::with_audit(node_id, Audit::off())
    }

    /// A forwarder that records refused streams in `audit`.
    pub fn with_audit(node_id: &str, audit: Audit) -> Arc<Self> {
        Arc::new(Self {
            node_id: node_id.to_owned(),
            services: RwLock::new(Services::default()),
            links: Mutex::new(HashMap::new()),
            link_up: Notify::new(),
            listeners: Mutex::new(HashMap::new()),
            next_link: AtomicU64::new(1),
            limits: Limits::default(),
            stats: Stats::default(),
            audit,
        })
    }

    /// Takes the `[[service]]` and `[[forward]]` tables of (re)loaded settings: services
    /// are replaced and every link re-decides its peers' streams (those no longer allowed
    /// are reset, the rest go on); listeners of removed forwards stop, new ones start.
    pub fn configure(self: &Arc<Self>, settings: &palisade::Settings) {
        if let Ok(mut s) = self.services.write() {
            s.0.clone_from(&settings.service);
        }
        if let Ok(links) = self.links.lock() {
            for entry in links.values().flatten() {
                let _ = entry.handle.cmds.send(Cmd::Recheck);
            }
        }
        let Ok(mut listeners) = self.listeners.lock() else {
            return;
        };
        listeners.retain(|addr, l| {
            let keep = settings.forward.iter().any(|f| f.listen == *addr);
            if !keep {
                info!("forward on {addr} removed: its listener stops (open streams go on)");
                l.task.abort();
            }
            keep
        });
        for f in &settings.forward {
            if let Some(l) = listeners.get(&f.listen) {
                if let Ok(mut current) = l.forward.write() {
                    current.clone_from(f);
                }
                continue;
            }
            match bind(f.listen) {
                Ok(listener) => {
                    info!(peer = %f.peer, service = %f.service, "forwarding {} to service {:?} on {}", f.listen, f.service, f.peer);
                    let forward = Arc::new(RwLock::new(f.clone()));
                    let task = tokio::spawn(accept_loop(
                        Arc::clone(self),
                        listener,
                        Arc::clone(&forward),
                    ));
                    listeners.insert(f.listen, Listening { forward, task });
                }
                Err(e) => error!(
                    "cannot listen on {} for the forward to {:?} on {}: {e}",
                    f.listen, f.service, f.peer
                ),
            }
        }
    }

    /// Starts the stream table of a newly joined link with `peer` (its authenticated
    /// node id) at `peer_addr`; the link hands it stream frames, and dropping it ends
    /// every stream.
    pub fn attach(
        self: &Arc<Self>,
        peer: &str,
        peer_addr: &str,
        dialed: bool,
        out: link::Writer,
    ) -> LinkStreams {
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let (cmds_tx, cmds) = mpsc::unbounded_channel();
        let (frames_tx, frames) = mpsc::channel(link::FRAME_QUEUE);
        if let Ok(mut links) = self.links.lock() {
            links.entry(peer.to_owned()).or_default().push(LinkEntry {
                id,
                preferred: dialed == (self.node_id.as_str() < peer),
                handle: LinkHandle {
                    cmds: cmds_tx.clone(),
                },
            });
        }
        self.link_up.notify_waiters();
        let side = if dialed {
            mux::Side::Dialer
        } else {
            mux::Side::Acceptor
        };
        tokio::spawn(link::run(
            Arc::clone(self),
            link::LinkCtx {
                id,
                peer: peer.to_owned(),
                peer_addr: peer_addr.to_owned(),
                side,
                out,
                cmds_tx,
            },
            frames,
            cmds,
        ));
        LinkStreams { frames: frames_tx }
    }

    /// The stats line, once forwarding is configured or has carried anything.
    pub fn stats_line(&self) -> Option<String> {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let st = &self.stats;
        let (listening, services) = (
            self.listeners.lock().map_or(0, |l| l.len()),
            self.services.read().map_or(0, |s| s.0.len()),
        );
        let carried = n(&st.outbound) + n(&st.inbound) + n(&st.refused) + n(&st.reset);
        (listening + services > 0 || carried > 0).then(|| {
            format!(
                "forward: {listening} forward port(s), {services} service(s); streams out {}, in {}; refused here {}; local sockets reset {}\n",
                n(&st.outbound), n(&st.inbound), n(&st.refused), n(&st.reset)
            )
        })
    }

    fn detach(&self, peer: &str, id: u64) {
        if let Ok(mut links) = self.links.lock() {
            if let Some(entries) = links.get_mut(peer) {
                entries.retain(|e| e.id != id);
                if entries.is_empty() {
                    links.remove(peer);
                }
            }
        }
    }

    pub(crate) fn decide(&self, service: &str, peer: &str) -> Result<String, (wire::Code, String)> {
        self.services
            .read()
            .map_err(|_| (wire::Code::Aborted, "internal error".to_owned()))?
            .decide(service, peer)
    }

    /// The newest joined link with `peer`, waiting up to [`LINK_WAIT`] for one; of two
    /// (both nodes dialed), the one the node keeps, so its streams are not reset when the
    /// other is closed as a duplicate.
    async fn link_for(&self, peer: &str) -> Option<LinkHandle> {
        let deadline = tokio::time::Instant::now() + LINK_WAIT;
        loop {
            let up = self.link_up.notified();
            let found = self.links.lock().ok().and_then(|l| {
                let live = l.get(peer)?.iter().filter(|e| !e.handle.cmds.is_closed());
                let (preferred, other): (Vec<_>, Vec<_>) = live.partition(|e| e.preferred);
                preferred.last().or(other.last()).map(|e| e.handle.clone())
            });
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, up).await.is_err() {
                return None;
            }
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(std)
}

async fn accept_loop(
    fwd: Arc<Forwarder>,
    listener: tokio::net::TcpListener,
    forward: Arc<RwLock<ForwardSettings>>,
) {
    loop {
        match listener.accept().await {
            Ok((tcp, from)) => {
                let Ok(f) = forward.read().map(|f| f.clone()) else {
                    return;
                };
                tokio::spawn(forward_one(Arc::clone(&fwd), f, tcp, from));
            }
            Err(e) => {
                warn!("accepting on a forward's port failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One local connection to a `[[forward]]` port: a stream to the peer's service, or a
/// reset (with the reason logged) when there is no link or the peer refuses.
async fn forward_one(fwd: Arc<Forwarder>, f: ForwardSettings, tcp: TcpStream, from: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let Some(link) = fwd.link_for(&f.peer).await else {
        warn!(peer = %f.peer, service = %f.service, "no joined link with {} within {}s: resetting the connection from {from} to {}", f.peer, LINK_WAIT.as_secs(), f.listen);
        fwd.stats.reset.fetch_add(1, Ordering::Relaxed);
        stream::reset_socket(tcp);
        return;
    };
    // A full stream table frees a slot as soon as a stream's FINs have crossed: under
    // connection churn that is a round trip away, so wait (up to LINK_WAIT) for one
    // rather than reset a connection the table would take a moment later.
    let give_up = tokio::time::Instant::now() + LINK_WAIT;
    let (opened, events) = loop {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply_tx, reply) = oneshot::channel();
        let open = Cmd::Open {
            service: f.service.clone(),
            events: events_tx,
            reply: reply_tx,
        };
        if link.cmds.send(open).is_err() {
            warn!(peer = %f.peer, service = %f.service, "the link with {} ended: resetting the connection from {from}", f.peer);
            fwd.stats.reset.fetch_add(1, Ordering::Relaxed);
            stream::reset_socket(tcp);
            return;
        }
        let opened = reply.await;
        if matches!(opened, Ok(Err(wire::Code::TooManyStreams)))
            && tokio::time::Instant::now() < give_up
        {
            tokio::time::sleep(SLOT_RETRY).await;
            continue;
        }
        break (opened, events);
    };
    match opened {
        Ok(Ok(id)) => {
            let ctx = stream::StreamCtx {
                id,
                peer: f.peer.clone(),
                service: f.service.clone(),
                cmds: link.cmds,
                counters: ServiceCounters::new(&fwd.node_id, &f.service),
            };
            ctx.counters.stream_opened();
            fwd.stats.outbound.fetch_add(1, Ordering::Relaxed);
            if !stream::run(tcp, ctx, events).await {
                fwd.stats.reset.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Err(code)) => {
            warn!(peer = %f.peer, service = %f.service, "cannot open a stream to {:?} on {}: {code}; resetting the connection from {from}", f.service, f.peer);
            fwd.stats.reset.fetch_add(1, Ordering::Relaxed);
            stream::reset_socket(tcp);
        }
        Err(_) => {
            warn!(peer = %f.peer, service = %f.service, "the link with {} ended: resetting the connection from {from}", f.peer);
            fwd.stats.reset.fetch_add(1, Ordering::Relaxed);
            stream::reset_socket(tcp);
        }
    }
}
