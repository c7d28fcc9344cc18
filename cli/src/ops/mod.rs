//! The node's operations side: `metrics_listen` (HTTP `/metrics`, `/healthz`,
//! `/readyz`, [`http`]) and `audit_log` ([`audit`]). `palisade node` makes one [`Ops`]
//! at start and tells it what happens (joins, dials, refusals, closes, reloads); this
//! module decides what is exported, what is ready and what is written.

pub mod audit;
pub mod http;
pub mod names;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use palisade::core::tls::TrustAnchors;
use palisade::{CloseCause, CloseCode, Config, HandshakeFailure, LinkError, PeerInfo};
use tracing::{info, warn};

pub use audit::{Audit, Entry};

use crate::exit::{self, CliError};

/// How often the node's main loop reports itself alive ([`Health::beat`]).
pub const BEAT: Duration = Duration::from_secs(1);
/// `/healthz` fails once the main loop has not beaten for this long.
const STALE: Duration = Duration::from_secs(10);
/// Longest reason quoted on `/readyz`.
const REASON_MAX: usize = 200;

/// What `/readyz` reads: each seed's state. Ready once every seed has joined (at
/// least once since start) or was given up as permanently failing. A link that drops
/// later does not make the node unready: one peer's restart must not take every other
/// pod out of its Service (`palisade_links_open` shows the links).
#[derive(Debug)]
pub struct Readiness {
    seeds: Mutex<Vec<(String, Seed)>>,
}

#[derive(Debug, Clone)]
enum Seed {
    /// Not joined yet; the last failure, if any.
    Waiting(Option<String>),
    Joined(String),
    GaveUp(String),
}

impl Readiness {
    /// Every seed waiting.
    pub fn new(seeds: &[String]) -> Self {
        Self {
            seeds: Mutex::new(
                seeds
                    .iter()
                    .map(|s| (s.clone(), Seed::Waiting(None)))
                    .collect(),
            ),
        }
    }

    fn set(&self, seed: &str, f: impl Fn(&Seed) -> Option<Seed>) {
        if let Ok(mut seeds) = self.seeds.lock() {
            for (_, state) in seeds.iter_mut().filter(|(n, _)| n == seed) {
                if let Some(new) = f(state) {
                    *state = new;
                }
            }
        }
    }

    /// A dial of `seed` joined `node_id`.
    pub fn joined(&self, seed: &str, node_id: &str) {
        self.set(seed, |_| Some(Seed::Joined(node_id.to_owned())));
    }

    /// A dial of `seed` failed; `permanent`: the dial loop gave it up until a reload.
    pub fn failed(&self, seed: &str, reason: &str, permanent: bool) {
        let reason: String = reason.chars().take(REASON_MAX).collect();
        self.set(seed, |state| match (state, permanent) {
            (_, true) => Some(Seed::GaveUp(reason.clone())),
            (Seed::Waiting(_), false) => Some(Seed::Waiting(Some(reason.clone()))),
            // Joined once, or given up: a retry failing changes nothing.
            _ => None,
        });
    }

    /// `Ok(text)` when ready, `Err(text naming the seeds not ready)` otherwise.
    pub fn check(&self) -> Result<String, String> {
        let seeds = self.seeds.lock().map(|s| s.clone()).unwrap_or_default();
        let waiting: Vec<String> = seeds
            .iter()
            .filter_map(|(name, state)| match state {
                Seed::Waiting(None) => Some(format!("seed {name}: not joined yet\n")),
                Seed::Waiting(Some(why)) => Some(format!("seed {name}: not joined yet: {why}\n")),
                _ => None,
            })
            .collect();
        if !waiting.is_empty() {
            return Err(format!("not ready\n{}", waiting.concat()));
        }
        let mut text = String::from("ready\n");
        for (name, state) in &seeds {
            match state {
                Seed::Joined(node) => text += &format!("seed {name}: joined {node}\n"),
                Seed::GaveUp(why) => text += &format!("seed {name}: given up: {why}\n"),
                Seed::Waiting(_) => {}
            }
        }
        Ok(text)
    }
}

/// What `/healthz` reads: the node's main loop beats every [`BEAT`]; healthy while it
/// has beaten within 10 s and the node is not stopping.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the last beat.
    last: AtomicU64,
    stopping: AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// The main loop is turning.
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// The node is shutting down.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn check(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("stopping".into());
        }
        let since = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)));
        if since > STALE {
            return Err(format!(
                "the node's main loop has not run for {:.0}s",
                since.as_secs_f64()
            ));
        }
        Ok(())
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// What a reload can change that an audit reader cares about.
#[derive(Debug, Clone, Default, PartialEq)]
struct Summary {
    cert_serial: Option<String>,
    key_id: Option<String>,
    accepted_key_ids: Vec<String>,
    trust: String,
    crls: String,
    revocations: usize,
    allowed_peers: Vec<String>,
    mode: String,
}

fn fingerprint<'a>(ders: impl Iterator<Item = &'a [u8]>) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0;
    for der in ders {
        ctx.update(&(der.len() as u64).to_be_bytes());
        ctx.update(der);
        n += 1;
    }
    let digest = hex::encode(&ctx.finish().as_ref()[..6]);
    format!("{n} ({digest})")
}

impl Summary {
    fn of(config: &Config) -> Self {
        let tls = config.tls.as_ref();
        let (kind, anchors) = match tls.map(|t| &t.trust) {
            Some(TrustAnchors::CaBundle(certs)) => ("CA certificates", certs.as_slice()),
            Some(TrustAnchors::Pinned(certs)) => ("pinned certificates", certs.as_slice()),
            None => ("", &[][..]),
        };
        let primary = config.keyring.as_ref().map(|k| k.primary().key_id());
        Self {
            cert_serial: tls
                .and_then(|t| t.identity.cert_chain.first())
                .and_then(|der| palisade::tls_load::serial_hex(der)),
            key_id: primary.map(|k| k.to_string()),
            accepted_key_ids: config
                .keyring
                .as_ref()
                .map(|k| {
                    k.key_ids()
                        .filter(|id| Some(*id) != primary)
                        .map(|id| id.to_string())
                        .collect()
                })
                .unwrap_or_default(),
            trust: if kind.is_empty() {
                "none".into()
            } else {
                format!("{kind} {}", fingerprint(anchors.iter().map(|c| c.as_ref())))
            },
            crls: fingerprint(tls.map_or(&[][..], |t| &t.crls).iter().map(|c| c.as_ref())),
            revocations: config.revoked.entries().len(),
            allowed_peers: config
                .allowed_peers
                .iter()
                .map(ToString::to_string)
                .collect(),
            mode: config.mode.to_string(),
        }
    }

    /// `what: before -> after` for each difference.
    fn changes(&self, new: &Self) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{what}: {a} -> {b}"));
            }
        };
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
        diff("cert_serial", opt(&self.cert_serial), opt(&new.cert_serial));
        diff("key_id", opt(&self.key_id), opt(&new.key_id));
        diff(
            "accepted key ids",
            format!("{:?}", self.accepted_key_ids),
            format!("{:?}", new.accepted_key_ids),
        );
        diff("trust", self.trust.clone(), new.trust.clone());
        diff("CRLs", self.crls.clone(), new.crls.clone());
        diff(
            "revocation entries",
            self.revocations.to_string(),
            new.revocations.to_string(),
        );
        diff(
            "allowed_peers",
            format!("{:?}", self.allowed_peers),
            format!("{:?}", new.allowed_peers),
        );
        diff("mode", self.mode.clone(), new.mode.clone());
        out
    }
}

/// The node's operations side. [`Ops::default`] does nothing (no endpoints, no log).
#[derive(Debug, Default)]
pub struct Ops {
    pub audit: Audit,
    pub ready: Arc<Readiness>,
    pub health: Arc<Health>,
    last: Mutex<Summary>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// `metrics_listen` and `audit_log` as started: a reload does not move them.
    started_with: (Option<String>, Option<std::path::PathBuf>),
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl Ops {
    /// Opens `audit_log`, installs the Prometheus recorder and binds `metrics_listen`
    /// (each when set). Call before the node's listener and dialer exist, so the
    /// recorder sees their every update. An error names the key.
    pub async fn start(settings: &palisade::Settings, config: &Config) -> Result<Self, CliError> {
        let audit = match &settings.audit_log {
            Some(path) => {
                let audit = Audit::open(path)?;
                info!("audit log: appending to {}", path.display());
                audit
            }
            None => Audit::off(),
        };
        let mut ops = Self {
            audit,
            ready: Arc::new(Readiness::new(&settings.seeds)),
            health: Arc::new(Health::new()),
            last: Mutex::new(Summary::of(config)),
            server: None,
            started_with: (settings.metrics_listen.clone(), settings.audit_log.clone()),
        };
        ops.health.beat();
        if let Some(addr) = &settings.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr.as_str())
                .await
                .map_err(|e| {
                    CliError::new(exit::IO, format!("metrics_listen: cannot listen on {addr}"))
                        .cause(&e)
                        .hint("is another process on that port? change `metrics_listen`")
                })?;
            let handle = PrometheusBuilder::new().install_recorder().map_err(|e| {
                CliError::new(
                    exit::IO,
                    "metrics_listen: cannot install the metrics recorder",
                )
                .cause(&e)
            })?;
            names::describe(&config.node_id);
            // The file watch refreshes it at every check; until its first, the
            // certificate loaded now says it.
            let expiry = config
                .tls
                .as_ref()
                .and_then(|t| t.identity.cert_chain.first())
                .and_then(|der| palisade::core::tls::CertSummary::parse(der))
                .map(|c| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                    c.not_after.saturating_sub(now)
                });
            #[allow(clippy::cast_precision_loss)]
            let expiry = expiry.map_or(f64::NAN, |s| s as f64);
            metrics::gauge!("palisade_cert_expiry_seconds", "node" => config.node_id.clone())
                .set(expiry);
            let local = listener
                .local_addr()
                .map_or(addr.clone(), |a| a.to_string());
            info!("serving /metrics, /healthz and /readyz on http://{local}");
            let state = Arc::new(http::State {
                metrics: Some(handle),
                ready: Arc::clone(&ops.ready),
                health: Arc::clone(&ops.health),
            });
            ops.server = Some(tokio::spawn(http::serve(listener, state)));
        }
        Ok(ops)
    }

    /// SIGHUP read `settings` from `file`: `metrics_listen` and `audit_log` take effect at
    /// the next start only, which is said when they changed.
    pub fn check_restart_keys(&self, settings: &palisade::Settings, file: &std::path::Path) {
        if settings.metrics_listen != self.started_with.0 {
            warn!(
                "metrics_listen changed in {}; restart the node to serve on the new address",
                file.display()
            );
        }
        if settings.audit_log != self.started_with.1 {
            warn!(
                "audit_log changed in {}; restart the node to write the new file",
                file.display()
            );
        }
    }

    /// A link joined (`dialed`: this node dialed `addr`; else it accepted from it).
    pub fn joined(&self, peer: &PeerInfo, addr: &str, dialed: bool) {
        let mut e = peer_entry("join", peer, addr);
        e.side = Some(side(dialed));
        self.audit.record(&e);
    }

    /// A dial of `seed` joined `peer`.
    pub fn dialed(&self, seed: &str, peer: &PeerInfo) {
        self.ready.joined(seed, &peer.node_id);
    }

    /// A dial of `seed` failed; `permanent`: given up until a reload.
    pub fn dial_failed(&self, seed: &str, error: &LinkError, permanent: bool) {
        self.ready.failed(seed, &error.to_string(), permanent);
        if let Some(code) = refusal_code(error) {
            let mut e = Entry::new("join_refused");
            e.peer_addr = Some(seed.to_owned());
            e.side = Some("dialed");
            e.code = Some(code);
            e.reason = Some(error.to_string());
            self.audit.record(&e);
        }
    }

    /// A joined link ended; audited when a trust rule ended it (revoked, no longer
    /// authorized, certificate expired, re-join failed), whichever end decided.
    pub fn link_ended(
        &self,
        peer: &PeerInfo,
        addr: &str,
        dialed: bool,
        cause: Option<&CloseCause>,
    ) {
        let (reason, by) = match cause {
            Some(CloseCause::Local(r)) => (r, "this node"),
            Some(CloseCause::Peer(r)) => (r, "the peer"),
            _ => return,
        };
        let Some(label) = trust_label(reason.code) else {
            return;
        };
        let mut e = peer_entry("link_closed_by_trust", peer, addr);
        e.side = Some(side(dialed));
        e.code = Some(label.to_owned());
        e.reason = Some(format!("closed by {by}: {}", reason.message));
        self.audit.record(&e);
    }

    /// New settings were taken (`source`: `files` or `config`).
    pub fn reloaded(&self, source: &str, config: &Config) {
        let new = Summary::of(config);
        let changed = match self.last.lock() {
            Ok(mut last) => {
                let changed = last.changes(&new);
                *last = new;
                changed
            }
            Err(_) => Vec::new(),
        };
        let mut e = Entry::new("reload");
        e.result = Some("ok");
        e.source = Some(source.to_owned());
        e.changed = Some(changed);
        self.audit.record(&e);
    }

    /// New settings were refused; the previous ones stay.
    pub fn reload_failed(&self, source: &str, reason: &str) {
        let mut e = Entry::new("reload");
        e.result = Some("failed");
        e.source = Some(source.to_owned());
        e.reason = Some(reason.to_owned());
        self.audit.record(&e);
    }

    /// The node is stopping: `/healthz` says so, and the audit log is flushed.
    pub fn stopping(&self) {
        self.health.stopping();
        self.audit.flush(Duration::from_secs(2));
    }
}

impl Audit {
    /// The listener gave up on a handshake: recorded when the peer was refused (a
    /// join refusal, a TLS failure); admission closures, timeouts and resets are not
    /// security decisions about a peer and only count in the metrics.
    pub fn handshake_failed(&self, failure: &HandshakeFailure) {
        let Some(code) = refusal_code(&failure.error) else {
            return;
        };
        let mut e = Entry::new("join_refused");
        e.peer_addr = Some(failure.peer_addr.to_string());
        e.side = Some("accepted");
        e.code = Some(code);
        e.reason = Some(failure.error.to_string());
        self.record(&e);
    }
}

fn side(dialed: bool) -> &'static str {
    if dialed {
        "dialed"
    } else {
        "accepted"
    }
}

fn peer_entry(event: &'static str, peer: &PeerInfo, addr: &str) -> Entry {
    let mut e = Entry::new(event);
    e.peer_addr = Some(addr.to_owned());
    e.node_id = Some(peer.node_id.clone());
    e.cert_serial = peer.tls.as_ref().and_then(|t| t.serial()).map(hex::encode);
    e.key_id = peer.key_id.map(|k| k.to_string());
    e
}

/// The label of a refusal: the reject code, or the TLS failure's cause.
fn refusal_code(error: &LinkError) -> Option<String> {
    if let Some(code) = error.reject_code() {
        return Some(palisade::metrics::reject_label(code).to_owned());
    }
    match error {
        LinkError::Link(e) => palisade::metrics::tls_failure_label(e).map(str::to_owned),
        _ => None,
    }
}

fn trust_label(code: CloseCode) -> Option<&'static str> {
    Some(match code {
        CloseCode::Revoked => "revoked",
        CloseCode::NotAuthorized => "not_authorized",
        CloseCode::CertificateExpired => "certificate_expired",
        CloseCode::RejoinFailed => "rejoin_failed",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_seed_joined_or_was_given_up() {
        let r = Readiness::new(&["a:1".into(), "b:2".into()]);
        let not = r.check().unwrap_err();
        assert!(
            not.contains("seed a:1") && not.contains("seed b:2"),
            "{not}"
        );
        r.failed("a:1", "connection refused", false);
        r.joined("b:2", "node-b");
        let not = r.check().unwrap_err();
        assert!(
            not.contains("a:1: not joined yet: connection refused") && !not.contains("b:2"),
            "{not}"
        );
        r.failed("a:1", "unknown CA", true);
        let ready = r.check().unwrap();
        assert!(
            ready.contains("given up: unknown CA") && ready.contains("joined node-b"),
            "{ready}"
        );
        r.failed("b:2", "connection refused", false);
        assert!(
            r.check().is_ok(),
            "a later failure does not make it unready"
        );
        assert!(Readiness::new(&[]).check().is_ok());
    }

    #[test]
    fn health_fails_when_stopping() {
        let h = Health::new();
        assert!(h.check().is_ok());
        h.stopping();
        assert_eq!(h.check(), Err("stopping".into()));
    }
}
