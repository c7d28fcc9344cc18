//! What one node's links are doing, counted: one [`Metrics`] handle (cheap to clone,
//! atomics behind an `Arc`) shared by a node's listener(s) and dialer(s), read as a plain
//! [`MetricsSnapshot`] without any metrics library. With the `metrics` feature every
//! update also goes to the [`metrics`](https://docs.rs/metrics) facade under
//! Prometheus-style names (`palisade_links_open`, `palisade_joins_refused_total`, ...),
//! labelled `node = <node id>`.
//!
//! Cost on the frame path: a link tallies its frames and payload bytes under the lock it
//! already holds and adds the tally to these counters once per batch (each time its
//! socket loop takes output or feeds input, when the application has drained what
//! arrived, and when the link ends), with relaxed atomics: the counters are statistics,
//! nothing synchronises through them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use palisade_core::tls::{CertRefusal, TlsError};
use palisade_core::{ConnectionError, JoinError, PrefaceError, RejectCode, Side};

use crate::error::Error;

/// Which node refused a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// This node refused the peer (and sent it the REJECT).
    Sent,
    /// The peer refused this node (this node received the REJECT).
    Received,
}

impl Direction {
    /// The label value: `sent` or `received`.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// `cert_expiry_seconds` when no certificate is known.
const NO_EXPIRY: i64 = i64::MIN;

#[derive(Debug)]
struct Inner {
    node_id: String,
    links_accepted: AtomicU64,
    links_dialed: AtomicU64,
    links_open: AtomicU64,
    joins_ok: AtomicU64,
    joins_refused: Mutex<HashMap<(RejectCode, Direction), u64>>,
    tls_failures: Mutex<BTreeMap<&'static str, u64>>,
    handshakes_in_progress: AtomicU64,
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    links_below_strict: AtomicU64,
    cert_expiry_seconds: AtomicI64,
    permissive: AtomicBool,
    rejoins_ok: AtomicU64,
    rejoins_failed: AtomicU64,
    links_closed_by_trust: Mutex<BTreeMap<&'static str, u64>>,
}

/// One node's counters and gauges. Clones share them: give the same handle to the
/// node's listener (`Acceptor::with_limits_and_metrics`) and its dials
/// ([`Dial::metrics`](crate::Dial::metrics)). Two handles are equal when they share
/// their counters.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl PartialEq for Metrics {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Metrics {}

impl Default for Metrics {
    /// Counters labelled with an empty node id.
    fn default() -> Self {
        Self::new("")
    }
}

/// A link's frames and payload bytes not yet added to the node's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
}

impl Tally {
    /// Frames a link tallies before it adds them to the node's counters even without a
    /// batch boundary, so a busy link's counts never lag far.
    pub const FLUSH_FRAMES: u64 = 64;

    pub fn is_empty(&self) -> bool {
        self.frames_sent == 0 && self.frames_received == 0
    }

    pub fn is_full(&self) -> bool {
        self.frames_sent + self.frames_received >= Self::FLUSH_FRAMES
    }
}

impl Metrics {
    /// Zeroed counters for the node `node_id` (the `node` label of the facade).
    pub fn new(node_id: impl Into<String>) -> Self {
        Self(Arc::new(Inner {
            node_id: node_id.into(),
            links_accepted: AtomicU64::new(0),
            links_dialed: AtomicU64::new(0),
            links_open: AtomicU64::new(0),
            joins_ok: AtomicU64::new(0),
            joins_refused: Mutex::default(),
            tls_failures: Mutex::default(),
            handshakes_in_progress: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            links_below_strict: AtomicU64::new(0),
            cert_expiry_seconds: AtomicI64::new(NO_EXPIRY),
            permissive: AtomicBool::new(false),
            rejoins_ok: AtomicU64::new(0),
            rejoins_failed: AtomicU64::new(0),
            links_closed_by_trust: Mutex::default(),
        }))
    }

    /// The node id these counters are labelled with.
    pub fn node_id(&self) -> &str {
        &self.0.node_id
    }

    /// Every counter and gauge now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let i = &*self.0;
        let expiry = i.cert_expiry_seconds.load(Relaxed);
        MetricsSnapshot {
            links_accepted: i.links_accepted.load(Relaxed),
            links_dialed: i.links_dialed.load(Relaxed),
            links_open: i.links_open.load(Relaxed),
            joins_ok: i.joins_ok.load(Relaxed),
            joins_refused: lock(&i.joins_refused).clone(),
            tls_failures: lock(&i.tls_failures).clone(),
            handshakes_in_progress: i.handshakes_in_progress.load(Relaxed),
            frames_sent: i.frames_sent.load(Relaxed),
            frames_received: i.frames_received.load(Relaxed),
            bytes_sent: i.bytes_sent.load(Relaxed),
            bytes_received: i.bytes_received.load(Relaxed),
            reloads_ok: i.reloads_ok.load(Relaxed),
            reloads_failed: i.reloads_failed.load(Relaxed),
            links_below_strict: i.links_below_strict.load(Relaxed),
            cert_expiry_seconds: (expiry != NO_EXPIRY).then_some(expiry),
            permissive: i.permissive.load(Relaxed),
            rejoins_ok: i.rejoins_ok.load(Relaxed),
            rejoins_failed: i.rejoins_failed.load(Relaxed),
            links_closed_by_trust: lock(&i.links_closed_by_trust).clone(),
        }
    }

    /// A joined link re-joined under the current secret (`ok`), or its re-join failed
    /// and the link closed (PROTOCOL.md §5.8).
    pub fn record_rejoin(&self, ok: bool) {
        if ok {
            self.0.rejoins_ok.fetch_add(1, Relaxed);
            facade::counter(self, "palisade_rejoins_ok_total", 1);
        } else {
            self.0.rejoins_failed.fetch_add(1, Relaxed);
            facade::counter(self, "palisade_rejoins_failed_total", 1);
        }
    }

    /// A joined link this node closed because the current settings withdrew the peer:
    /// `cause` is `revoked`, `not_authorized`, `certificate_expired` or `rejoin_failed`.
    pub fn record_trust_close(&self, cause: &'static str) {
        *lock(&self.0.links_closed_by_trust)
            .entry(cause)
            .or_default() += 1;
        facade::trust_close(self, cause);
    }

    /// A reload of the node's files (certificate, key, CA bundle, secret) was taken
    /// (`ok`) or refused, keeping the last good set.
    pub fn record_reload(&self, ok: bool) {
        if ok {
            self.0.reloads_ok.fetch_add(1, Relaxed);
            facade::counter(self, "palisade_reloads_ok_total", 1);
        } else {
            self.0.reloads_failed.fetch_add(1, Relaxed);
            facade::counter(self, "palisade_reloads_failed_total", 1);
        }
    }

    /// Seconds until the node's certificate expires (negative once it has), or `None`
    /// without a certificate.
    pub fn set_cert_expiry(&self, seconds: Option<i64>) {
        // i64::MIN seconds is 292 billion years ago: no certificate says that.
        let stored = seconds.map_or(NO_EXPIRY, |s| s.max(NO_EXPIRY + 1));
        self.0.cert_expiry_seconds.store(stored, Relaxed);
        #[allow(clippy::cast_precision_loss)]
        facade::gauge_set(
            self,
            "palisade_cert_expiry_seconds",
            seconds.map_or(f64::NAN, |s| s as f64),
        );
    }

    /// A link was accepted that did not meet the strict settings (migration mode).
    pub fn record_below_strict(&self) {
        self.0.links_below_strict.fetch_add(1, Relaxed);
        facade::counter(self, "palisade_links_below_strict_total", 1);
    }

    /// Whether the node runs in permissive (migration) mode.
    pub fn set_permissive(&self, permissive: bool) {
        self.0.permissive.store(permissive, Relaxed);
        facade::gauge_set(self, "palisade_permissive", f64::from(u8::from(permissive)));
    }

    /// The gauges that follow a listener's settings (`permissive`), for the settings it
    /// accepts with from now on: listeners call this when made and at every reconfigure.
    pub fn settings_in_use(&self, config: &palisade_core::Config) {
        self.set_permissive(config.mode == palisade_core::Mode::Permissive);
    }

    /// Counts a failed handshake by what ended it: a join refusal by its reject code and
    /// which side refused, a TLS failure by [`tls_failure_label`]. Other failures
    /// (timeouts, resets) are only reflected in `handshakes_in_progress`. The driver calls
    /// this for every handshake that fails on a link with metrics.
    pub fn record_failure(&self, error: &Error) {
        let Error::Link(e) = error else { return };
        if let ConnectionError::Join(join) = e {
            let direction = if matches!(join, JoinError::RefusedByPeer(_)) {
                Direction::Received
            } else {
                Direction::Sent
            };
            let code = join.rejection().code;
            *lock(&self.0.joins_refused)
                .entry((code, direction))
                .or_default() += 1;
            facade::refused(self, code, direction);
        } else if let Some(cause) = tls_failure_label(e) {
            *lock(&self.0.tls_failures).entry(cause).or_default() += 1;
            facade::tls_failure(self, cause);
        }
    }

    // ----- what the link calls -----

    pub(crate) fn handshake_started(&self) {
        self.0.handshakes_in_progress.fetch_add(1, Relaxed);
        facade::gauge_add(self, "palisade_handshakes_in_progress", 1.0);
    }

    pub(crate) fn handshake_ended(&self) {
        self.0.handshakes_in_progress.fetch_sub(1, Relaxed);
        facade::gauge_add(self, "palisade_handshakes_in_progress", -1.0);
    }

    /// A link joined; `open`: it is still up (counted in `links_open` until
    /// [`Metrics::link_closed`]).
    pub(crate) fn link_joined(&self, side: Side, open: bool) {
        let i = &*self.0;
        i.joins_ok.fetch_add(1, Relaxed);
        facade::counter(self, "palisade_joins_ok_total", 1);
        if side == Side::Acceptor {
            i.links_accepted.fetch_add(1, Relaxed);
            facade::counter(self, "palisade_links_accepted_total", 1);
        } else {
            i.links_dialed.fetch_add(1, Relaxed);
            facade::counter(self, "palisade_links_dialed_total", 1);
        }
        if open {
            i.links_open.fetch_add(1, Relaxed);
            facade::gauge_add(self, "palisade_links_open", 1.0);
        }
    }

    pub(crate) fn link_closed(&self) {
        self.0.links_open.fetch_sub(1, Relaxed);
        facade::gauge_add(self, "palisade_links_open", -1.0);
    }

    /// Adds a link's tally and empties it.
    pub(crate) fn add_traffic(&self, tally: &mut Tally) {
        if tally.is_empty() {
            return;
        }
        let i = &*self.0;
        let t = std::mem::take(tally);
        if t.frames_sent > 0 {
            i.frames_sent.fetch_add(t.frames_sent, Relaxed);
            i.bytes_sent.fetch_add(t.bytes_sent, Relaxed);
            facade::counter(self, "palisade_frames_sent_total", t.frames_sent);
            facade::counter(self, "palisade_bytes_sent_total", t.bytes_sent);
        }
        if t.frames_received > 0 {
            i.frames_received.fetch_add(t.frames_received, Relaxed);
            i.bytes_received.fetch_add(t.bytes_received, Relaxed);
            facade::counter(self, "palisade_frames_received_total", t.frames_received);
            facade::counter(self, "palisade_bytes_received_total", t.bytes_received);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters stay meaningful after a panic elsewhere.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The label of a reject code: stable, snake_case (`unknown_key`); `other` for codes
/// this version does not know.
pub fn reject_label(code: RejectCode) -> &'static str {
    match code {
        RejectCode::SecretRequired => "secret_required",
        RejectCode::NoSecret => "no_secret",
        RejectCode::AuthenticationFailed => "authentication_failed",
        RejectCode::UnknownKey => "unknown_key",
        RejectCode::ClockSkew => "clock_skew",
        RejectCode::Replay => "replay",
        RejectCode::ClusterMismatch => "cluster_mismatch",
        RejectCode::UnsupportedVersion => "unsupported_version",
        RejectCode::IdentityNotAllowed => "identity_not_allowed",
        RejectCode::Malformed => "malformed",
        RejectCode::Busy => "busy",
        RejectCode::Reflected => "reflected",
        RejectCode::Revoked => "revoked",
        _ => "other",
    }
}

/// The cause label of a TLS failure, or `None` when `error` is not one. Stable and few
/// (metrics labels must not grow without bound): what this node found wrong with the
/// peer's certificate (`unknown_ca`, `expired`, `not_yet_valid`, `not_pinned`,
/// `name_mismatch`, `name_not_allowed`, `no_shared_name`, `wrong_purpose`,
/// `bad_certificate`, `no_client_certificate`), the alert the peer refused this node
/// with (`peer_unknown_ca`, `peer_certificate_expired`, `peer_bad_certificate`,
/// `peer_certificate_unknown`, `peer_access_denied`, `peer_certificate_required`,
/// `peer_refused` for the rest), `incompatible` (no version or suite in common),
/// `handshake` (any other TLS failure), and a TLS/plaintext mismatch
/// (`peer_speaks_plaintext`, `peer_speaks_tls`).
pub fn tls_failure_label(error: &ConnectionError) -> Option<&'static str> {
    Some(match error {
        ConnectionError::Tls(tls) => match tls {
            TlsError::CertificateRefused(refusal) => match **refusal {
                CertRefusal::UnknownIssuer { .. } => "unknown_ca",
                CertRefusal::Expired { .. } => "expired",
                CertRefusal::NotYetValid { .. } => "not_yet_valid",
                CertRefusal::NotPinned { .. } => "not_pinned",
                CertRefusal::HostnameMismatch { .. } => "name_mismatch",
                CertRefusal::NameNotAllowed { .. } => "name_not_allowed",
                CertRefusal::NoSharedName { .. } => "no_shared_name",
                CertRefusal::WrongPurpose { .. } => "wrong_purpose",
                CertRefusal::Revoked { .. } => "revoked",
                _ => "bad_certificate",
            },
            TlsError::NoClientCertificate => "no_client_certificate",
            TlsError::RefusedByPeer { alert } => match alert.as_str() {
                "unknown_ca" => "peer_unknown_ca",
                "certificate_expired" => "peer_certificate_expired",
                "bad_certificate" => "peer_bad_certificate",
                "certificate_unknown" => "peer_certificate_unknown",
                "access_denied" => "peer_access_denied",
                "certificate_required" => "peer_certificate_required",
                "certificate_revoked" => "peer_certificate_revoked",
                _ => "peer_refused",
            },
            TlsError::Incompatible { .. } => "incompatible",
            _ => "handshake",
        },
        ConnectionError::Preface(PrefaceError::PeerSpeaksPlaintext) => "peer_speaks_plaintext",
        ConnectionError::Preface(PrefaceError::PeerSpeaksTls) => "peer_speaks_tls",
        _ => return None,
    })
}

/// Every counter and gauge of one node at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Links this node accepted that joined.
    pub links_accepted: u64,
    /// Links this node dialed that joined.
    pub links_dialed: u64,
    /// Joined links whose socket is not shut yet (gauge).
    pub links_open: u64,
    /// Joins that succeeded, either side.
    pub joins_ok: u64,
    /// Refused joins by reject code and by who refused.
    pub joins_refused: HashMap<(RejectCode, Direction), u64>,
    /// TLS failures by cause ([`tls_failure_label`]).
    pub tls_failures: BTreeMap<&'static str, u64>,
    /// Links between socket and join (gauge), both sides.
    pub handshakes_in_progress: u64,
    /// Frames the application queued on joined links.
    pub frames_sent: u64,
    /// Frames the application received.
    pub frames_received: u64,
    /// Payload bytes of `frames_sent`.
    pub bytes_sent: u64,
    /// Payload bytes of `frames_received`.
    pub bytes_received: u64,
    /// Reloads taken.
    pub reloads_ok: u64,
    /// Reloads refused (the last good set kept).
    pub reloads_failed: u64,
    /// Links accepted below the strict settings (migration mode).
    pub links_below_strict: u64,
    /// Seconds until the node's certificate expires (gauge; negative once expired).
    pub cert_expiry_seconds: Option<i64>,
    /// The node is in permissive (migration) mode (gauge).
    pub permissive: bool,
    /// Joined links that re-joined under the current secret.
    pub rejoins_ok: u64,
    /// Re-joins that failed (the link closed with code 9), either side.
    pub rejoins_failed: u64,
    /// Joined links this node closed because new settings withdrew the peer, by cause
    /// (`revoked`, `not_authorized`, `certificate_expired`, `rejoin_failed`).
    pub links_closed_by_trust: BTreeMap<&'static str, u64>,
}

impl MetricsSnapshot {
    /// Joins refused with `code`, by `direction`.
    pub fn refused(&self, code: RejectCode, direction: Direction) -> u64 {
        self.joins_refused
            .get(&(code, direction))
            .copied()
            .unwrap_or(0)
    }

    /// TLS failures with cause `label`.
    pub fn tls_failed(&self, label: &str) -> u64 {
        self.tls_failures.get(label).copied().unwrap_or(0)
    }
}

impl fmt::Display for MetricsSnapshot {
    /// One `name value` line each, labelled series as `name{label="value"} value`
    /// (sorted), gauges as numbers: readable as is and close to Prometheus' text format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = [
            ("links_accepted", self.links_accepted),
            ("links_dialed", self.links_dialed),
            ("links_open", self.links_open),
            ("joins_ok", self.joins_ok),
        ];
        for (name, value) in lines {
            writeln!(f, "{name} {value}")?;
        }
        let mut refused: Vec<_> = self.joins_refused.iter().collect();
        refused.sort_by_key(|((code, dir), _)| (code.to_u16(), *dir));
        for ((code, dir), n) in refused {
            writeln!(
                f,
                "joins_refused{{code=\"{}\",side=\"{dir}\"}} {n}",
                reject_label(*code)
            )?;
        }
        for (cause, n) in &self.tls_failures {
            writeln!(f, "tls_failures{{cause=\"{cause}\"}} {n}")?;
        }
        let lines = [
            ("handshakes_in_progress", self.handshakes_in_progress),
            ("frames_sent", self.frames_sent),
            ("frames_received", self.frames_received),
            ("bytes_sent", self.bytes_sent),
            ("bytes_received", self.bytes_received),
            ("reloads_ok", self.reloads_ok),
            ("reloads_failed", self.reloads_failed),
            ("links_below_strict", self.links_below_strict),
        ];
        for (name, value) in lines {
            writeln!(f, "{name} {value}")?;
        }
        writeln!(f, "rejoins_ok {}", self.rejoins_ok)?;
        writeln!(f, "rejoins_failed {}", self.rejoins_failed)?;
        for (cause, n) in &self.links_closed_by_trust {
            writeln!(f, "links_closed_by_trust{{cause=\"{cause}\"}} {n}")?;
        }
        match self.cert_expiry_seconds {
            Some(s) => writeln!(f, "cert_expiry_seconds {s}")?,
            None => writeln!(f, "cert_expiry_seconds none")?,
        }
        write!(f, "permissive {}", u8::from(self.permissive))
    }
}

/// The `metrics` facade, when the feature is on; nothing otherwise.
#[cfg(feature = "metrics")]
mod facade {
    use super::{reject_label, Direction, Metrics, RejectCode};

    pub fn counter(m: &Metrics, name: &'static str, n: u64) {
        metrics::counter!(name, "node" => m.node_id().to_owned()).increment(n);
    }

    pub fn gauge_add(m: &Metrics, name: &'static str, delta: f64) {
        metrics::gauge!(name, "node" => m.node_id().to_owned()).increment(delta);
    }

    pub fn gauge_set(m: &Metrics, name: &'static str, value: f64) {
        metrics::gauge!(name, "node" => m.node_id().to_owned()).set(value);
    }

    pub fn refused(m: &Metrics, code: RejectCode, direction: Direction) {
        metrics::counter!(
            "palisade_joins_refused_total",
            "node" => m.node_id().to_owned(),
            "code" => reject_label(code),
            "side" => direction.label()
        )
        .increment(1);
    }

    pub fn trust_close(m: &Metrics, cause: &'static str) {
        metrics::counter!("palisade_links_closed_by_trust_total", "node" => m.node_id().to_owned(), "cause" => cause)
            .increment(1);
    }

    pub fn tls_failure(m: &Metrics, cause: &'static str) {
        metrics::counter!(
            "palisade_tls_failures_total",
            "node" => m.node_id().to_owned(),
            "cause" => cause
        )
        .increment(1);
    }
}

#[cfg(not(feature = "metrics"))]
mod facade {
    use super::{Direction, Metrics, RejectCode};

    pub fn counter(_: &Metrics, _: &'static str, _: u64) {}
    pub fn gauge_add(_: &Metrics, _: &'static str, _: f64) {}
    pub fn gauge_set(_: &Metrics, _: &'static str, _: f64) {}
    pub fn refused(_: &Metrics, _: RejectCode, _: Direction) {}
    pub fn tls_failure(_: &Metrics, _: &'static str) {}
    pub fn trust_close(_: &Metrics, _: &'static str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::Rejection;

    fn refused(code: RejectCode, by_peer: bool) -> Error {
        let r = Rejection::new(code, "no");
        Error::Link(ConnectionError::Join(if by_peer {
            JoinError::RefusedByPeer(r)
        } else {
            JoinError::RefusedPeer(r)
        }))
    }

    fn tls(e: TlsError) -> Error {
        Error::Link(ConnectionError::Tls(e))
    }

    #[test]
    fn clones_share_the_counters_and_the_setters_show_in_the_snapshot() {
        let m = Metrics::new("n1");
        assert_eq!(m.snapshot(), MetricsSnapshot::default());
        let other = m.clone();
        assert_eq!(m, other);
        assert_ne!(m, Metrics::new("n1"), "another node's counters");
        other.record_reload(true);
        other.record_reload(false);
        other.record_reload(false);
        other.record_below_strict();
        other.set_permissive(true);
        other.set_cert_expiry(Some(-5));
        let s = m.snapshot();
        assert_eq!((s.reloads_ok, s.reloads_failed), (1, 2));
        assert_eq!(s.links_below_strict, 1);
        assert!(s.permissive);
        assert_eq!(s.cert_expiry_seconds, Some(-5));
        m.set_cert_expiry(None);
        m.set_permissive(false);
        let s = m.snapshot();
        assert_eq!((s.cert_expiry_seconds, s.permissive), (None, false));
        m.set_cert_expiry(Some(i64::MIN));
        assert!(m.snapshot().cert_expiry_seconds.is_some());
    }

    #[test]
    fn refusals_count_by_code_and_side_and_tls_failures_by_cause() {
        let m = Metrics::new("n1");
        m.record_failure(&refused(RejectCode::UnknownKey, false));
        m.record_failure(&refused(RejectCode::UnknownKey, false));
        m.record_failure(&refused(RejectCode::UnknownKey, true));
        m.record_failure(&refused(RejectCode::Other(77), true));
        m.record_failure(&tls(TlsError::CertificateRefused(Box::new(
            CertRefusal::UnknownIssuer {
                subject: "CN=x".into(),
                issuer: "CN=y".into(),
            },
        ))));
        m.record_failure(&tls(TlsError::RefusedByPeer {
            alert: "unknown_ca".into(),
        }));
        // Not counted: neither a refusal nor a TLS failure.
        m.record_failure(&Error::Io(std::io::ErrorKind::ConnectionReset.into()));
        m.record_failure(&Error::Link(ConnectionError::HandshakeTimeout {
            after: std::time::Duration::from_secs(1),
        }));
        let s = m.snapshot();
        assert_eq!(s.refused(RejectCode::UnknownKey, Direction::Sent), 2);
        assert_eq!(s.refused(RejectCode::UnknownKey, Direction::Received), 1);
        assert_eq!(s.refused(RejectCode::Other(77), Direction::Received), 1);
        assert_eq!(s.joins_refused.len(), 3);
        assert_eq!(
            s.tls_failures,
            BTreeMap::from([("peer_unknown_ca", 1), ("unknown_ca", 1)])
        );
        assert_eq!(s.tls_failed("unknown_ca"), 1);
        assert_eq!(s.tls_failed("expired"), 0);
    }

    #[test]
    fn tls_labels_are_short_and_bounded() {
        let label = |e: ConnectionError| tls_failure_label(&e);
        let refused =
            |r: CertRefusal| ConnectionError::Tls(TlsError::CertificateRefused(Box::new(r)));
        assert_eq!(
            label(refused(CertRefusal::Expired {
                not_after: String::new(),
                now: String::new()
            })),
            Some("expired")
        );
        assert_eq!(
            label(refused(CertRefusal::HostnameMismatch {
                expected: "a".into(),
                presented: Default::default()
            })),
            Some("name_mismatch")
        );
        assert_eq!(
            label(refused(CertRefusal::Invalid { detail: "x".into() })),
            Some("bad_certificate")
        );
        let alert = |a: &str| {
            label(ConnectionError::Tls(TlsError::RefusedByPeer {
                alert: a.into(),
            }))
        };
        assert_eq!(
            alert("certificate_expired"),
            Some("peer_certificate_expired")
        );
        // Whatever the peer sends, the label set stays fixed.
        assert_eq!(alert("anything the peer likes"), Some("peer_refused"));
        assert_eq!(
            label(ConnectionError::Tls(TlsError::Protocol {
                detail: "x".into()
            })),
            Some("handshake")
        );
        assert_eq!(
            label(ConnectionError::Preface(PrefaceError::PeerSpeaksPlaintext)),
            Some("peer_speaks_plaintext")
        );
        assert_eq!(
            label(ConnectionError::Preface(PrefaceError::PeerSpeaksHttp)),
            None
        );
    }

    #[test]
    fn the_link_side_moves_the_gauges_and_adds_its_tally() {
        let m = Metrics::new("n1");
        m.handshake_started();
        m.handshake_started();
        m.handshake_ended();
        m.link_joined(Side::Acceptor, true);
        m.link_joined(Side::Initiator, false);
        let mut tally = Tally {
            frames_sent: 3,
            bytes_sent: 30,
            frames_received: 2,
            bytes_received: 7,
        };
        m.add_traffic(&mut tally);
        assert_eq!(tally, Tally::default(), "the tally is emptied");
        let s = m.snapshot();
        assert_eq!(s.handshakes_in_progress, 1);
        assert_eq!((s.joins_ok, s.links_accepted, s.links_dialed), (2, 1, 1));
        assert_eq!(
            s.links_open, 1,
            "a link that joined already closed is not open"
        );
        assert_eq!(
            (
                s.frames_sent,
                s.bytes_sent,
                s.frames_received,
                s.bytes_received
            ),
            (3, 30, 2, 7)
        );
        m.link_closed();
        assert_eq!(m.snapshot().links_open, 0);
    }

    #[test]
    fn the_snapshot_reads_as_one_line_per_series() {
        let m = Metrics::new("n1");
        m.record_failure(&refused(RejectCode::ClockSkew, true));
        m.record_failure(&refused(RejectCode::UnknownKey, false));
        m.set_cert_expiry(Some(3600));
        let text = m.snapshot().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"links_accepted 0"));
        assert!(lines.contains(&"joins_refused{code=\"unknown_key\",side=\"sent\"} 1"));
        let skew = lines.iter().position(|l| l.contains("clock_skew"));
        let key = lines.iter().position(|l| l.contains("unknown_key"));
        assert!(key < skew, "sorted by code: {text}");
        assert!(lines.contains(&"cert_expiry_seconds 3600"));
        assert_eq!(lines.last(), Some(&"permissive 0"));
        assert!(lines.iter().all(|l| l.split(' ').count() == 2), "{text}");
    }

    /// The facade gets every update under its Prometheus-style name with the node label.
    #[cfg(feature = "metrics")]
    #[test]
    fn every_update_reaches_the_metrics_facade() {
        use metrics::{
            Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
            SharedString, Unit,
        };
        use std::sync::Mutex;

        type Store = Arc<Mutex<BTreeMap<String, f64>>>;
        struct Handle(String, Store);
        impl Handle {
            fn update(&self, f: impl FnOnce(&mut f64)) {
                f(self.1.lock().unwrap().entry(self.0.clone()).or_default());
            }
        }
        impl CounterFn for Handle {
            fn increment(&self, n: u64) {
                self.update(|v| *v += n as f64);
            }
            fn absolute(&self, n: u64) {
                self.update(|v| *v = n as f64);
            }
        }
        impl GaugeFn for Handle {
            fn increment(&self, n: f64) {
                self.update(|v| *v += n);
            }
            fn decrement(&self, n: f64) {
                self.update(|v| *v -= n);
            }
            fn set(&self, n: f64) {
                self.update(|v| *v = n);
            }
        }
        struct Rec(Store);
        impl Rec {
            fn handle(&self, key: &Key) -> Arc<Handle> {
                let mut labels: Vec<String> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                labels.sort();
                let name = format!("{}{{{}}}", key.name(), labels.join(","));
                Arc::new(Handle(name, Arc::clone(&self.0)))
            }
        }
        impl Recorder for Rec {
            fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
                Counter::from_arc(self.handle(key))
            }
            fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
                Gauge::from_arc(self.handle(key))
            }
            fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
                Histogram::noop()
            }
        }

        let store = Store::default();
        let recorder = Rec(Arc::clone(&store));
        metrics::with_local_recorder(&recorder, || {
            let m = Metrics::new("n1");
            m.handshake_started();
            m.handshake_ended();
            m.link_joined(Side::Acceptor, true);
            m.record_failure(&refused(RejectCode::UnknownKey, true));
            m.record_failure(&tls(TlsError::NoClientCertificate));
            m.add_traffic(&mut Tally {
                frames_sent: 2,
                bytes_sent: 10,
                frames_received: 1,
                bytes_received: 4,
            });
            m.record_reload(false);
            m.record_below_strict();
            m.set_cert_expiry(Some(60));
            m.set_permissive(true);
        });
        let got = store.lock().unwrap().clone();
        let want = [
            ("palisade_handshakes_in_progress{node=n1}", 0.0),
            ("palisade_joins_ok_total{node=n1}", 1.0),
            ("palisade_links_accepted_total{node=n1}", 1.0),
            ("palisade_links_open{node=n1}", 1.0),
            (
                "palisade_joins_refused_total{code=unknown_key,node=n1,side=received}",
                1.0,
            ),
            (
                "palisade_tls_failures_total{cause=no_client_certificate,node=n1}",
                1.0,
            ),
            ("palisade_frames_sent_total{node=n1}", 2.0),
            ("palisade_bytes_sent_total{node=n1}", 10.0),
            ("palisade_frames_received_total{node=n1}", 1.0),
            ("palisade_bytes_received_total{node=n1}", 4.0),
            ("palisade_reloads_failed_total{node=n1}", 1.0),
            ("palisade_links_below_strict_total{node=n1}", 1.0),
            ("palisade_cert_expiry_seconds{node=n1}", 60.0),
            ("palisade_permissive{node=n1}", 1.0),
        ];
        let want: BTreeMap<String, f64> = want.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        assert_eq!(got, want);
    }
}
