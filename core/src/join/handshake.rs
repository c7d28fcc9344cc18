//! The two ends of the join, as types that exist only for their phase.
//!
//! An [`InitiatorHandshake`] is made with its nonce, produces the HELLO, and is consumed by
//! reading the answer. An [`AcceptorHandshake`] is made with its nonce and is consumed by
//! reading the HELLO, producing the WELCOME or the refusal.

use std::time::Duration;

use super::messages::{Auth, JoinHello, JoinWelcome, NONCE_LEN};
use super::proof::{acceptor_proof, initiator_proof, proofs_match};
use super::reject::{RejectCode, Rejection};
use super::replay::{ReplayCache, ReplayError};
use super::secret::KeyId;
use crate::config::{Config, Mode};
use crate::preface::PROTOCOL_VERSION;

/// What a node learns about its peer by joining it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id, as it sent it.
    pub node_id: String,
    /// The shared secret both proofs were made with, when the join used one.
    pub key_id: Option<KeyId>,
    /// Largest DATA payload the peer accepts; `send` refuses larger frames.
    pub max_frame: usize,
    /// The peer's clock minus this node's clock when the join message arrived, in ms.
    pub clock_skew_ms: i64,
    /// What TLS established (version, suite, certificate names), when TLS is on.
    pub tls: Option<crate::tls::TlsPeer>,
    /// How the link fell short of this node's own settings: only a permissive acceptor
    /// joins such a link (`mode`), and an operator should see every one.
    pub below_strict: crate::BelowStrict,
}

fn signed_skew(theirs: u64, ours: u64) -> i64 {
    if theirs >= ours {
        i64::try_from(theirs - ours).unwrap_or(i64::MAX)
    } else {
        i64::try_from(ours - theirs).map_or(i64::MIN, |d| -d)
    }
}

fn max_frame_u32(config: &Config) -> u32 {
    // Config::validate guarantees max_frame fits.
    u32::try_from(config.max_frame).unwrap_or(u32::MAX)
}

fn refuse(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

/// The initiator between sending HELLO and reading WELCOME or REJECT.
#[derive(Debug)]
pub struct InitiatorHandshake {
    hello: JoinHello,
    expected_peer: Option<String>,
}

impl InitiatorHandshake {
    /// Builds the HELLO for this node at wall time `now_ms`. `binding` is the TLS
    /// channel-binding value (empty without TLS).
    pub fn new(config: &Config, nonce: [u8; NONCE_LEN], now_ms: u64, binding: &[u8]) -> Self {
        let mut hello = JoinHello {
            version: PROTOCOL_VERSION,
            cluster_name: config.cluster_name.clone(),
            node_id: config.node_id.clone(),
            timestamp_ms: now_ms,
            nonce,
            max_frame: max_frame_u32(config),
            auth: None,
        };
        if let Some(keyring) = &config.keyring {
            let secret = keyring.primary();
            hello.auth = Some(Auth {
                key_id: secret.key_id(),
                proof: [0; 32],
            });
            let proof = initiator_proof(secret, binding, &hello);
            hello.auth = Some(Auth {
                key_id: secret.key_id(),
                proof,
            });
        }
        Self {
            hello,
            expected_peer: None,
        }
    }

    /// Only a WELCOME from the node with this node id will be accepted: the caller
    /// dialed that node, and any other answering is refused (reject code 9).
    pub fn expecting(mut self, node_id: Option<String>) -> Self {
        self.expected_peer = node_id;
        self
    }

    /// The HELLO to send.
    pub fn hello(&self) -> &JoinHello {
        &self.hello
    }

    /// Checks the acceptor's WELCOME. On success the link is joined; on failure the
    /// returned refusal is what to send the peer in a REJECT.
    pub fn read_welcome(
        self,
        config: &Config,
        welcome: &JoinWelcome,
        binding: &[u8],
        now_ms: u64,
    ) -> Result<PeerInfo, Rejection> {
        if welcome.version != PROTOCOL_VERSION {
            return Err(refuse(
                RejectCode::UnsupportedVersion,
                format!(
                    "WELCOME version {} is not supported; this node speaks version {PROTOCOL_VERSION}",
                    welcome.version
                ),
            ));
        }
        if welcome.node_id == config.node_id {
            return Err(refuse(
                RejectCode::Reflected,
                format!(
                    "the WELCOME carries this node's own node id {:?}: this node's HELLO was \
                     answered by itself (a reflected join), or two nodes share a node id",
                    welcome.node_id
                ),
            ));
        }
        let key_id =
            match (&config.keyring, &welcome.auth, &self.hello.auth) {
                (Some(keyring), Some(theirs), Some(ours)) => {
                    if theirs.key_id != ours.key_id {
                        return Err(refuse(
                            RejectCode::AuthenticationFailed,
                            format!(
                                "the WELCOME names key id {} but this node's HELLO used {}: the \
                             WELCOME does not answer this HELLO (forged, or relayed from another \
                             connection)",
                                theirs.key_id, ours.key_id
                            ),
                        ));
                    }
                    let secret = keyring.primary();
                    let expected = acceptor_proof(secret, binding, &self.hello, welcome);
                    if !proofs_match(&expected, &theirs.proof) {
                        return Err(refuse(
                            RejectCode::AuthenticationFailed,
                            format!(
                            "the WELCOME's proof does not verify with the secret of key id {}: \
                             the acceptor does not hold that secret (a key id is not secret and \
                             can be copied), or the WELCOME was altered or relayed from another \
                             connection",
                            ours.key_id
                        ),
                        ));
                    }
                    Some(theirs.key_id)
                }
                (Some(_), None, _) => return Err(refuse(
                    RejectCode::SecretRequired,
                    "the acceptor answered without a join proof; a node with a shared secret only \
                     joins peers that prove they hold it",
                )),
                (None, Some(_), _) | (Some(_), Some(_), None) => {
                    return Err(refuse(
                        RejectCode::Malformed,
                        "the WELCOME carries a proof although the HELLO carried none",
                    ))
                }
                (None, None, _) => None,
            };
        if let Some(expected) = &self.expected_peer {
            if welcome.node_id != *expected {
                return Err(refuse(
                    RejectCode::IdentityNotAllowed,
                    format!(
                        "this node dialed {expected:?} but {:?} answered",
                        welcome.node_id
                    ),
                ));
            }
        }
        Ok(PeerInfo {
            node_id: welcome.node_id.clone(),
            key_id,
            max_frame: usize::try_from(welcome.max_frame).unwrap_or(usize::MAX),
            clock_skew_ms: signed_skew(welcome.timestamp_ms, now_ms),
            tls: None,
            below_strict: crate::BelowStrict::default(),
        })
    }
}

/// The acceptor before it has read the HELLO.
#[derive(Debug)]
pub struct AcceptorHandshake {
    nonce: [u8; NONCE_LEN],
    source: Option<std::net::IpAddr>,
}

impl AcceptorHandshake {
    /// An acceptor that will answer with `nonce`.
    pub fn new(nonce: [u8; NONCE_LEN]) -> Self {
        Self {
            nonce,
            source: None,
        }
    }

    /// The peer's address, when the caller knows it: a plaintext HELLO's nonce counts
    /// against that address's share of the replay cache as well as its node id's.
    pub fn from_source(mut self, source: Option<std::net::IpAddr>) -> Self {
        self.source = source;
        self
    }

    /// Checks a HELLO received at wall time `now_ms`: version, cluster, proof, own node
    /// id, clock skew, reflection, replay, in that order (docs/PROTOCOL.md §5.5). On
    /// success returns the WELCOME to send and what was learned about the peer; on
    /// failure the refusal to send in a REJECT. A permissive node (`mode`) with a keyring
    /// also takes a HELLO without a proof (§8.1); one with a proof is checked as ever.
    pub fn read_hello(
        self,
        config: &Config,
        replay: &ReplayCache,
        hello: &JoinHello,
        binding: &[u8],
        now_ms: u64,
    ) -> Result<(JoinWelcome, PeerInfo), Rejection> {
        if hello.version != PROTOCOL_VERSION {
            return Err(refuse(
                RejectCode::UnsupportedVersion,
                format!(
                    "HELLO version {} is not supported; this node speaks version {PROTOCOL_VERSION}",
                    hello.version
                ),
            ));
        }
        if hello.cluster_name != config.cluster_name {
            return Err(refuse(
                RejectCode::ClusterMismatch,
                format!("this node is not in cluster '{}'", hello.cluster_name),
            ));
        }
        let secret = match (&config.keyring, &hello.auth) {
            // Migration: a peer that has no secret yet joins as it would a node without
            // one (no proof either way), and the link reports it (`below_strict`).
            (Some(_), None) if config.mode == Mode::Permissive => None,
            (Some(_), None) => {
                return Err(refuse(
                    RejectCode::SecretRequired,
                    "this node requires a join proof made with the cluster's shared secret, and the HELLO carried none",
                ))
            }
            (None, Some(_)) => {
                return Err(refuse(
                    RejectCode::NoSecret,
                    "this node has no shared secret configured, so it can neither check the HELLO's proof nor prove itself",
                ))
            }
            (None, None) => None,
            (Some(keyring), Some(auth)) => {
                let Some(secret) = keyring.get(auth.key_id) else {
                    // The key ids held here would give anyone an offline check for guessing
                    // a weak secret: they stay in this node's own error and log.
                    let held: Vec<String> = keyring.key_ids().map(|k| k.to_string()).collect();
                    return Err(refuse(
                        RejectCode::UnknownKey,
                        format!(
                            "no shared secret with key id {} is configured here",
                            auth.key_id
                        ),
                    )
                    .with_local_detail(format!("this node holds key ids {}", held.join(", "))));
                };
                let expected = initiator_proof(secret, binding, hello);
                if !proofs_match(&expected, &auth.proof) {
                    return Err(refuse(
                        RejectCode::AuthenticationFailed,
                        format!(
                            "the HELLO names key id {}, which this node holds, but its proof does \
                             not verify: the HELLO was forged (key ids are not secret), altered in \
                             transit or relayed from another connection, or the peer binds it to \
                             the TLS session differently",
                            auth.key_id
                        ),
                    ));
                }
                Some(secret)
            }
        };

        // Checked only once the proof verified, so it is no oracle for guessing node ids.
        if hello.node_id == config.node_id {
            return Err(refuse(
                RejectCode::Reflected,
                format!(
                    "the HELLO carries this node's own node id {:?}: a join reflected back to \
                     its sender, or two nodes configured with the same node_id",
                    hello.node_id
                ),
            ));
        }
        // A proven HELLO without TLS is what the replay cache is for (with TLS the proof is
        // bound to this session and worthless on any other). How far ahead such a HELLO
        // may be dated bounds how long its nonce must be remembered.
        let cached = secret.is_some() && binding.is_empty();
        let skew_ms = signed_skew(hello.timestamp_ms, now_ms);
        let tolerance = tolerance_ms(config.clock_skew_tolerance);
        let (limit, setting) = if skew_ms > 0 && cached {
            let ahead = tolerance_ms(config.clock_ahead_tolerance).min(tolerance);
            (
                ahead,
                "clock_ahead_tolerance, for plaintext joins with a secret",
            )
        } else {
            (tolerance, "clock_skew_tolerance")
        };
        if skew_ms.unsigned_abs() > limit {
            let direction = if skew_ms > 0 { "ahead of" } else { "behind" };
            return Err(refuse(
                RejectCode::ClockSkew,
                format!(
                    "the HELLO's clock is {} ms {direction} this node's clock; the tolerance is \
                     {limit} ms ({setting})",
                    skew_ms.unsigned_abs(),
                ),
            ));
        }

        if replay.is_own(&hello.nonce) {
            return Err(refuse(
                RejectCode::Reflected,
                "the HELLO carries the nonce of a HELLO this node sent: its own join was \
                 reflected back to it",
            ));
        }

        if cached {
            let expires = hello.timestamp_ms.saturating_add(tolerance);
            let node = hello.node_id.as_str();
            match replay.admit(hello.nonce, expires, now_ms, node, self.source) {
                Ok(()) => {}
                Err(ReplayError::Replayed) => {
                    return Err(refuse(
                        RejectCode::Replay,
                        "this HELLO's nonce was already used: it is a recorded join sent again",
                    ))
                }
                Err(ReplayError::Full) => {
                    return Err(refuse(
                        RejectCode::Busy,
                        format!(
                            "the replay cache is full ({} plaintext joins inside the clock-skew \
                             window); raise replay_cache_capacity, or use TLS, which needs no \
                             replay cache",
                            config.replay_cache_capacity
                        ),
                    ))
                }
                Err(ReplayError::NodeFull) => {
                    return Err(refuse(
                        RejectCode::Busy,
                        format!(
                            "node id {node:?} made {} plaintext joins inside the clock-skew \
                             window, its share of the replay cache (from any address); retry \
                             later, raise replay_cache_per_source, or use TLS",
                            replay.per_source()
                        ),
                    ))
                }
                Err(ReplayError::SourceFull) => {
                    return Err(refuse(
                        RejectCode::Busy,
                        format!(
                            "this peer's address made {} plaintext joins inside the clock-skew \
                             window, its share of the replay cache (whatever node ids they \
                             carried); retry later, raise replay_cache_per_source, or use TLS",
                            replay.per_source()
                        ),
                    ))
                }
                Err(ReplayError::Crowded { free, held }) => {
                    return Err(refuse(
                        RejectCode::Busy,
                        format!(
                            "the replay cache is nearly full ({free} of {} entries left) and \
                             this peer's address already holds {held} (replay_cache_per_source \
                             is its share): the room left is kept for addresses holding fewer; \
                             retry later, raise replay_cache_capacity, or use TLS",
                            config.replay_cache_capacity
                        ),
                    ));
                }
            }
        }

        let mut welcome = JoinWelcome {
            version: PROTOCOL_VERSION,
            node_id: config.node_id.clone(),
            timestamp_ms: now_ms,
            nonce: self.nonce,
            max_frame: max_frame_u32(config),
            auth: None,
        };
        if let Some(secret) = secret {
            welcome.auth = Some(Auth {
                key_id: secret.key_id(),
                proof: [0; 32],
            });
            let proof = acceptor_proof(secret, binding, hello, &welcome);
            welcome.auth = Some(Auth {
                key_id: secret.key_id(),
                proof,
            });
        }
        let peer = PeerInfo {
            node_id: hello.node_id.clone(),
            key_id: secret.map(|s| s.key_id()),
            max_frame: usize::try_from(hello.max_frame).unwrap_or(usize::MAX),
            clock_skew_ms: skew_ms,
            tls: None,
            below_strict: crate::BelowStrict::default(),
        };
        Ok((welcome, peer))
    }
}

/// The clock-skew tolerance as whole milliseconds.
fn tolerance_ms(tolerance: Duration) -> u64 {
    u64::try_from(tolerance.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::SharedSecret;

    const NOW: u64 = 1_800_000_000_000;

    fn config(node: &str, secret: Option<u8>) -> Config {
        let c = Config::new("prod", node);
        match secret {
            Some(b) => c.with_secret(SharedSecret::new(vec![b; 32]).unwrap()),
            None => c,
        }
    }

    fn join(
        i: &Config,
        a: &Config,
        skew: i64,
    ) -> (
        Result<(JoinWelcome, PeerInfo), Rejection>,
        InitiatorHandshake,
    ) {
        let ts = NOW.checked_add_signed(skew).unwrap();
        let init = InitiatorHandshake::new(i, [1; 32], ts, b"");
        let cache = ReplayCache::new(8, 8);
        let res = AcceptorHandshake::new([2; 32]).read_hello(a, &cache, init.hello(), b"", NOW);
        (res, init)
    }

    #[test]
    fn a_shared_secret_joins_both_ways() {
        let (i, a) = (config("a", Some(7)), config("b", Some(7)));
        let (res, init) = join(&i, &a, 1500);
        let (welcome, peer_of_acceptor) = res.unwrap();
        assert_eq!(peer_of_acceptor.node_id, "a");
        assert_eq!(peer_of_acceptor.clock_skew_ms, 1500);
        let peer_of_initiator = init.read_welcome(&i, &welcome, b"", NOW + 1500).unwrap();
        assert_eq!(peer_of_initiator.node_id, "b");
        assert_eq!(
            peer_of_initiator.key_id,
            i.keyring.as_ref().map(|k| k.primary().key_id())
        );
    }

    #[test]
    fn each_acceptor_side_code_is_reachable() {
        let code = |i: &Config, a: &Config, skew| join(i, a, skew).0.unwrap_err().code;
        assert_eq!(
            code(&config("a", None), &config("b", Some(7)), 0),
            RejectCode::SecretRequired
        );
        assert_eq!(
            code(&config("a", Some(7)), &config("b", None), 0),
            RejectCode::NoSecret
        );
        assert_eq!(
            code(&config("a", Some(7)), &config("b", Some(8)), 0),
            RejectCode::UnknownKey
        );
        let mut other_cluster = config("b", Some(7));
        other_cluster.cluster_name = "staging".into();
        assert_eq!(
            code(&config("a", Some(7)), &other_cluster, 0),
            RejectCode::ClusterMismatch
        );
        let err = join(&config("a", Some(7)), &config("b", Some(7)), -400_000)
            .0
            .unwrap_err();
        assert_eq!(err.code, RejectCode::ClockSkew);
        assert!(err.message.contains("400000 ms behind"), "{}", err.message);
        assert_eq!(tolerance_ms(Duration::from_secs(300)), 300_000);
    }

    #[test]
    fn a_wrong_proof_fails_authentication_and_a_resent_hello_is_a_replay() {
        let (i, a) = (config("a", Some(7)), config("b", Some(7)));
        let init = InitiatorHandshake::new(&i, [1; 32], NOW, b"");
        let cache = ReplayCache::new(8, 8);
        let mut forged = init.hello().clone();
        forged.node_id = "mallory".into();
        let err = AcceptorHandshake::new([2; 32]).read_hello(&a, &cache, &forged, b"", NOW);
        assert_eq!(err.unwrap_err().code, RejectCode::AuthenticationFailed);
        assert!(
            cache.is_empty(),
            "an unverified HELLO never enters the replay cache"
        );
        let ok = AcceptorHandshake::new([2; 32]).read_hello(&a, &cache, init.hello(), b"", NOW);
        assert!(ok.is_ok());
        let again =
            AcceptorHandshake::new([3; 32]).read_hello(&a, &cache, init.hello(), b"", NOW + 5);
        assert_eq!(again.unwrap_err().code, RejectCode::Replay);
    }

    #[test]
    fn a_proof_bound_to_one_channel_fails_on_another() {
        let (i, a) = (config("a", Some(7)), config("b", Some(7)));
        let init = InitiatorHandshake::new(&i, [1; 32], NOW, b"session one");
        let cache = ReplayCache::new(8, 8);
        let err = AcceptorHandshake::new([2; 32]).read_hello(
            &a,
            &cache,
            init.hello(),
            b"session two",
            NOW,
        );
        assert_eq!(err.unwrap_err().code, RejectCode::AuthenticationFailed);
    }

    #[test]
    fn the_initiator_refuses_an_acceptor_that_cannot_prove_the_secret() {
        let i = config("a", Some(7));
        let (res, init) = join(&i, &config("b", Some(7)), 0);
        let (mut welcome, _) = res.unwrap();
        welcome.auth = None;
        let err = init.read_welcome(&i, &welcome, b"", NOW).unwrap_err();
        assert_eq!(err.code, RejectCode::SecretRequired);

        let (res, init) = join(&i, &config("b", Some(7)), 0);
        let (mut welcome, _) = res.unwrap();
        welcome.timestamp_ms += 1;
        let err = init.read_welcome(&i, &welcome, b"", NOW).unwrap_err();
        assert_eq!(err.code, RejectCode::AuthenticationFailed);
    }

    #[test]
    fn rotation_accepts_an_older_secret() {
        let old = SharedSecret::new(vec![7u8; 32]).unwrap();
        let new = SharedSecret::new(vec![9u8; 32]).unwrap();
        let i = Config::new("prod", "a").with_secret(old.clone());
        let a = Config::new("prod", "b").with_keyring(
            crate::join::Keyring::new(new)
                .with_accepted(old.clone())
                .unwrap(),
        );
        let (res, init) = join(&i, &a, 0);
        let (welcome, peer) = res.unwrap();
        assert_eq!(peer.key_id, Some(old.key_id()));
        assert!(init.read_welcome(&i, &welcome, b"", NOW).is_ok());
    }

    #[test]
    fn a_permissive_acceptor_takes_a_hello_without_proof_and_checks_one_with_proof() {
        let mut a = config("b", Some(7));
        a.mode = Mode::Permissive;
        let i = config("a", None);
        let (res, init) = join(&i, &a, 0);
        let (welcome, peer) = res.unwrap();
        assert_eq!((peer.key_id, welcome.auth), (None, None));
        assert!(init.read_welcome(&i, &welcome, b"", NOW).is_ok());
        let code = |i: &Config| join(i, &a, 0).0.unwrap_err().code;
        assert_eq!(code(&config("a", Some(8))), RejectCode::UnknownKey);
        let mut other_cluster = config("a", None);
        other_cluster.cluster_name = "staging".into();
        assert_eq!(code(&other_cluster), RejectCode::ClusterMismatch);
        // The initiator side ignores the mode: it still requires the acceptor's proof.
        let mut permissive_initiator = config("a", Some(7));
        permissive_initiator.mode = Mode::Permissive;
        let (res, init) = join(&permissive_initiator, &config("b", Some(7)), 0);
        let (mut welcome, _) = res.unwrap();
        welcome.auth = None;
        let err = init.read_welcome(&permissive_initiator, &welcome, b"", NOW);
        assert_eq!(err.unwrap_err().code, RejectCode::SecretRequired);
    }
}
