//! A node's settings, as an operator writes them: a TOML file (keys at its top level)
//! with environment overrides (`PALISADE_<KEY>`), or built in code. [`Settings::build`]
//! checks them all and makes the core's `Config` and the listener's admission limits.
//!
//! Every key is in one list, [`keys::KEYS`]: the loader refuses any other key (with a
//! did-you-mean), reads environment variables by it, and the README's table is checked
//! against it.

mod build;
pub mod duration;
mod error;
pub mod forward;
mod keyring;
pub mod keys;
mod mode;
mod secret;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use palisade_core::Config;
use palisade_driver::admission::AdmissionLimits;
use serde::{Deserialize, Serialize};

pub use build::Loaded;
pub use duration::{format_duration, parse_duration, DurationError};
pub use error::{SettingsError, SettingsErrors};
pub use forward::{ForwardSettings, ServiceSettings};
pub use keys::{Key, Kind, ENV_PREFIX, KEYS};
pub use secret::{key_id_of, secret_bytes, SecretText};
pub use tls::{MinTls, TlsSettings, TlsTrust};

use duration::human;

/// Everything an operator sets for a node. Field names are the config keys; the
/// environment variable of each is `PALISADE_` and the key in upper case. Defaults are
/// the core's and the listener's own (`Config::new`, `AdmissionLimits::default`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `cluster_name`: the cluster's name; peers naming another are refused.
    pub cluster_name: String,
    /// `node_id`: this node's id in the join.
    pub node_id: String,
    /// `listen`: the address to accept links on (`0.0.0.0:7000`); `None`: only dials.
    pub listen: Option<String>,
    /// `seeds`: peers to dial at start, `host:port`; comma-separated in the environment.
    pub seeds: Vec<String>,
    /// `metrics_listen`: `palisade node` serves `/metrics`, `/healthz` and `/readyz` on
    /// this address (`127.0.0.1:9464`); `None`: off.
    pub metrics_listen: Option<String>,
    /// `audit_log`: `palisade node` appends a JSON line per security event (joins,
    /// refusals, trust closes, reloads) to this file; `None`: off.
    pub audit_log: Option<PathBuf>,
    /// `shared_secret`: the join secret as text; best given as `PALISADE_SHARED_SECRET`.
    /// Never serialized or shown.
    #[serde(skip_serializing)]
    pub shared_secret: Option<SecretText>,
    /// `shared_secret_file`: a file holding the join secret.
    pub shared_secret_file: Option<PathBuf>,
    /// `accepted_secret_files`: files each holding one more secret accepted from peers
    /// during a rotation, or nothing (an empty file), so a rotation changes contents only.
    pub accepted_secret_files: Vec<PathBuf>,
    /// `max_frame`: largest frame payload accepted from a peer, bytes.
    pub max_frame: usize,
    /// `handshake_timeout`: from the start of a link to joined.
    #[serde(with = "human")]
    pub handshake_timeout: Duration,
    /// `connect_timeout`: how long dialing a peer's TCP port may take.
    #[serde(with = "human")]
    pub connect_timeout: Duration,
    /// `clock_skew_tolerance`: how far a join's timestamp may be from this node's clock.
    #[serde(with = "human")]
    pub clock_skew_tolerance: Duration,
    /// `clock_ahead_tolerance`: how far ahead a plaintext join may be dated.
    #[serde(with = "human")]
    pub clock_ahead_tolerance: Duration,
    /// `first_bytes_timeout`: listener, from accept to the peer's first byte.
    #[serde(with = "human")]
    pub first_bytes_timeout: Duration,
    /// `replay_cache_capacity`: plaintext join nonces remembered.
    pub replay_cache_capacity: usize,
    /// `replay_cache_per_source`: the share of them one peer may hold.
    pub replay_cache_per_source: usize,
    /// `send_buffer_limit`: outgoing bytes buffered before `send` reports full.
    pub send_buffer_limit: usize,
    /// `recv_buffer_limit`: received bytes not yet taken before reading stops.
    pub recv_buffer_limit: usize,
    /// `max_unjoined`: listener, unjoined connections of all sources.
    pub max_unjoined: usize,
    /// `max_unjoined_per_source`: listener, unjoined connections of one source.
    pub max_unjoined_per_source: usize,
    /// `new_connection_rate_per_source`: listener, new connections per second per source.
    pub new_connection_rate_per_source: f64,
    /// `new_connection_burst_per_source`: listener, burst above that rate.
    pub new_connection_burst_per_source: u32,
    /// `failed_join_rate_per_source`: listener, failed joins per second per source.
    pub failed_join_rate_per_source: f64,
    /// `failed_join_burst_per_source`: listener, failed joins at once before backoff.
    pub failed_join_burst_per_source: u32,
    /// `source_backoff`: listener, how long a source out of failed joins is refused.
    #[serde(with = "human")]
    pub source_backoff: Duration,
    /// `min_evict_age`: listener, the youngest unjoined connection that may be evicted.
    #[serde(with = "human")]
    pub min_evict_age: Duration,
    /// `reload_interval`: how often the file watch re-reads the certificate, key, CA
    /// and secret files; zero: never on its own (`FileWatch::check` on demand only).
    #[serde(with = "human")]
    pub reload_interval: Duration,
    /// `allowed_peers`: node ids (exact, or `*` globs such as `node-*`) allowed on the
    /// other end of a link. Empty: any node id (with TLS in CA mode still one its
    /// certificate names).
    pub allowed_peers: Vec<String>,
    /// `revocation_file`: the deny-list of node ids, certificate serials, SPKI pins and
    /// secret key ids (`palisade_core::revocation`), watched and reloaded like the
    /// certificate files. Named but missing or unreadable: an error.
    pub revocation_file: Option<PathBuf>,
    /// `close_on_peer_expiry`: close a joined link when its peer's certificate expires
    /// (default true).
    pub close_on_peer_expiry: bool,
    /// The TLS keys (`tls_enabled`, `tls_cert_file`, ...), at the top level of the file.
    #[serde(flatten)]
    pub tls: TlsSettings,
    /// `mode`: `strict` (the default), or `permissive` while a cluster moves to TLS or to
    /// a secret: the listener then also accepts plaintext peers and peers without the
    /// secret (reported on every such link, and warned about at every load).
    #[serde(with = "mode")]
    pub mode: palisade_core::Mode,
    /// `[[forward]]` tables (`palisade node`): local ports that reach a peer's service.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<ForwardSettings>,
    /// `[[service]]` tables (`palisade node`): local targets peers may reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service: Vec<ServiceSettings>,
    /// `[peers]` (`palisade node`): node id -> `host:port` to dial for a forward.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub peers: std::collections::BTreeMap<String, String>,
}

/// The default `connect_timeout`: enough for a peer across regions, short enough that
/// a dial to a dead address does not hold a reconnect loop.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default `reload_interval`: a renewed certificate is in use within seconds of
/// being written, at the cost of reading a few small files.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

impl Default for Settings {
    fn default() -> Self {
        let core = Config::new("", "");
        let limits = AdmissionLimits::default();
        Self {
            cluster_name: core.cluster_name,
            node_id: core.node_id,
            listen: None,
            seeds: Vec::new(),
            metrics_listen: None,
            audit_log: None,
            shared_secret: None,
            shared_secret_file: None,
            accepted_secret_files: Vec::new(),
            max_frame: core.max_frame,
            handshake_timeout: core.handshake_timeout,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            clock_skew_tolerance: core.clock_skew_tolerance,
            clock_ahead_tolerance: core.clock_ahead_tolerance,
            first_bytes_timeout: core.first_bytes_timeout,
            replay_cache_capacity: core.replay_cache_capacity,
            replay_cache_per_source: core.replay_cache_per_source,
            send_buffer_limit: core.send_buffer_limit,
            recv_buffer_limit: core.recv_buffer_limit,
            max_unjoined: limits.max_unjoined,
            max_unjoined_per_source: limits.max_unjoined_per_source,
            new_connection_rate_per_source: limits.new_connection_rate_per_source,
            new_connection_burst_per_source: limits.new_connection_burst_per_source,
            failed_join_rate_per_source: limits.failed_join_rate_per_source,
            failed_join_burst_per_source: limits.failed_join_burst_per_source,
            source_backoff: limits.source_backoff,
            min_evict_age: limits.min_evict_age,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            allowed_peers: Vec::new(),
            revocation_file: None,
            close_on_peer_expiry: core.close_on_peer_expiry,
            tls: TlsSettings::default(),
            mode: core.mode,
            forward: Vec::new(),
            service: Vec::new(),
            peers: std::collections::BTreeMap::new(),
        }
    }
}

/// Moves the field named `key` from `src` to `dst` (one arm per key of [`KEYS`]; a
/// test checks every key reaches a field).
macro_rules! take_key {
    ($key:expr, $dst:expr, $src:expr; [$($f:ident),* $(,)?]; tls [$($t:ident),* $(,)?]) => {
        match $key {
            $(stringify!($f) => $dst.$f = $src.$f,)*
            $(stringify!($t) => $dst.tls.$t = $src.tls.$t,)*
            _ => {}
        }
    };
}

impl Settings {
    /// Reads a config file's text. `origin` (the file) is named in the errors. Every
    /// problem is reported, not only the first.
    pub fn from_toml_str(text: &str, origin: Option<&Path>) -> Result<Self, SettingsErrors> {
        let (settings, errors) = Self::parse(text, origin);
        errors.into_result(settings)
    }

    /// [`Settings::load`] then [`Settings::build`], reporting everything at once (what
    /// the `check` command prints): the problems of the file and the environment, then
    /// every check of the keys that could be read. The settings are returned for their
    /// other keys (`listen`, `seeds`, `connect_timeout`); `config` is `None` on any error.
    pub fn load_checked(path: impl AsRef<Path>, now: SystemTime) -> (Self, Loaded) {
        let (settings, errors) = Self::read(path.as_ref());
        let mut loaded = settings.build(now);
        let mut report = errors.report();
        report.findings.append(&mut loaded.report.findings);
        loaded.report = report;
        if !loaded.report.is_ok() {
            loaded.config = None;
        }
        (settings, loaded)
    }

    /// Reads a file's text into the defaults, key by key, collecting every problem.
    fn parse(text: &str, origin: Option<&Path>) -> (Self, SettingsErrors) {
        let origin_buf = origin.map(Path::to_path_buf);
        let table = match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(e) => {
                let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
                let error = SettingsError::Syntax {
                    origin: origin_buf,
                    line,
                    column,
                    message: e.message().to_owned(),
                };
                return (Self::default(), SettingsErrors(vec![error]));
            }
        };
        let mut settings = Self::default();
        let mut errors = SettingsErrors::default();
        let mut tables = forward::Tables::default();
        for (name, value) in table {
            if forward::TABLE_NAMES.contains(&name.as_str()) {
                forward::read(&name, value, origin, &mut tables, &mut errors.0);
                continue;
            }
            let Some(key) = keys::find(&name) else {
                if value.is_table() {
                    errors.0.push(SettingsError::Table {
                        origin: origin_buf.clone(),
                        name,
                    });
                    continue;
                }
                errors.0.push(SettingsError::UnknownKey {
                    origin: origin_buf.clone(),
                    suggestion: keys::did_you_mean(&name),
                    key: name,
                });
                continue;
            };
            if let Err(message) = settings.set(key.name, value) {
                errors.0.push(SettingsError::BadValue {
                    origin: origin_buf.clone(),
                    key: key.name,
                    message,
                });
            }
        }
        settings.forward = tables.forward;
        settings.service = tables.service;
        settings.peers = tables.peers;
        (settings, errors)
    }

    /// Reads the config file at `path`, then the `PALISADE_*` environment over it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SettingsErrors> {
        let (settings, errors) = Self::read(path.as_ref());
        errors.into_result(settings)
    }

    /// The file then the environment, as far as they can be read, and every problem.
    fn read(path: &Path) -> (Self, SettingsErrors) {
        let (mut settings, mut errors) = match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, Some(path)),
            Err(e) => (
                Self::default(),
                SettingsErrors(vec![SettingsError::Unreadable {
                    key: "config",
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }]),
            ),
        };
        if let Err(env_errors) = settings.apply_process_env() {
            errors.0.extend(env_errors.0);
        }
        (settings, errors)
    }

    /// The defaults with the `PALISADE_*` environment over them.
    pub fn from_env() -> Result<Self, SettingsErrors> {
        let mut settings = Self::default();
        settings.apply_process_env().map(|()| settings)
    }

    /// Applies `PALISADE_*` variables from `vars` (other names are ignored), so tests
    /// need not touch the process environment. Unknown `PALISADE_*` names are errors.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), SettingsErrors> {
        let mut errors = SettingsErrors::default();
        for (var, text) in vars {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if keys::NOT_SETTINGS.contains(&var.as_str()) {
                continue;
            }
            let Some(key) = KEYS.iter().find(|k| k.env() == var) else {
                errors.0.push(SettingsError::UnknownEnv {
                    suggestion: keys::did_you_mean(rest).and_then(keys::find).map(Key::env),
                    var,
                });
                continue;
            };
            let bad = |var: String| SettingsError::BadEnv {
                var,
                key: key.name,
                expected: key.kind.expected(),
            };
            let set = env_value(key.kind, &text).map(|value| self.set(key.name, value));
            if !matches!(set, Some(Ok(()))) {
                errors.0.push(bad(var));
            }
        }
        errors.into_result(())
    }

    fn apply_process_env(&mut self) -> Result<(), SettingsErrors> {
        let mut vars = Vec::new();
        let mut errors = SettingsErrors::default();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
                continue;
            };
            match value.into_string() {
                Ok(value) => vars.push((name.to_owned(), value)),
                Err(_) => errors.0.push(SettingsError::BadEnv {
                    var: name.to_owned(),
                    key: keys::find(&name[ENV_PREFIX.len()..].to_ascii_lowercase())
                        .map_or("environment", |k| k.name),
                    expected: "UTF-8 text".into(),
                }),
            }
        }
        if let Err(more) = self.apply_env(vars) {
            errors.0.extend(more.0);
        }
        errors.into_result(())
    }

    /// Sets one key from a TOML value, through the same serde rules as a whole file.
    fn set(&mut self, key: &'static str, value: toml::Value) -> Result<(), String> {
        let mut table = toml::Table::new();
        table.insert(key.to_owned(), value);
        let one: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        take_key!(key, self, one;
            [cluster_name, node_id, listen, seeds, shared_secret, shared_secret_file,
             metrics_listen, audit_log,
             accepted_secret_files, max_frame, handshake_timeout, connect_timeout,
             clock_skew_tolerance, clock_ahead_tolerance, first_bytes_timeout,
             replay_cache_capacity, replay_cache_per_source, send_buffer_limit,
             recv_buffer_limit, max_unjoined, max_unjoined_per_source,
             new_connection_rate_per_source, new_connection_burst_per_source,
             failed_join_rate_per_source, failed_join_burst_per_source, source_backoff,
             min_evict_age, reload_interval, mode, allowed_peers, revocation_file, close_on_peer_expiry];
            tls [tls_enabled, tls_cert_file, tls_key_file, tls_ca_file, tls_crl_files, tls_trust,
                 verify_hostname, same_name_as_own_cert, allowed_names, node_id_in_cert,
                 min_tls, cipher_suites]);
        Ok(())
    }
}

/// An environment variable's text as the TOML value its key takes.
fn env_value(kind: Kind, text: &str) -> Option<toml::Value> {
    use toml::Value;
    Some(match kind {
        Kind::Text | Kind::Path | Kind::Duration | Kind::Choice(_) => Value::String(text.into()),
        Kind::Int => Value::Integer(text.trim().parse().ok()?),
        Kind::Float => Value::Float(text.trim().parse().ok()?),
        Kind::Bool => Value::Boolean(match text.trim().to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return None,
        }),
        Kind::List => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into()))
                .collect(),
        ),
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
