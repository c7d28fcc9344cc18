//! `palisade node`: a real node on tokio. It listens, keeps one link per peer to its
//! `seeds` (reconnecting with capped exponential backoff and jitter, and giving up on a
//! permanent error until the next reload), answers the CLI's pings ([`crate::proto`]),
//! logs joins and refusals with their reasons, reloads certificates and secrets live
//! (the library's [`FileWatch`], every `reload_interval`; SIGHUP re-reads the config file
//! too), closes every link with CLOSE on SIGINT/SIGTERM and exits 0, and prints the
//! node's [`palisade::MetricsSnapshot`] on SIGUSR1 (or every `--stats-interval`).
//!
//! It also carries programs' TCP connections over its links (`[[forward]]`, `[[service]]`,
//! `[peers]`): that is [`crate::forward`]; this module only hands each link's stream
//! frames to it and applies reloads.
//!
//! The listener and the [`palisade::tokio::Dialer`] count in one [`Metrics`], and so does
//! the watch, so the snapshot is the whole node: what an application embedding the
//! library would see, since this command is built from the same public API.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use palisade::core::tls::CertSummary;
use palisade::tokio::{Connection, Dialer, Listener};
use palisade::{
    CloseCode, CloseReason, Config, Dial, Endpoint, FileWatch, Metrics, Reload, WatchEvent,
    WatchHandle,
};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{error, info, warn};

use crate::exit::{self, CliError};
use crate::forward::{self, Forwarder, Out};
use crate::proto;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's config file (TOML; PALISADE_* environment variables override it).
    #[arg(long)]
    pub config: PathBuf,
    /// Overrides the config's `reload_interval`: how often the certificate, key, CA and
    /// secret files are checked for changes (0: only on SIGHUP).
    #[arg(long, value_parser = duration)]
    pub reload_interval: Option<Duration>,
    /// Also print the stats snapshot this often (it is always printed on SIGUSR1).
    #[arg(long, value_parser = duration)]
    pub stats_interval: Option<Duration>,
    /// Log debug detail too.
    #[arg(short, long)]
    pub verbose: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    palisade::settings::parse_duration(text).map_err(|e| e.to_string())
}

/// Reconnect backoff: first wait, cap.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long shutdown waits for the links' CLOSE to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

pub fn run(args: &NodeArgs) -> Result<ExitCode, CliError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(if args.verbose {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let (settings, loaded) = palisade::Settings::load_checked(&args.config, SystemTime::now());
    for finding in loaded
        .report
        .findings
        .iter()
        .filter(|f| f.severity != palisade::Severity::Note)
    {
        warn!("{finding}");
    }
    let Some(config) = loaded.config else {
        eprintln!("{}", loaded.report);
        return Err(CliError::new(
            exit::INVALID,
            format!(
                "{} has errors; the node did not start",
                args.config.display()
            ),
        )
        .hint(format!("palisade check --config {}", args.config.display())));
    };
    let listen = settings.listen.clone();
    crate::runtime()?.block_on(serve(args, settings, config, loaded.limits, listen))
}

#[derive(Debug)]
struct LinkEntry {
    id: u64,
    dialed: bool,
    close: Option<oneshot::Sender<()>>,
}

/// What only the node knows; joins, refusals, frames, reloads and expiry are in its
/// [`Metrics`].
#[derive(Debug, Default)]
struct Counters {
    /// Dials that failed before a link joined (TCP included, which `Metrics` does not
    /// see).
    dial_failures: AtomicU64,
    /// Settings the watch or SIGHUP took but the listener or dialer refused.
    reloads_refused: AtomicU64,
}

#[derive(Debug)]
struct Node {
    id: String,
    links: Mutex<HashMap<String, Vec<LinkEntry>>>,
    next_link: AtomicU64,
    own_cert: RwLock<Option<(String, CertSummary)>>,
    key_id: RwLock<String>,
    counters: Counters,
    link_gone: Notify,
    reloaded: Notify,
    dialer: Dialer,
    connect_timeout: RwLock<Duration>,
    metrics: Metrics,
    started: Instant,
    /// `metrics_listen` and `audit_log`: told of joins, dials, closes and reloads.
    ops: crate::ops::Ops,
    /// `[[forward]]`/`[[service]]`: streams carried over the links ([`crate::forward`]).
    forward: Arc<Forwarder>,
}

fn own_cert(config: &Config) -> Option<(String, CertSummary)> {
    let der = config.tls.as_ref()?.identity.cert_chain.first()?;
    Some((
        palisade::tls_load::serial_hex(der)?,
        CertSummary::parse(der)?,
    ))
}

fn key_id(config: &Config) -> String {
    config
        .keyring
        .as_ref()
        .map_or("none".into(), |k| k.primary().key_id().to_string())
}

impl Node {
    /// Registers a joined link; `None` when the peer already has the link to keep. Two
    /// nodes that dial each other would hold two links: of those, the one dialed by the
    /// smaller node id stays (both ends decide alike) and the other is closed. Links in
    /// the same direction (a probe, a client, a peer that restarted) all stay; a dead one
    /// ends on its own.
    fn register(&self, peer: &str, dialed: bool, close: oneshot::Sender<()>) -> Option<u64> {
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let mut links = self.links.lock().ok()?;
        let entries = links.entry(peer.to_owned()).or_default();
        if entries.iter().any(|e| e.dialed != dialed) {
            let preferred_dialed = self.id.as_str() < peer;
            if dialed != preferred_dialed {
                return None;
            }
            for old in entries.iter_mut().filter(|e| e.dialed != dialed) {
                if let Some(close) = old.close.take() {
                    let _ = close.send(());
                }
            }
        }
        entries.push(LinkEntry {
            id,
            dialed,
            close: Some(close),
        });
        Some(id)
    }

    fn unregister(&self, peer: &str, id: u64) {
        if let Ok(mut links) = self.links.lock() {
            if let Some(entries) = links.get_mut(peer) {
                entries.retain(|e| e.id != id);
                if entries.is_empty() {
                    links.remove(peer);
                }
            }
        }
        self.link_gone.notify_waiters();
    }

    fn has_link(&self, peer: &str) -> bool {
        self.links.lock().is_ok_and(|l| l.contains_key(peer))
    }

    fn link_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .links
            .lock()
            .map(|l| {
                l.iter()
                    .flat_map(|(p, es)| es.iter().map(move |e| format!("{p}#{}", e.id)))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn info(&self) -> Bytes {
        let mut text = format!("node_id={}\n", self.id);
        if let Ok(cert) = self.own_cert.read() {
            if let Some((serial, s)) = cert.as_ref() {
                text += &format!(
                    "cert_serial={serial}\ncert_issuer={}\ncert_not_after={}\n",
                    s.issuer, s.not_after
                );
            }
        }
        if let Ok(k) = self.key_id.read() {
            text += &format!("key_id={k}\n");
        }
        text += &format!("links={}\n", self.link_names().join(","));
        frame(proto::INFO, text.as_bytes())
    }

    /// The stats block: a line of what only the node knows, the listener's admission
    /// counters, then the [`palisade::MetricsSnapshot`] (one `name value` line each).
    fn snapshot(&self, listener: Option<&Listener>) -> String {
        let c = &self.counters;
        let mut text = format!(
            "stats: node {} up {:.0}s; links [{}]; dial failures {}; reloads refused by the listener or dialer {}\n",
            self.id,
            self.started.elapsed().as_secs_f64(),
            self.link_names().join(", "),
            c.dial_failures.load(Ordering::Relaxed),
            c.reloads_refused.load(Ordering::Relaxed),
        );
        if let Some(l) = listener {
            let s = l.stats();
            text += &format!(
                "admission: admitted {}, joined {}, failed {}, unjoined now {}, refused (per-source cap {}, rate {}, backoff {}), evicted {}\n",
                s.admitted, s.joined, s.failed, s.unjoined, s.refused_per_source_cap, s.refused_rate, s.refused_backoff, s.evicted,
            );
        }
        if let Some(line) = self.forward.stats_line() {
            text += &line;
        }
        text += &self.metrics.snapshot().to_string();
        text
    }

    fn take_config(&self, config: &Config) {
        if let Ok(mut c) = self.own_cert.write() {
            *c = own_cert(config);
        }
        if let Ok(mut k) = self.key_id.write() {
            *k = key_id(config);
        }
    }

    fn close_all(&self) {
        if let Ok(mut links) = self.links.lock() {
            for entry in links.values_mut().flatten() {
                if let Some(close) = entry.close.take() {
                    let _ = close.send(());
                }
            }
        }
    }

    fn link_count(&self) -> usize {
        self.links
            .lock()
            .map_or(0, |l| l.values().map(Vec::len).sum())
    }
}

pub fn frame(kind: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + body.len());
    b.put_u8(kind);
    b.put_slice(body);
    b.freeze()
}

async fn serve(
    args: &NodeArgs,
    mut settings: palisade::Settings,
    config: Config,
    limits: palisade::AdmissionLimits,
    listen: Option<String>,
) -> Result<ExitCode, CliError> {
    let unworkable = |e: &palisade::ConfigError| {
        CliError::new(exit::INVALID, "the settings cannot work").cause(e)
    };
    let ops = crate::ops::Ops::start(&settings, &config).await?;
    let audit = ops.audit.clone();
    let hook: palisade::FailureHook = Arc::new(move |failure| {
        warn!(peer = %failure.peer_addr, "refused a link: {}", failure.error);
        audit.handshake_failed(failure);
    });
    // One endpoint for the listener and the dialer: they share the replay cache and the
    // nonces of this node's HELLOs in flight, so a HELLO reflected from a dial back to
    // the listener is recognized (PROTOCOL.md §5.5).
    let endpoint = Endpoint::new(config.clone()).map_err(|e| unworkable(&e))?;
    let listener = match &listen {
        Some(addr) => {
            let listener =
                Listener::bind_with_limits(addr.as_str(), endpoint.clone(), Some(hook), limits)
                    .await
                    .map_err(|e| {
                        CliError::new(exit::IO, format!("cannot listen on {addr}"))
                            .cause(&e)
                            .hint("is another process on that port? change `listen`")
                    })?;
            info!(node = %config.node_id, "listening on {} (key id {})", listener.local_addr(), key_id(&config));
            Some(Arc::new(listener))
        }
        None => None,
    };
    // One set of counters for the whole node: the listener's, shared with the dialer
    // and the watch.
    let metrics = listener.as_ref().map_or_else(
        || Metrics::new(config.node_id.clone()),
        |l| l.metrics().clone(),
    );
    let forward = Forwarder::with_audit(&config.node_id, ops.audit.clone());
    let node = Arc::new(Node {
        id: config.node_id.clone(),
        links: Mutex::new(HashMap::new()),
        next_link: AtomicU64::new(1),
        own_cert: RwLock::new(own_cert(&config)),
        key_id: RwLock::new(key_id(&config)),
        counters: Counters::default(),
        link_gone: Notify::new(),
        reloaded: Notify::new(),
        dialer: Dialer::with_metrics(endpoint, metrics.clone()),
        connect_timeout: RwLock::new(settings.connect_timeout),
        metrics,
        started: Instant::now(),
        ops,
        forward,
    });
    node.forward.configure(&settings);
    if let Some(listener) = &listener {
        let (node, listener) = (Arc::clone(&node), Arc::clone(listener));
        tokio::spawn(async move {
            loop {
                let (conn, addr) = listener.accept().await;
                let node = Arc::clone(&node);
                tokio::spawn(async move { run_link(node, conn, false, addr.to_string()).await });
            }
        });
    }
    let mut dialing = HashSet::new();
    dial_new(&node, &settings, &mut dialing);

    let (events_tx, mut events) = mpsc::unbounded_channel();
    if let Some(every) = args.reload_interval {
        settings.reload_interval = every;
    }
    let mut watch = Some(start_watch(settings, &node, events_tx.clone())?);
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| CliError::new(exit::IO, "cannot install the SIGHUP handler").cause(&e))?;
    let mut usr1 = signal(SignalKind::user_defined1())
        .map_err(|e| CliError::new(exit::IO, "cannot install the SIGUSR1 handler").cause(&e))?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::new(exit::IO, "cannot install the SIGTERM handler").cause(&e))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::new(exit::IO, "cannot install the SIGINT handler").cause(&e))?;
    let mut stats = args.stats_interval.map(tokio::time::interval);
    let print_stats = |node: &Node| println!("{}", node.snapshot(listener.as_deref()));
    let mut beat = tokio::time::interval(crate::ops::BEAT);
    loop {
        tokio::select! {
            _ = beat.tick() => node.ops.health.beat(),
            Some(event) = events.recv() => match event {
                WatchEvent::Reload(reload) => apply(&node, listener.as_deref(), reload, "files"),
                // The watch has logged it (warn within 30 days, error within 7 or after).
                WatchEvent::Expiry(_) => {}
            },
            _ = hup.recv() => {
                info!("SIGHUP: re-reading {} and the files it names", args.config.display());
                let (mut settings, loaded) = palisade::Settings::load_checked(&args.config, SystemTime::now());
                let ok = loaded.config.is_some();
                node.metrics.record_reload(ok);
                match loaded.config {
                    Some(config) => {
                        if settings.listen != listen {
                            warn!("listen changed in {}; restart the node to listen on the new address", args.config.display());
                        }
                        node.ops.check_restart_keys(&settings, &args.config);
                        let report = loaded.report;
                        if let Ok(mut t) = node.connect_timeout.write() {
                            *t = settings.connect_timeout;
                        }
                        apply(&node, listener.as_deref(), Reload::Reloaded { config, report }, "config");
                        node.forward.configure(&settings);
                        dial_new(&node, &settings, &mut dialing);
                        if let Some(every) = args.reload_interval {
                            settings.reload_interval = every;
                        }
                        // The old watch stops when its handle drops; the new one watches
                        // the files the new config names.
                        drop(watch.take());
                        watch = Some(start_watch(settings, &node, events_tx.clone())?);
                    }
                    None => apply(&node, listener.as_deref(), Reload::Refused { report: loaded.report }, "config"),
                }
            }
            _ = usr1.recv() => print_stats(&node),
            _ = async { match stats.as_mut() { Some(s) => { s.tick().await; } None => std::future::pending().await } } => print_stats(&node),
            _ = term.recv() => { info!("SIGTERM: closing {} link(s)", node.link_count()); break; }
            _ = int.recv() => { info!("SIGINT: closing {} link(s)", node.link_count()); break; }
        }
    }
    drop(watch);
    node.close_all();
    let deadline = Instant::now() + CLOSE_WAIT;
    while node.link_count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    print_stats(&node);
    node.ops.stopping();
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Starts a reconnecting dial to every seed and `[peers]` address (so a forward finds its
/// link) not dialed yet; a reload adds dials, never stops one (until a restart).
fn dial_new(node: &Arc<Node>, settings: &palisade::Settings, dialing: &mut HashSet<String>) {
    let peers = settings.peers.iter().filter(|(id, _)| **id != node.id);
    let addrs = settings.seeds.iter().chain(peers.map(|(_, addr)| addr));
    for addr in addrs {
        if dialing.insert(addr.clone()) {
            tokio::spawn(dial_loop(Arc::clone(node), addr.clone()));
        }
    }
}

/// The library's file watch on its own thread, every `reload_interval`, counting in the
/// node's metrics; its reloads and expiry warnings come back through `events`.
fn start_watch(
    settings: palisade::Settings,
    node: &Node,
    events: mpsc::UnboundedSender<WatchEvent>,
) -> Result<WatchHandle, CliError> {
    let watch = FileWatch::new(settings).count_in(node.metrics.clone());
    match watch.interval() {
        Some(every) => info!(
            "watching {} file(s) every {:.1}s",
            watch.files().len(),
            every.as_secs_f64()
        ),
        None => info!("reload_interval is 0: files are re-read on SIGHUP only"),
    }
    watch
        .spawn(move |event| {
            let _ = events.send(event);
        })
        .map_err(|e| CliError::new(exit::IO, "cannot start the file watch").cause(&e))
}

fn apply(node: &Node, listener: Option<&Listener>, reload: Reload, what: &str) {
    match reload {
        Reload::Unchanged => {}
        Reload::Reloaded { config, report } => {
            for finding in report.warnings() {
                warn!("{finding}");
            }
            if let Some(listener) = listener {
                if let Err(e) = listener.reconfigure(config.clone()) {
                    error!("reload refused by the listener ({e}); keeping the previous settings");
                    node.counters
                        .reloads_refused
                        .fetch_add(1, Ordering::Relaxed);
                    node.ops
                        .reload_failed(what, &format!("refused by the listener: {e}"));
                    return;
                }
            }
            if let Err(e) = node.dialer.reconfigure(config.clone()) {
                error!("reload refused for dialing ({e}); keeping the previous settings");
                node.counters
                    .reloads_refused
                    .fetch_add(1, Ordering::Relaxed);
                node.ops
                    .reload_failed(what, &format!("refused for dialing: {e}"));
            } else {
                node.ops.reloaded(what, &config);
            }
            node.take_config(&config);
            let serial = own_cert(&config)
                .map(|(s, _)| s)
                .unwrap_or_else(|| "none".into());
            info!("reloaded ({what}): certificate serial {serial}, key id {}; new links use them, and every joined link is decided again under them", key_id(&config));
            node.reloaded.notify_waiters();
        }
        Reload::Refused { report } => {
            for finding in report.errors() {
                error!("reload refused, keeping the previous settings: {finding}");
            }
            let why: Vec<String> = report.errors().map(ToString::to_string).collect();
            node.ops.reload_failed(what, &why.join("; "));
        }
    }
}

fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = SystemRandom::new().fill(&mut b);
    // 50% to 100% of d ("equal jitter"), so peers that failed together spread out.
    d / 2 + d.mul_f64(f64::from(u16::from_be_bytes(b)) / f64::from(u16::MAX) / 2.0)
}

async fn dial_loop(node: Arc<Node>, seed: String) {
    let mut backoff = BACKOFF_START;
    let mut known: Option<String> = None;
    loop {
        while let Some(peer) = known.as_deref().filter(|p| node.has_link(p)) {
            let gone = node.link_gone.notified();
            if !node.has_link(peer) {
                break;
            }
            gone.await;
        }
        let timeout = node
            .connect_timeout
            .read()
            .map_or(Duration::from_secs(5), |t| *t);
        match node
            .dialer
            .dial(&Dial::new(seed.as_str()).connect_timeout(timeout))
            .await
        {
            Ok(conn) => {
                node.ops.dialed(&seed, conn.peer());
                backoff = BACKOFF_START;
                known = Some(conn.peer().node_id.clone());
                run_link(Arc::clone(&node), conn, true, seed.clone()).await;
                tokio::time::sleep(jittered(BACKOFF_START)).await;
            }
            Err(e) if e.is_permanent() => {
                node.counters.dial_failures.fetch_add(1, Ordering::Relaxed);
                node.ops.dial_failed(&seed, &e, true);
                error!(seed = %seed, "dialing {seed} failed permanently: {e}; not retrying until the settings are reloaded (files change, or SIGHUP)");
                node.reloaded.notified().await;
                backoff = BACKOFF_START;
            }
            Err(e) => {
                node.counters.dial_failures.fetch_add(1, Ordering::Relaxed);
                node.ops.dial_failed(&seed, &e, false);
                let wait = jittered(backoff);
                warn!(seed = %seed, "dialing {seed} failed: {e}; retrying in {:.1}s", wait.as_secs_f64());
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
    }
}

async fn run_link(node: Arc<Node>, conn: Connection, dialed: bool, addr: String) {
    let peer = conn.peer().clone();
    node.ops.joined(&peer, &addr, dialed);
    let (close_tx, mut close_rx) = oneshot::channel();
    let Some(id) = node.register(&peer.node_id, dialed, close_tx) else {
        info!(peer = %peer.node_id, "a second link with {} ({addr}); keeping the first", peer.node_id);
        conn.close(CloseReason::new(
            CloseCode::Normal,
            "duplicate link: one link per peer",
        ))
        .await;
        return;
    };
    let tls = peer.tls.as_ref().map_or("plaintext".into(), |t| {
        format!(
            "{} {}, certificate names [{}]",
            t.version, t.cipher_suite, t.names
        )
    });
    let key = peer
        .key_id
        .map_or("no secret".into(), |k| format!("key id {k}"));
    info!(peer = %peer.node_id, "joined {} ({addr}, {}): {tls}; {key}; clock skew {} ms", peer.node_id, if dialed { "dialed" } else { "accepted" }, peer.clock_skew_ms);
    let (tx, mut rx) = conn.split();
    let (out, writer) = forward::spawn_writer(tx);
    let streams = node
        .forward
        .attach(&peer.node_id, &addr, dialed, out.clone());
    let ended = loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Ok(Some(f)) => {
                    let reply = match f.first() {
                        Some(&proto::PING) => Some(frame_pong(&f)),
                        Some(&proto::INFO_REQUEST) => Some(node.info()),
                        Some(&kind) if forward::is_stream_kind(kind) => {
                            streams.frame(f).await;
                            None
                        }
                        _ => None,
                    };
                    if let Some(reply) = reply {
                        if !out.send(Out::Frame(reply)) {
                            break "the link's writer stopped (the peer does not read its replies?)".to_owned();
                        }
                    }
                }
                // A CLOSE either way: by the peer, or by this node when a reload withdrew
                // the peer (revoked, no longer authorized, re-join failed).
                Ok(None) => {
                    let cause = rx.close_cause();
                    node.ops.link_ended(&peer, &addr, dialed, cause.as_ref());
                    break match cause {
                        Some(cause) => cause.to_string(),
                        None => "closed by the peer".to_owned(),
                    };
                }
                Err(e) => {
                    if let palisade::LinkError::Closed(cause) = &e {
                        node.ops.link_ended(&peer, &addr, dialed, Some(cause));
                    }
                    break format!("{e}");
                }
            },
            _ = &mut close_rx => {
                out.send(Out::Close(CloseReason::new(CloseCode::ShuttingDown, "node shutting down or link replaced")));
                let _ = writer.await;
                break "closed by this node (CLOSE sent)".to_owned();
            }
        }
    };
    drop(streams);
    info!(peer = %peer.node_id, "link with {} ended: {ended}", peer.node_id);
    node.unregister(&peer.node_id, id);
}

fn frame_pong(ping: &Bytes) -> Bytes {
    let mut b = BytesMut::from(&ping[..]);
    if let Some(first) = b.first_mut() {
        *first = proto::PONG;
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Node {
        let config = Config::new("test", id);
        Node {
            id: id.into(),
            links: Mutex::new(HashMap::new()),
            next_link: AtomicU64::new(1),
            own_cert: RwLock::new(None),
            key_id: RwLock::new(String::new()),
            counters: Counters::default(),
            link_gone: Notify::new(),
            reloaded: Notify::new(),
            dialer: Dialer::new(Endpoint::new(config).unwrap()),
            connect_timeout: RwLock::new(Duration::from_secs(1)),
            metrics: Metrics::new(id),
            started: Instant::now(),
            ops: crate::ops::Ops::default(),
            forward: Forwarder::new(id),
        }
    }

    /// Two nodes that dial each other keep the same one of their two links, whichever
    /// joined first on each side; links in one direction (probes) are all kept.
    #[test]
    fn of_two_mutual_links_both_ends_keep_the_one_the_smaller_id_dialed() {
        let (a, b) = (node("node-a"), node("node-b"));
        // node-a: its accepted link from node-b joins first, then its own dial.
        let (tx, mut a_accepted) = oneshot::channel();
        let first = a.register("node-b", false, tx).unwrap();
        let (tx, _a_dialed) = oneshot::channel();
        assert!(a.register("node-b", true, tx).is_some());
        assert!(
            a_accepted.try_recv().is_ok(),
            "node-a closes the link node-b dialed"
        );
        a.unregister("node-b", first); // as its link task does once CLOSE is sent
                                       // node-b: the other order; it refuses its own dial and keeps the accepted one.
        let (tx, _b_accepted) = oneshot::channel();
        assert!(b.register("node-a", false, tx).is_some());
        let (tx, _b_dialed) = oneshot::channel();
        assert!(b.register("node-a", true, tx).is_none());
        // Probes (same direction) coexist.
        for _ in 0..2 {
            let (tx, _) = oneshot::channel();
            assert!(a.register("probe", false, tx).is_some());
        }
        assert_eq!(a.link_count(), 3);
    }
}
