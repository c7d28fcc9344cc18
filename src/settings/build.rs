//! From settings to a node: every check that needs no certificate, the secrets read
//! from their files, and the core `Config` and admission limits, with a report of
//! everything found. Nothing stops at the first problem.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use palisade_core::join::{Keyring, MAX_NAME_LEN};
use palisade_core::revocation::Revocations;
use palisade_core::tls::TlsConfig;
use palisade_core::NodePattern;
use palisade_core::{Config, ConfigError};
use palisade_driver::admission::{AdmissionError, AdmissionLimits};

use super::keyring::MAKE_SECRET;
use super::{format_duration, Settings};
use crate::report::{Finding, Report};

/// What [`Settings::build`] made.
#[derive(Debug)]
pub struct Loaded {
    /// The core's settings; `None` when the report has errors.
    pub config: Option<Config>,
    /// The listener's admission limits.
    pub limits: AdmissionLimits,
    /// Everything found: errors, warnings, notes.
    pub report: Report,
}

impl Settings {
    /// Checks the settings, reads the secret files (and, once wired, the TLS files) and
    /// makes the node's `Config`. `now` dates the certificate checks.
    pub fn build(&self, now: SystemTime) -> Loaded {
        let mut report = Report::default();
        self.check_names(&mut report);
        self.check_addresses(&mut report);
        self.check_numbers(&mut report);
        self.check_forwards(&mut report);
        let keyring = self.keyring(&mut report);
        let no_secret = self.shared_secret.is_none() && self.shared_secret_file.is_none();
        if no_secret && !self.tls.tls_enabled {
            report.push(Finding::warning(
                "shared_secret",
                "no authentication at all: TLS is off and there is no shared secret, so any host \
                 that can reach this node's port can join the cluster",
                format!(
                    "set shared_secret_file (or PALISADE_SHARED_SECRET); {MAKE_SECRET}; and turn \
                         on TLS (tls_enabled = true) where the network is not trusted"
                ),
            ));
        }
        // With TLS off this reports the TLS settings that then do nothing.
        let tls = crate::tls_load::load_tls(&self.tls, &self.node_id, now, &mut report);
        let revoked = self.revocations(&mut report);
        let allowed_peers = self.allowed_peers(&mut report);
        if let Some(revoked) = &revoked {
            self.check_own_revocation(revoked, tls.as_ref(), keyring.as_ref(), &mut report);
        }
        self.check_mode(&mut report);
        let limits = self.limits(&mut report);
        let config = report
            .is_ok()
            .then(|| {
                let mut config = self.config(keyring, tls, &mut report)?;
                config.revoked = revoked.unwrap_or_default();
                config.allowed_peers = allowed_peers;
                Some(config)
            })
            .flatten();
        Loaded {
            config,
            limits,
            report,
        }
    }

    /// The deny-list of `revocation_file`: empty without one; `None` (with an error
    /// naming the key, the file and, for a bad line, its number) when the file is
    /// missing, unreadable or has a line that cannot be read. Never half applied.
    fn revocations(&self, report: &mut Report) -> Option<Revocations> {
        const KEY: &str = "revocation_file";
        let Some(path) = &self.revocation_file else {
            return Some(Revocations::default());
        };
        let bytes = crate::pem::read(KEY, path, report)?;
        let Ok(text) = String::from_utf8(bytes) else {
            report.push(
                Finding::error(
                    KEY,
                    "the revocation file is not UTF-8 text",
                    "write it as text: one `node-id ID`, `serial HEX ISSUER`, `spki-sha256 HEX` or `key-id HEX` entry a line",
                )
                .in_file(path),
            );
            return None;
        };
        match Revocations::parse(&text, &path.display().to_string()) {
            Ok(list) => {
                if !list.is_empty() {
                    report.push(
                        Finding::note(
                            KEY,
                            format!("{} revocation entry(ies)", list.entries().len()),
                        )
                        .in_file(path),
                    );
                }
                Some(list)
            }
            Err(e) => {
                report.push(
                    Finding::error(
                        KEY,
                        format!("line {}: {}", e.line, e.problem),
                        "write each line as `node-id ID`, `serial HEX ISSUER`, `spki-sha256 HEX` or `key-id HEX`, optionally followed by ` # reason`; a file with a bad line is refused whole (at a reload the last good list stays)",
                    )
                    .in_file(path),
                );
                None
            }
        }
    }

    /// The `allowed_peers` patterns; a bad one is an error naming the key.
    fn allowed_peers(&self, report: &mut Report) -> Vec<NodePattern> {
        let mut patterns = Vec::with_capacity(self.allowed_peers.len());
        for text in &self.allowed_peers {
            match NodePattern::new(text.as_str()) {
                Ok(p) => patterns.push(p),
                Err(cause) => report.push(Finding::error(
                    "allowed_peers",
                    cause,
                    "write node ids or patterns with `*`, e.g. \"node-*\" or \"db-*-eu\"",
                )),
            }
        }
        if !patterns.is_empty() && !patterns.iter().any(|p| p.matches(&self.node_id)) {
            report.push(Finding::note(
                "allowed_peers",
                format!(
                    "this node's own node_id {:?} matches none of allowed_peers (fine when this node's role only talks to others)",
                    self.node_id
                ),
            ));
        }
        patterns
    }

    /// This node's own node id, certificate or secret in the deny-list: its peers,
    /// reading the same list, refuse it, so `check` says so. A warning, as for an expired
    /// certificate: the node still starts (and `probe` can say it is revoked, exit 12),
    /// and a revocation list shared by every node still reloads on the revoked one.
    fn check_own_revocation(
        &self,
        revoked: &Revocations,
        tls: Option<&TlsConfig>,
        keyring: Option<&Keyring>,
        report: &mut Report,
    ) {
        const KEY: &str = "revocation_file";
        let file = self.revocation_file.clone().unwrap_or_default();
        let fix = "give this node a new identity (node id, certificate and key) or, if it was revoked by mistake, remove the entry";
        if let Some(entry) = revoked.node_id(&self.node_id) {
            report.push(
                Finding::warning(
                    KEY,
                    format!(
                        "this node's own node id is revoked: {entry}; every peer will refuse it"
                    ),
                    fix,
                )
                .in_file(&file),
            );
        }
        if let Some(leaf) = tls.and_then(|t| t.identity.cert_chain.first()) {
            if let Some(entry) = revoked.certificate(leaf) {
                report.push(
                    Finding::warning(
                        KEY,
                        format!("this node's own certificate is revoked: {entry}; every peer will refuse it"),
                        fix,
                    )
                    .in_file(&file),
                );
            }
        }
        if let Some(keyring) = keyring {
            let id = keyring.primary().key_id();
            if let Some(entry) = revoked.key_id(id) {
                report.push(
                    Finding::warning(
                        KEY,
                        format!("this node's own shared secret (key id {id}) is revoked: {entry}; every peer will refuse it"),
                        "rotate to a new shared secret (shared_secret_file), or remove the entry",
                    )
                    .in_file(&file),
                );
            }
        }
    }

    fn check_names(&self, report: &mut Report) {
        for (key, value, what) in [
            (
                "cluster_name",
                &self.cluster_name,
                "the cluster's name, the same on every node",
            ),
            (
                "node_id",
                &self.node_id,
                "this node's id, unique in the cluster",
            ),
        ] {
            if value.is_empty() {
                report.push(Finding::error(
                    key,
                    format!("{key} is not set"),
                    format!("set {key} to {what}"),
                ));
            } else if value.len() > MAX_NAME_LEN {
                report.push(Finding::error(
                    key,
                    format!(
                        "{key} is {} bytes long; at most {MAX_NAME_LEN} bytes fit the join",
                        value.len()
                    ),
                    format!("shorten {key}"),
                ));
            }
        }
    }

    fn check_addresses(&self, report: &mut Report) {
        if let Some(listen) = &self.listen {
            if listen.parse::<SocketAddr>().is_err() {
                report.push(Finding::error(
                    "listen",
                    format!("listen = {listen:?} is not an IP address and port"),
                    "write e.g. \"0.0.0.0:7000\" or \"[::]:7000\"",
                ));
            }
        }
        if let Some(addr) = &self.metrics_listen {
            if addr.parse::<SocketAddr>().is_err() {
                report.push(Finding::error(
                    "metrics_listen",
                    format!("metrics_listen = {addr:?} is not an IP address and port"),
                    "write e.g. \"127.0.0.1:9464\" (or \"0.0.0.0:9464\" for a Prometheus outside the pod)",
                ));
            }
        }
        for seed in &self.seeds {
            let port = seed.rsplit_once(':').filter(|(host, _)| !host.is_empty());
            if port
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .is_none()
            {
                report.push(Finding::error(
                    "seeds",
                    format!("seed {seed:?} is not host:port"),
                    "write each seed as host:port, e.g. \"node-1.palisade:7000\" or \"10.0.0.7:7000\"",
                ));
            }
        }
    }

    fn check_numbers(&self, report: &mut Report) {
        if self.max_frame == 0 || u32::try_from(self.max_frame).is_err() {
            report.push(Finding::error(
                "max_frame",
                format!(
                    "max_frame is {}; it must be 1 to {} bytes",
                    self.max_frame,
                    u32::MAX
                ),
                "the default 8388608 (8 MiB) suits most clusters",
            ));
        }
        for (key, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("connect_timeout", self.connect_timeout),
            ("clock_skew_tolerance", self.clock_skew_tolerance),
            ("clock_ahead_tolerance", self.clock_ahead_tolerance),
            ("first_bytes_timeout", self.first_bytes_timeout),
            ("source_backoff", self.source_backoff),
        ] {
            if value.is_zero() {
                report.push(Finding::error(
                    key,
                    format!("{key} is zero"),
                    format!("give {key} a positive duration, e.g. \"10s\""),
                ));
            }
        }
        for (key, value) in [
            ("replay_cache_capacity", self.replay_cache_capacity),
            ("replay_cache_per_source", self.replay_cache_per_source),
            ("send_buffer_limit", self.send_buffer_limit),
            ("recv_buffer_limit", self.recv_buffer_limit),
            ("max_unjoined", self.max_unjoined),
            ("max_unjoined_per_source", self.max_unjoined_per_source),
            (
                "new_connection_burst_per_source",
                self.new_connection_burst_per_source as usize,
            ),
            (
                "failed_join_burst_per_source",
                self.failed_join_burst_per_source as usize,
            ),
        ] {
            if value == 0 {
                report.push(Finding::error(
                    key,
                    format!("{key} is zero"),
                    format!("give {key} a positive number"),
                ));
            }
        }
        for (key, rate) in [
            (
                "new_connection_rate_per_source",
                self.new_connection_rate_per_source,
            ),
            (
                "failed_join_rate_per_source",
                self.failed_join_rate_per_source,
            ),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                report.push(Finding::error(
                    key,
                    format!("{key} is {rate}"),
                    format!("give {key} a positive number per second"),
                ));
            }
        }
        let later = |a: Duration, b: Duration| !a.is_zero() && !b.is_zero() && a > b;
        if later(self.first_bytes_timeout, self.handshake_timeout) {
            report.push(Finding::warning(
                "first_bytes_timeout",
                format!(
                    "first_bytes_timeout ({}) is longer than handshake_timeout ({}), so it has no effect: the join deadline comes first",
                    format_duration(self.first_bytes_timeout),
                    format_duration(self.handshake_timeout)
                ),
                "make first_bytes_timeout shorter than handshake_timeout (default 2s), so silent sockets free listener slots early",
            ));
        }
        if later(self.clock_ahead_tolerance, self.clock_skew_tolerance) {
            report.push(Finding::warning(
                "clock_ahead_tolerance",
                format!(
                    "clock_ahead_tolerance ({}) is longer than clock_skew_tolerance ({}), which bounds it anyway",
                    format_duration(self.clock_ahead_tolerance),
                    format_duration(self.clock_skew_tolerance)
                ),
                "make clock_ahead_tolerance at most clock_skew_tolerance (default 30s)",
            ));
        }
    }

    fn limits(&self, report: &mut Report) -> AdmissionLimits {
        let defaults = AdmissionLimits::default();
        let limits = AdmissionLimits {
            max_unjoined: self.max_unjoined,
            max_unjoined_per_source: self.max_unjoined_per_source,
            new_connection_rate_per_source: self.new_connection_rate_per_source,
            new_connection_burst_per_source: self.new_connection_burst_per_source,
            failed_join_rate_per_source: self.failed_join_rate_per_source,
            failed_join_burst_per_source: self.failed_join_burst_per_source,
            source_backoff: self.source_backoff,
            // Not a setting: enough room to track every unjoined connection's source.
            max_tracked_sources: defaults
                .max_tracked_sources
                .max(self.max_unjoined.saturating_mul(16)),
            min_evict_age: self.min_evict_age,
        };
        // A backstop for limits the checks above missed.
        if report.is_ok() {
            if let Err(e) = limits.validate() {
                let key = match e {
                    AdmissionError::BadSetting { setting } => setting,
                    _ => "max_unjoined",
                };
                report.push(Finding::error(key, e.to_string(), format!("change {key}")));
            }
        }
        limits
    }

    fn config(
        &self,
        keyring: Option<Keyring>,
        tls: Option<TlsConfig>,
        report: &mut Report,
    ) -> Option<Config> {
        let mut config = Config::new(self.cluster_name.clone(), self.node_id.clone());
        config.keyring = keyring;
        config.tls = tls;
        config.max_frame = self.max_frame;
        config.handshake_timeout = self.handshake_timeout;
        config.clock_skew_tolerance = self.clock_skew_tolerance;
        config.clock_ahead_tolerance = self.clock_ahead_tolerance;
        config.first_bytes_timeout = self.first_bytes_timeout;
        config.replay_cache_capacity = self.replay_cache_capacity;
        config.replay_cache_per_source = self.replay_cache_per_source;
        config.send_buffer_limit = self.send_buffer_limit;
        config.recv_buffer_limit = self.recv_buffer_limit;
        config.mode = self.mode;
        config.close_on_peer_expiry = self.close_on_peer_expiry;
        match config.validate() {
            Ok(()) => Some(config),
            Err(e) => {
                report.push(Finding::error(
                    config_error_key(&e),
                    e.to_string(),
                    "change that setting",
                ));
                None
            }
        }
    }
}

/// The config key a core `ConfigError` is about.
pub(crate) fn config_error_key(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::BadName { setting, .. }
        | ConfigError::ZeroDuration { setting }
        | ConfigError::Zero { setting } => setting,
        ConfigError::MaxFrameOutOfRange(_) => "max_frame",
        ConfigError::Tls(_) => "tls_cert_file",
        ConfigError::NothingToMigrateTo => "mode",
        _ => "config",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_config_errors_map_onto_config_keys() {
        let mut c = Config::new("prod", "a");
        c.first_bytes_timeout = Duration::ZERO;
        assert_eq!(
            c.validate().map_err(|e| config_error_key(&e)),
            Err("first_bytes_timeout")
        );
        c.first_bytes_timeout = Duration::from_secs(1);
        c.max_frame = 0;
        assert_eq!(
            c.validate().map_err(|e| config_error_key(&e)),
            Err("max_frame")
        );
        let c = Config::new("", "a");
        assert_eq!(
            c.validate().map_err(|e| config_error_key(&e)),
            Err("cluster_name")
        );
        // Every key the core names is a settings key.
        for key in [
            "cluster_name",
            "node_id",
            "max_frame",
            "handshake_timeout",
            "clock_skew_tolerance",
            "clock_ahead_tolerance",
            "first_bytes_timeout",
            "send_buffer_limit",
            "recv_buffer_limit",
            "replay_cache_capacity",
            "replay_cache_per_source",
        ] {
            assert!(super::super::keys::find(key).is_some(), "{key}");
        }
    }
}
