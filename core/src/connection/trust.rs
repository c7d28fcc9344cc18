//! A joined link under changing trust (PROTOCOL.md §5.8): new settings re-decide the
//! peer, a link whose secret is no longer accepted re-proves itself in place (a re-join
//! over the same session), and a peer certificate that expires ends the link.
//!
//! ```text
//! side X (no longer accepts the link's key)        side Y
//!   REJOIN   {HELLO body, proof with X's primary}  ->
//!                      checks as a HELLO, then  <-  REJOINED {WELCOME body}   (Y's sends switch keys)
//!   checks; REKEY ->                                                          (X's sends switch keys)
//! ```
//!
//! Both proofs are bound to the session and to the previous join's transcript, so a
//! re-join message is worthless on any other link and on this one once used. Failures end
//! the link with CLOSE 9 (re-join failed); a peer that is now revoked or no longer
//! authorized gets CLOSE 6 or 7 at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{Connection, Event, State};
use crate::authorize::{authorize, PeerFacts};
use crate::close::{CloseCode, CloseReason};
use crate::config::{Config, Mode, Side};
use crate::endpoint::Endpoint;
use crate::frame::FrameKind;
use crate::frame_auth::LinkKeys;
use crate::join::{
    AcceptorHandshake, InitiatorHandshake, JoinHello, JoinWelcome, RejectCode, Rejection, NONCE_LEN,
};
use crate::tls::CertRefusal;
use crate::wire::put_lp16;

/// Label of the re-join binding.
const REJOIN_LABEL: &[u8] = b"palisade/v1 rejoin";

/// A (re)join's transcript: SHA-256(lp16(HELLO body) ‖ lp16(WELCOME body)).
pub fn transcript(hello: &[u8], welcome: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(4 + hello.len() + welcome.len());
    put_lp16(&mut input, hello);
    put_lp16(&mut input, welcome);
    Sha256::digest(&input).into()
}

/// The binding both re-join proofs use in place of the channel binding:
/// SHA-256(lp16("palisade/v1 rejoin") ‖ lp16(channel binding) ‖ transcript of the previous
/// (re)join).
pub fn rejoin_binding(channel_binding: &[u8], previous: &[u8; 32]) -> [u8; 32] {
    let mut input = Vec::with_capacity(64 + channel_binding.len());
    put_lp16(&mut input, REJOIN_LABEL);
    put_lp16(&mut input, channel_binding);
    input.extend_from_slice(previous);
    Sha256::digest(&input).into()
}

/// Where a re-join stands on this side.
#[derive(Debug, Default)]
pub(super) enum Rejoin {
    /// None in progress.
    #[default]
    Idle,
    /// This side sent REJOIN and waits for REJOINED.
    Sent {
        init: Box<InitiatorHandshake>,
        hello: Bytes,
        deadline: Option<Instant>,
    },
    /// This side answered with REJOINED and waits for REKEY (after which the peer's
    /// frames use the new keys).
    Answered {
        keys: Option<Box<LinkKeys>>,
        deadline: Option<Instant>,
    },
}

impl Rejoin {
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Idle => None,
            Self::Sent { deadline, .. } | Self::Answered { deadline, .. } => *deadline,
        }
    }
}

/// Why settings withdraw a peer.
fn close_code_for(rejection: &Rejection) -> CloseCode {
    if rejection.code == RejectCode::Revoked {
        CloseCode::Revoked
    } else {
        CloseCode::NotAuthorized
    }
}

impl Connection {
    /// New settings for this link (the node reloaded): `endpoint` is the node's endpoint
    /// after `Endpoint::reconfigure`. A joined link is decided again at once:
    ///
    /// - a peer now revoked (revocation list, CRL) is closed with CLOSE 6, one no longer
    ///   authorized (certificate name rules, `node_id_in_cert`, `allowed_peers`) with
    ///   CLOSE 7; a CA or pin leaving the trust bundle does not cut links (the last step
    ///   of a CA rotation would drop them all): a peer to cut is revoked;
    /// - a link joined under a secret the new keyring does not hold re-joins in place
    ///   with the current primary secret (REJOIN, §5.8), and closes with CLOSE 9 if the
    ///   peer cannot prove it;
    /// - the peer certificate's expiry follows `close_on_peer_expiry`.
    ///
    /// A link still joining finishes its join with the settings it began with (its HELLO
    /// is already signed with them) and is decided under the new ones the moment it
    /// joins. Drain the outputs afterwards, as after any command.
    pub fn update_settings(&mut self, endpoint: &Endpoint, now: Instant) {
        if self.is_closed() {
            return;
        }
        let settings = (Arc::new(endpoint.config().clone()), endpoint.tls_context());
        if self.is_joined() {
            (self.config, self.tls_context) = settings;
            self.recheck_peer(now);
        } else {
            self.pending_settings = Some(settings);
        }
    }

    /// Decides the joined peer again under `self.config`.
    pub(super) fn recheck_peer(&mut self, now: Instant) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let config = Arc::clone(&self.config);
        let unix_ms = self.clock.unix_ms(now);
        let not_after = self.transport.peer_not_after();
        if config.close_on_peer_expiry {
            if let Some(end) = not_after.filter(|end| expired(*end, unix_ms)) {
                return self.close(expired_reason(end));
            }
        }
        if let Some(ctx) = self.tls_context.clone() {
            // Decided at `now`, or, when expiry does not close links, at a time inside the
            // certificate's validity, so that only the new settings can withdraw it.
            let at = match (config.close_on_peer_expiry, not_after) {
                (false, Some(end)) => unix_ms.min(u64::try_from(end).unwrap_or(0) * 1000),
                _ => unix_ms,
            };
            if let Some(Err(refusal)) = self.transport.recheck(&ctx, at) {
                let code = match refusal {
                    CertRefusal::Revoked { .. } => Some(CloseCode::Revoked),
                    // A trust anchor leaving the bundle (the last step of a CA or pin
                    // rotation) does not cut the links made under it: TLS cannot present
                    // a new certificate on a joined session, so a rotation would drop every
                    // link. Trust is decided at the handshake; a peer to cut is revoked.
                    CertRefusal::UnknownIssuer { .. } | CertRefusal::NotPinned { .. } => None,
                    _ => Some(CloseCode::NotAuthorized),
                };
                if let Some(code) = code {
                    return self.close(CloseReason::new(code, refusal.to_string()));
                }
            }
        }
        let facts = PeerFacts {
            node_id: &peer.node_id,
            key_id: peer.key_id,
            cert_names: self.transport.cert_names(),
        };
        if let Err(rejection) = authorize(&config, facts) {
            return self.close(CloseReason::new(
                close_code_for(&rejection),
                rejection.message,
            ));
        }
        self.peer_expiry = match (config.close_on_peer_expiry, not_after) {
            (true, Some(end)) => expiry_instant(end, now, unix_ms),
            _ => None,
        };
        // Only a link under a secret this node no longer holds re-joins. Links a
        // permissive rollout took below the strict settings (plaintext, or without a
        // secret) stay up until they close, as migration mode promises: a rollout drops
        // no link.
        let stale_key = match (&config.keyring, peer.key_id) {
            (Some(keyring), Some(id)) => keyring.get(id).is_none(),
            (_, None) | (None, _) => false,
        };
        if stale_key && matches!(self.rejoin, Rejoin::Idle) {
            self.start_rejoin(now);
        }
    }

    fn start_rejoin(&mut self, now: Instant) {
        let mut nonce = [0u8; NONCE_LEN];
        if let Err(e) = self.random.fill(&mut nonce) {
            return self.fail(crate::ConnectionError::Random(e));
        }
        let binding = rejoin_binding(self.transport.channel_binding(), &self.transcript);
        let expected = self.peer.as_ref().map(|p| p.node_id.clone());
        let init = InitiatorHandshake::new(&self.config, nonce, self.clock.unix_ms(now), &binding)
            .expecting(expected);
        let hello = init.hello().encode().freeze();
        self.queue_control(FrameKind::Rejoin, &hello);
        self.rejoin = Rejoin::Sent {
            init: Box::new(init),
            hello,
            deadline: now.checked_add(self.config.handshake_timeout),
        };
    }

    /// REJOIN, REJOINED or REKEY on a joined link.
    pub(super) fn on_rejoin_frame(&mut self, kind: FrameKind, body: &[u8], now: Instant) {
        let result = match kind {
            FrameKind::Rejoin => self.on_rejoin(body, now),
            FrameKind::Rejoined => self.on_rejoined(body, now),
            _ => self.on_rekey(body),
        };
        if let Err(rejection) = result {
            let code = if rejection.code == RejectCode::Revoked {
                CloseCode::Revoked
            } else {
                CloseCode::RejoinFailed
            };
            // The message only: `local_detail` (e.g. the key ids held here) stays here.
            let message = format!("re-join refused: {}: {}", rejection.code, rejection.message);
            self.close(CloseReason::new(code, message));
        }
    }

    fn on_rejoin(&mut self, body: &[u8], now: Instant) -> Result<(), Rejection> {
        if let Rejoin::Sent { .. } = self.rejoin {
            // Both sides began a re-join at once: the link's initiator's goes on. The
            // acceptor drops its own and answers; the initiator ignores the peer's (the
            // peer answers ours instead).
            if self.side == Side::Initiator {
                return Ok(());
            }
            self.rejoin = Rejoin::Idle;
        }
        if !matches!(self.rejoin, Rejoin::Idle) {
            return Err(Rejection::new(
                RejectCode::Malformed,
                "a REJOIN arrived while the previous re-join was not finished",
            ));
        }
        let hello = JoinHello::decode(body).map_err(|e| malformed(&e))?;
        let peer = self.peer.clone().ok_or_else(not_joined)?;
        if hello.auth.is_none() {
            return Err(Rejection::new(
                RejectCode::SecretRequired,
                "the REJOIN carries no proof; a re-join proves the current shared secret",
            ));
        }
        if hello.node_id != peer.node_id {
            return Err(Rejection::new(
                RejectCode::IdentityNotAllowed,
                format!(
                    "the REJOIN names node id {:?}, but this link joined node {:?}",
                    hello.node_id, peer.node_id
                ),
            ));
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|e| Rejection::new(RejectCode::Busy, e.to_string()))?;
        let binding = rejoin_binding(self.transport.channel_binding(), &self.transcript);
        let strict = strict(&self.config);
        let (welcome, learned) = AcceptorHandshake::new(nonce).read_hello(
            &strict,
            &self.replay,
            &hello,
            &binding,
            self.clock.unix_ms(now),
        )?;
        self.authorize_rejoined(learned.key_id)?;
        let welcome = welcome.encode();
        self.queue_control(FrameKind::Rejoined, &welcome);
        let keys = self.derive_keys(learned.key_id, body, &welcome);
        if let (Some(auth), Some(keys)) = (self.frame_auth.as_deref_mut(), keys.as_deref()) {
            auth.rekey_send(keys, Side::Acceptor);
        }
        self.transcript = transcript(body, &welcome);
        self.rejoin = Rejoin::Answered {
            keys,
            deadline: now.checked_add(self.config.handshake_timeout),
        };
        self.rejoined(learned.key_id);
        Ok(())
    }

    fn on_rejoined(&mut self, body: &[u8], now: Instant) -> Result<(), Rejection> {
        let Rejoin::Sent { init, hello, .. } = std::mem::take(&mut self.rejoin) else {
            return Err(Rejection::new(
                RejectCode::Malformed,
                "a REJOINED arrived although this node sent no REJOIN",
            ));
        };
        let welcome = JoinWelcome::decode(body).map_err(|e| malformed(&e))?;
        let binding = rejoin_binding(self.transport.channel_binding(), &self.transcript);
        let learned =
            init.read_welcome(&self.config, &welcome, &binding, self.clock.unix_ms(now))?;
        self.authorize_rejoined(learned.key_id)?;
        let keys = self.derive_keys(learned.key_id, &hello, body);
        if let (Some(auth), Some(keys)) = (self.frame_auth.as_deref_mut(), keys.as_deref()) {
            // The peer's frames after REJOINED use the new keys; ours after REKEY.
            auth.rekey_recv(keys, Side::Initiator);
            self.queue_control(FrameKind::Rekey, &[]);
            if let Some(auth) = self.frame_auth.as_deref_mut() {
                auth.rekey_send(keys, Side::Initiator);
            }
        } else {
            self.queue_control(FrameKind::Rekey, &[]);
        }
        self.transcript = transcript(&hello, body);
        self.rejoined(learned.key_id);
        Ok(())
    }

    fn on_rekey(&mut self, body: &[u8]) -> Result<(), Rejection> {
        let Rejoin::Answered { keys, .. } = std::mem::take(&mut self.rejoin) else {
            return Err(Rejection::new(
                RejectCode::Malformed,
                "a REKEY arrived although no re-join was answered",
            ));
        };
        if !body.is_empty() {
            return Err(Rejection::new(
                RejectCode::Malformed,
                "a REKEY must be empty",
            ));
        }
        if let (Some(auth), Some(keys)) = (self.frame_auth.as_deref_mut(), keys.as_deref()) {
            auth.rekey_recv(keys, Side::Acceptor);
        }
        Ok(())
    }

    /// The new secret may itself be revoked.
    fn authorize_rejoined(&self, key_id: Option<crate::KeyId>) -> Result<(), Rejection> {
        let peer = self.peer.as_ref().ok_or_else(not_joined)?;
        authorize(
            &self.config,
            PeerFacts {
                node_id: &peer.node_id,
                key_id,
                cert_names: self.transport.cert_names(),
            },
        )
    }

    /// Plaintext links with frame authentication: the keys of the re-join, where the
    /// side that sent REJOIN takes the initiator's role.
    fn derive_keys(
        &self,
        key_id: Option<crate::KeyId>,
        hello: &[u8],
        welcome: &[u8],
    ) -> Option<Box<LinkKeys>> {
        self.frame_auth.as_ref()?;
        let secret = self.config.keyring.as_ref()?.get(key_id?)?;
        Some(Box::new(LinkKeys::derive(secret, hello, welcome)))
    }

    fn rejoined(&mut self, key_id: Option<crate::KeyId>) {
        if let Some(peer) = self.peer.as_mut() {
            peer.key_id = key_id;
            let peer = peer.clone();
            self.events.push(Event::Rejoined(peer));
        }
    }

    /// The deadlines of a joined link: the peer certificate's end, a re-join's limit.
    pub(super) fn joined_timeout(&self) -> Option<Instant> {
        match (self.peer_expiry, self.rejoin.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn handle_joined_timeout(&mut self, now: Instant) {
        if !matches!(self.state, State::Joined) {
            return;
        }
        if self.rejoin.deadline().is_some_and(|d| now >= d) {
            return self.close(CloseReason::new(
                CloseCode::RejoinFailed,
                format!(
                    "the re-join did not complete within handshake_timeout ({} ms)",
                    self.config.handshake_timeout.as_millis()
                ),
            ));
        }
        if self.peer_expiry.is_some_and(|d| now >= d) {
            let end = self.transport.peer_not_after().unwrap_or_default();
            self.close(expired_reason(end));
        }
    }

    /// At the join: the peer certificate's end, and, if the settings changed during the
    /// handshake, the peer decided again under the new ones.
    pub(super) fn on_joined_trust(&mut self, now: Instant) {
        if let Some(settings) = self.pending_settings.take() {
            (self.config, self.tls_context) = settings;
            return self.recheck_peer(now);
        }
        if self.config.close_on_peer_expiry {
            if let Some(end) = self.transport.peer_not_after() {
                self.peer_expiry = expiry_instant(end, now, self.clock.unix_ms(now));
            }
        }
    }
}

/// A re-join is always strict about the proof, whatever the node's rollout mode.
fn strict(config: &Arc<Config>) -> std::borrow::Cow<'_, Config> {
    if config.mode == Mode::Strict {
        std::borrow::Cow::Borrowed(config.as_ref())
    } else {
        let mut c = config.as_ref().clone();
        c.mode = Mode::Strict;
        std::borrow::Cow::Owned(c)
    }
}

fn malformed(e: &crate::join::MessageError) -> Rejection {
    Rejection::new(RejectCode::Malformed, e.to_string())
}

fn not_joined() -> Rejection {
    Rejection::new(RejectCode::Malformed, "the link has not joined")
}

/// A certificate is valid through its notAfter second.
fn expired(not_after: i64, unix_ms: u64) -> bool {
    let end_ms = u64::try_from(not_after).unwrap_or(0).saturating_add(1) * 1000;
    unix_ms >= end_ms
}

fn expiry_instant(not_after: i64, now: Instant, unix_ms: u64) -> Option<Instant> {
    let end_ms = u64::try_from(not_after)
        .unwrap_or(0)
        .saturating_add(1)
        .saturating_mul(1000);
    now.checked_add(Duration::from_millis(end_ms.saturating_sub(unix_ms)))
}

fn expired_reason(not_after: i64) -> CloseReason {
    CloseReason::new(
        CloseCode::CertificateExpired,
        format!(
            "the peer's certificate expired at {} (close_on_peer_expiry); renew certificates \
             before they expire and no link ever reaches this",
            crate::tls::rfc3339(not_after)
        ),
    )
}
