//! The seam between socket bytes and frame-stream bytes.
//!
//! Without TLS the two are the same bytes. With TLS, the session turns received
//! ciphertext into frame-stream plaintext and queued frame-stream bytes into records,
//! says when the join may start, and supplies the channel-binding value. Nothing above
//! this module knows which transport a connection uses.

use bytes::{Bytes, BytesMut};

use crate::error::ConnectionError;
use crate::join::Rejection;
use crate::send_queue::SendQueue;
use crate::tls::session::{PrefaceOrTls, ReadOutcome, TlsSession};
use crate::tls::TlsPeer;

#[derive(Debug)]
pub(crate) enum Transport {
    /// Frame-stream bytes go to the socket as they are.
    Plain,
    /// Frame-stream bytes travel inside a TLS session.
    Tls(Box<TlsSession>),
}

impl Transport {
    /// Whether the join can start (TLS: the session's handshake is complete).
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Self::Plain => true,
            Self::Tls(tls) => tls.is_ready(),
        }
    }

    /// Whether TLS carries the frame stream (else frames after a join with a secret are
    /// authenticated by the core itself).
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// The value both join proofs are bound to: a TLS exporter value, empty without TLS.
    pub(crate) fn channel_binding(&self) -> &[u8] {
        match self {
            Self::Plain => &[],
            Self::Tls(tls) => tls.channel_binding(),
        }
    }

    /// Takes socket bytes, appending frame-stream plaintext to `plain` until about
    /// `room` bytes were added (TLS may overshoot by one record).
    pub(crate) fn read(
        &mut self,
        input: &[u8],
        plain: &mut BytesMut,
        room: usize,
        unix_ms: u64,
    ) -> Result<ReadOutcome, ConnectionError> {
        match self {
            Self::Plain => {
                let take = input.get(..room).unwrap_or(input);
                plain.extend_from_slice(take);
                Ok(ReadOutcome {
                    consumed: take.len(),
                    peer_closed: false,
                })
            }
            Self::Tls(tls) => tls.read(input, plain, room, unix_ms).map_err(|e| match e {
                PrefaceOrTls::Preface(e) => ConnectionError::Preface(e),
                PrefaceOrTls::Tls(e) => ConnectionError::Tls(e),
            }),
        }
    }

    /// The next bytes to write to the socket, drawn from the queued frame stream.
    /// `closing`: the link is over, so once the queue is written TLS says close_notify.
    pub(crate) fn poll_transmit(&mut self, queue: &mut SendQueue, closing: bool) -> Option<Bytes> {
        match self {
            Self::Plain => queue.pop(),
            Self::Tls(tls) => tls.poll_transmit(queue, closing),
        }
    }

    /// Bytes (beyond the frame queue) still owed to the socket.
    pub(crate) fn has_pending_output(&self, closing: bool) -> bool {
        match self {
            Self::Plain => false,
            Self::Tls(tls) => tls.has_pending_output(closing),
        }
    }

    /// What TLS established about the peer.
    pub(crate) fn peer(&self) -> Option<TlsPeer> {
        match self {
            Self::Plain => None,
            Self::Tls(tls) => tls.peer(),
        }
    }

    /// Checks the peer's join node id against its certificate's names, when a rule is
    /// given (`node_id_in_cert`).
    pub(crate) fn authorize_node_id(
        &self,
        node_id: &str,
        rule: Option<crate::tls::NodeIdNames>,
    ) -> Result<(), Rejection> {
        match self {
            Self::Plain => Ok(()),
            Self::Tls(tls) => tls.authorize_node_id(node_id, rule),
        }
    }
}
