//! A node's settings for the core, validated before any connection is made.

use std::fmt;
use std::time::Duration;

pub use crate::authorize::NodePattern;
use crate::frame::DEFAULT_MAX_FRAME;
use crate::join::{Keyring, SharedSecret, MAX_NAME_LEN};
pub use crate::mode::Mode;
use crate::revocation::Revocations;
use crate::tls::config::TlsContext;
use crate::tls::{TlsConfig, TlsConfigError};

/// Which end of a link a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Dialed the peer and sends HELLO.
    Initiator,
    /// Accepted the link and answers with WELCOME or REJECT.
    Acceptor,
}

/// Everything the core needs to know about this node. Build with [`Config::new`] and
/// adjust the public fields; [`Config::validate`] (run by `Endpoint::new`) refuses
/// combinations that cannot work.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster this node belongs to. Peers naming another cluster are refused.
    pub cluster_name: String,
    /// This node's id, sent in HELLO / WELCOME (1 to 255 bytes of UTF-8).
    pub node_id: String,
    /// The join secrets. `None` turns the join proof off: only do that when mutual TLS
    /// authenticates peers, or in development.
    pub keyring: Option<Keyring>,
    /// Largest DATA payload accepted from the peer (default 8 MiB).
    pub max_frame: usize,
    /// How far a HELLO's timestamp may be from this node's clock (default 5 minutes).
    pub clock_skew_tolerance: Duration,
    /// How far AHEAD of this node's clock a plaintext HELLO may be dated (default 30 s,
    /// at most `clock_skew_tolerance`). A plaintext HELLO's nonce is remembered until its
    /// timestamp plus `clock_skew_tolerance`; this bound keeps a HELLO dated in the future
    /// from holding a replay-cache entry for twice the window.
    pub clock_ahead_tolerance: Duration,
    /// Time from the start of a link to joined before it is closed (default 10 s).
    pub handshake_timeout: Duration,
    /// Acceptor side: time from the start of a link to the peer's first byte (its
    /// ClientHello or preface) before it is closed (default 2 s). Short, so silent
    /// sockets cannot hold a listener's slots for the whole `handshake_timeout`; a value
    /// above `handshake_timeout` has no effect (that deadline comes first).
    pub first_bytes_timeout: Duration,
    /// Bytes of outgoing frames buffered before `send` reports the buffer full
    /// (default 1 MiB). A single frame is always accepted into an empty buffer.
    pub send_buffer_limit: usize,
    /// Bytes received but not yet taken by `poll_event` before the connection stops
    /// taking input (default 1 MiB). A frame in progress may always complete.
    pub recv_buffer_limit: usize,
    /// Nonces of plaintext joins remembered for replay protection (default 16384). TLS
    /// joins need none: their proofs are bound to the TLS session.
    pub replay_cache_capacity: usize,
    /// The share of the replay cache one node id (from any address) and one source
    /// address (whatever node ids it sends) may each hold (default 1024), so one node in
    /// a reconnect loop cannot lock the others out (docs/PROTOCOL.md §5.5 step 9).
    pub replay_cache_per_source: usize,
    /// TLS under the frame stream. `None`: plaintext (development, or a network that is
    /// already encrypted).
    pub tls: Option<TlsConfig>,
    /// Acceptor side: strict (the default) refuses peers below these settings;
    /// permissive accepts plaintext peers although TLS is on and peers without a join
    /// proof although a keyring is set, for a rollout only (see [`Mode`]). Dialing
    /// ignores it.
    pub mode: Mode,
    /// Node ids allowed on the other end of a link (`node-*` patterns), checked at the
    /// join on both sides and on every joined link when the settings change. Empty (the
    /// default): any node id, which with TLS in CA mode must still be one its
    /// certificate names (`node_id_in_cert`). Refused with reject code 9.
    pub allowed_peers: Vec<NodePattern>,
    /// The deny-list (`revocation_file`): node ids, certificates and secrets refused at
    /// the join (reject code 13) or the TLS handshake (`certificate_revoked`), and
    /// closed on joined links when the settings change (close code 6).
    pub revoked: Revocations,
    /// Close a joined link when the peer's certificate expires (close code 8; default
    /// on). Off: a link outlives its peer's certificate, as a TLS session does.
    pub close_on_peer_expiry: bool,
}

impl Config {
    /// Settings with the defaults and no shared secret.
    pub fn new(cluster_name: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            cluster_name: cluster_name.into(),
            node_id: node_id.into(),
            keyring: None,
            max_frame: DEFAULT_MAX_FRAME,
            clock_skew_tolerance: Duration::from_secs(300),
            clock_ahead_tolerance: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            first_bytes_timeout: Duration::from_secs(2),
            send_buffer_limit: 1024 * 1024,
            recv_buffer_limit: 1024 * 1024,
            replay_cache_capacity: 16 * 1024,
            replay_cache_per_source: 1024,
            tls: None,
            mode: Mode::Strict,
            allowed_peers: Vec::new(),
            revoked: Revocations::default(),
            close_on_peer_expiry: true,
        }
    }

    /// The ways these settings are weaker than the defaults, each in words an operator
    /// can act on: the adapters log them when a listener or dialer starts, so a
    /// weakening is never silent.
    pub fn weakenings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(tls) = &self.tls {
            let a = &tls.authorization;
            if a.accept_any_name {
                out.push(
                    "authorization.accept_any_name: any certificate the CA signed joins, under \
                     any node id"
                        .to_owned(),
                );
            }
            if matches!(tls.trust, crate::tls::TrustAnchors::CaBundle(_)) && !a.node_id_in_cert {
                out.push(
                    "node_id_in_cert is off: a peer's node id is not bound to its certificate"
                        .to_owned(),
                );
            }
        }
        if self.mode == Mode::Permissive {
            out.push(
                "mode = \"permissive\": plaintext peers and peers without the secret are \
                 accepted (a rollout setting)"
                    .to_owned(),
            );
        }
        if self.tls.is_none() && self.keyring.is_none() {
            out.push(
                "neither TLS nor a shared secret: any host that reaches the port joins".into(),
            );
        }
        out
    }

    /// Turns TLS on.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets a keyring holding one shared secret.
    pub fn with_secret(mut self, secret: SharedSecret) -> Self {
        self.keyring = Some(Keyring::new(secret));
        self
    }

    /// Sets the keyring.
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Refuses settings that cannot work, naming the setting and the fix. With TLS on,
    /// this parses the key and certificates, which costs a little.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.compile().map(|_| ())
    }

    /// Validates, and compiles the TLS settings for an endpoint.
    pub(crate) fn compile(&self) -> Result<Option<TlsContext>, ConfigError> {
        for (setting, value) in [
            ("cluster_name", &self.cluster_name),
            ("node_id", &self.node_id),
        ] {
            if value.is_empty() || value.len() > MAX_NAME_LEN {
                return Err(ConfigError::BadName {
                    setting,
                    len: value.len(),
                });
            }
        }
        if self.max_frame == 0 || u32::try_from(self.max_frame).is_err() {
            return Err(ConfigError::MaxFrameOutOfRange(self.max_frame));
        }
        for (setting, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("clock_skew_tolerance", self.clock_skew_tolerance),
            ("clock_ahead_tolerance", self.clock_ahead_tolerance),
            ("first_bytes_timeout", self.first_bytes_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { setting });
            }
        }
        for (setting, value) in [
            ("send_buffer_limit", self.send_buffer_limit),
            ("recv_buffer_limit", self.recv_buffer_limit),
            ("replay_cache_capacity", self.replay_cache_capacity),
            ("replay_cache_per_source", self.replay_cache_per_source),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { setting });
            }
        }
        if self.mode == Mode::Permissive && self.tls.is_none() && self.keyring.is_none() {
            return Err(ConfigError::NothingToMigrateTo);
        }
        self.tls
            .as_ref()
            .map(|tls| TlsContext::build(tls, &self.revoked))
            .transpose()
            .map_err(ConfigError::Tls)
    }
}

/// Settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `cluster_name` or `node_id` is empty or longer than 255 bytes.
    BadName {
        /// The setting.
        setting: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// `max_frame` is 0 or does not fit the 32-bit length field.
    MaxFrameOutOfRange(usize),
    /// A duration setting is zero.
    ZeroDuration {
        /// The setting.
        setting: &'static str,
    },
    /// A size setting is zero.
    Zero {
        /// The setting.
        setting: &'static str,
    },
    /// The TLS settings cannot work.
    Tls(TlsConfigError),
    /// `mode` is permissive, but there is neither TLS nor a keyring to be permissive
    /// about: the node would behave exactly as in strict mode, so the setting is a
    /// mistake (the operator meant to turn TLS or the secret on too).
    NothingToMigrateTo,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadName { setting, len } => write!(
                f,
                "{setting} is {len} bytes long; it must be 1 to {MAX_NAME_LEN} bytes of UTF-8"
            ),
            Self::MaxFrameOutOfRange(v) => write!(
                f,
                "max_frame is {v}; it must be between 1 and {} bytes",
                u32::MAX
            ),
            Self::ZeroDuration { setting } => {
                write!(f, "{setting} is zero; give it a positive duration")
            }
            Self::Zero { setting } => write!(f, "{setting} is zero; give it a positive size"),
            Self::Tls(e) => e.fmt(f),
            Self::NothingToMigrateTo => f.write_str(
                "mode is \"permissive\" but this node has neither TLS nor a shared secret, so \
                 there is nothing to migrate to; turn on the TLS and/or the shared secret the \
                 cluster is moving to, or set mode = \"strict\"",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_settings_are_named() {
        assert_eq!(Config::new("prod", "a").validate(), Ok(()));
        let err = Config::new("", "a").validate().unwrap_err();
        assert_eq!(
            err,
            ConfigError::BadName {
                setting: "cluster_name",
                len: 0
            }
        );
        assert!(err.to_string().contains("cluster_name"));
        let mut c = Config::new("prod", "x".repeat(256));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BadName {
                setting: "node_id",
                ..
            })
        ));
        c.node_id = "a".into();
        c.max_frame = 0;
        assert_eq!(c.validate(), Err(ConfigError::MaxFrameOutOfRange(0)));
        c.max_frame = 10;
        c.handshake_timeout = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration {
                setting: "handshake_timeout"
            })
        );
    }

    #[test]
    fn first_bytes_timeout_must_be_positive() {
        let mut c = Config::new("prod", "a");
        c.first_bytes_timeout = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration {
                setting: "first_bytes_timeout"
            })
        );
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("first_bytes_timeout"));
        // Longer than the join deadline is allowed: the join deadline fires first.
        c.first_bytes_timeout = Duration::from_secs(60);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn permissive_needs_tls_or_a_secret_to_be_permissive_about() {
        let mut c = Config::new("prod", "a");
        c.mode = Mode::Permissive;
        let err = c.validate().unwrap_err();
        assert_eq!(err, ConfigError::NothingToMigrateTo);
        assert!(err.to_string().contains("mode = \"strict\""), "{err}");
        let keyed = c.with_secret(SharedSecret::new(vec![7; 32]).unwrap());
        assert_eq!(keyed.validate(), Ok(()));
    }
}
