//! What one link tells the operator: its `tracing` span and its node's [`Metrics`].
//!
//! The span (`palisade_link`, target `palisade`) is made when the socket is accepted or
//! dialed, with the peer's address and the side; the join records the peer's node id,
//! TLS version and suite and the key id; the end records the reject code or the close
//! code and reason. The link's socket loop (task or thread) and every line the driver
//! logs about the link run inside it. Nothing secret is ever recorded: key ids name a
//! secret without revealing it, and secrets, proofs and keys never reach the driver.

use std::fmt::Display;

use palisade_core::{CloseCause, CloseCode, PeerInfo, Side};
use tracing::field::{display, Empty};
use tracing::Span;

use crate::error::Error;
use crate::follow::{Follows, LinkRegistry};
use crate::metrics::{reject_label, Metrics, Tally};

/// The span of one link, before the join. `peer`: the address accepted or dialed.
pub fn link_span(side: Side, peer: Option<&dyn Display>) -> Span {
    let span = tracing::info_span!(
        target: "palisade",
        "palisade_link",
        side = side_label(side),
        peer = Empty,
        node_id = Empty,
        tls_version = Empty,
        tls_suite = Empty,
        key_id = Empty,
        // Filled by migration mode: the link did not meet the strict settings.
        below_strict = Empty,
        reject = Empty,
        close_code = Empty,
        close = Empty,
    );
    if let Some(peer) = peer {
        span.record("peer", display(peer));
    }
    span
}

/// The cause label of a close that new settings made (`Connection::update_settings`).
pub fn trust_close_label(code: CloseCode) -> Option<&'static str> {
    Some(match code {
        CloseCode::Revoked => "revoked",
        CloseCode::NotAuthorized => "not_authorized",
        CloseCode::CertificateExpired => "certificate_expired",
        CloseCode::RejoinFailed => "rejoin_failed",
        _ => return None,
    })
}

/// `acceptor` or `dialer`.
pub fn side_label(side: Side) -> &'static str {
    match side {
        Side::Acceptor => "acceptor",
        Side::Initiator => "dialer",
    }
}

/// Where a link stands, for the gauges: each link enters and leaves each gauge once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Handshaking,
    Open,
    Done,
}

/// A link's span and its node's counters (none: the link is not counted).
#[derive(Debug, Clone)]
pub struct LinkObserver {
    metrics: Option<Metrics>,
    span: Span,
    /// The listener's or dialer's live links, which follow its settings.
    links: Option<LinkRegistry>,
}

impl Default for LinkObserver {
    fn default() -> Self {
        Self::new(None, Span::none())
    }
}

impl LinkObserver {
    /// Counts into `metrics` (if any) and records into `span`.
    pub fn new(metrics: Option<Metrics>, span: Span) -> Self {
        Self {
            metrics,
            span,
            links: None,
        }
    }

    /// The link will follow the settings of the listener or dialer owning `links`.
    pub fn following(mut self, links: Option<LinkRegistry>) -> Self {
        self.links = links;
        self
    }

    /// Registers the link with its listener's or dialer's live links, if any.
    pub(crate) fn register(&self, link: std::sync::Weak<dyn Follows>) {
        if let Some(links) = &self.links {
            links.add(link);
        }
    }

    /// A joined link re-joined under another secret, or was closed by new settings.
    pub(crate) fn rejoined(&self, peer: &PeerInfo) {
        if let Some(m) = &self.metrics {
            m.record_rejoin(true);
        }
        if let Some(key) = peer.key_id {
            self.span.record("key_id", display(key));
        }
        self.span.in_scope(|| {
            tracing::info!(target: "palisade", "re-joined {} under key id {}", peer.node_id,
                peer.key_id.map_or("none".to_owned(), |k| k.to_string()));
        });
    }

    /// The link's span.
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The counters, if the link is counted.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    pub(crate) fn handshake_started(&self) {
        if let Some(m) = &self.metrics {
            m.handshake_started();
        }
    }

    /// The join completed; `open`: the socket is still up.
    pub(crate) fn joined(&self, side: Side, peer: &PeerInfo, open: bool) {
        if let Some(m) = &self.metrics {
            m.handshake_ended();
            m.link_joined(side, open);
        }
        let span = &self.span;
        span.record("node_id", peer.node_id.as_str());
        if let Some(key) = peer.key_id {
            span.record("key_id", display(key));
        }
        if let Some(tls) = &peer.tls {
            span.record("tls_version", tls.version);
            span.record("tls_suite", tls.cipher_suite);
        }
        if peer.below_strict.is_any() {
            // Only a permissive (migration) listener joins such a link: count and say it,
            // so the operator sees when the last one is gone before going strict.
            if let Some(m) = &self.metrics {
                m.record_below_strict();
            }
            span.record("below_strict", display(peer.below_strict));
            span.in_scope(|| {
                tracing::warn!(
                    target: "palisade",
                    "joined {} below the strict settings ({}): allowed only because mode = \"permissive\"",
                    peer.node_id,
                    peer.below_strict
                )
            });
        } else {
            span.in_scope(|| tracing::debug!(target: "palisade", "joined {}", peer.node_id));
        }
    }

    /// The handshake failed with `error`.
    pub(crate) fn handshake_failed(&self, error: &Error) {
        if let Some(m) = &self.metrics {
            m.handshake_ended();
            m.record_failure(error);
        }
        match error.reject_code() {
            Some(code) => {
                self.span.record("reject", reject_label(code));
            }
            None => {
                self.span.record("close", display(error));
            }
        }
    }

    /// The joined link's socket is shut; `cause`: why the link ended.
    pub(crate) fn closed(&self, cause: Option<&CloseCause>, io_error: Option<&str>) {
        if let Some(m) = &self.metrics {
            m.link_closed();
            let code = match cause {
                Some(CloseCause::Local(r) | CloseCause::Peer(r)) => Some((r.code, cause)),
                _ => None,
            };
            if let Some((code, cause)) = code {
                if code == CloseCode::RejoinFailed {
                    m.record_rejoin(false);
                }
                if let Some(CloseCause::Local(_)) = cause {
                    if let Some(label) = trust_close_label(code) {
                        m.record_trust_close(label);
                    }
                }
            }
        }
        if let Some(CloseCause::Local(r)) = cause {
            if trust_close_label(r.code).is_some() {
                self.span.in_scope(|| {
                    tracing::warn!(target: "palisade", "closed the link: {r}");
                });
            }
        }
        let span = &self.span;
        match cause {
            Some(c @ (CloseCause::Local(r) | CloseCause::Peer(r))) => {
                span.record("close_code", r.code.to_u16());
                span.record("close", display(c));
            }
            Some(CloseCause::Error(e)) => {
                span.record("close", display(e));
            }
            None => {}
        }
        if let Some(io) = io_error {
            span.record("close", io);
        }
        span.in_scope(|| tracing::debug!(target: "palisade", "link closed"));
    }

    /// Adds `tally` to the counters (and empties it).
    pub(crate) fn flush(&self, tally: &mut Tally) {
        match &self.metrics {
            Some(m) => m.add_traffic(tally),
            None => *tally = Tally::default(),
        }
    }
}
