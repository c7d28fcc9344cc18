//! The seam between socket bytes and frame-stream bytes.
//!
//! Without TLS the two are the same bytes. With TLS, the session turns received
//! ciphertext into frame-stream plaintext and queued frame-stream bytes into records,
//! says when the join may start, and supplies the channel-binding value. Nothing above
//! this module knows which transport a connection uses.
//!
//! A permissive acceptor with TLS on (`mode`, PROTOCOL.md §8.1) starts undecided and
//! takes the peer's first byte to choose: plaintext palisade opens with `P` (the
//! preface), which no TLS record does (content types 20 to 23).

use bytes::{Bytes, BytesMut};

use crate::error::ConnectionError;
use crate::preface::MAGIC;
use crate::send_queue::SendQueue;
use crate::tls::session::{PrefaceOrTls, ReadOutcome, TlsSession};
use crate::tls::TlsPeer;

#[derive(Debug)]
pub(crate) enum Transport {
    /// Frame-stream bytes go to the socket as they are.
    Plain,
    /// Frame-stream bytes travel inside a TLS session.
    Tls(Box<TlsSession>),
    /// A permissive acceptor before the peer's first byte: becomes `Plain` if it is the
    /// preface's first byte, else `Tls` with this session (which diagnoses anything that
    /// is not TLS exactly as a strict TLS acceptor does). Nothing is written until then:
    /// the peer's language is not known yet.
    Sniffing(Box<TlsSession>),
}

impl Transport {
    /// Whether the join can start (TLS: the session's handshake is complete).
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Self::Plain => true,
            Self::Tls(tls) => tls.is_ready(),
            Self::Sniffing(_) => false,
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
            Self::Plain | Self::Sniffing(_) => &[],
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
        if let (Self::Sniffing(_), Some(&first)) = (&*self, input.first()) {
            self.decide(first);
        }
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
            // No byte yet.
            Self::Sniffing(_) => Ok(ReadOutcome {
                consumed: 0,
                peer_closed: false,
            }),
        }
    }

    /// A permissive acceptor's choice, from the peer's first byte.
    fn decide(&mut self, first: u8) {
        let [magic_first, ..] = MAGIC;
        if let Self::Sniffing(tls) = std::mem::replace(self, Self::Plain) {
            if first != magic_first {
                *self = Self::Tls(tls);
            }
        }
    }

    /// The next bytes to write to the socket, drawn from the queued frame stream.
    /// `closing`: the link is over, so once the queue is written TLS says close_notify.
    pub(crate) fn poll_transmit(&mut self, queue: &mut SendQueue, closing: bool) -> Option<Bytes> {
        match self {
            Self::Plain => queue.pop(),
            Self::Tls(tls) => tls.poll_transmit(queue, closing),
            Self::Sniffing(_) => {
                // The preface waits for the peer's first byte; a link closed before it
                // (first_bytes_timeout) owes the peer nothing it could read.
                if closing {
                    queue.clear();
                }
                None
            }
        }
    }

    /// Bytes (beyond the frame queue) still owed to the socket.
    pub(crate) fn has_pending_output(&self, closing: bool) -> bool {
        match self {
            Self::Plain | Self::Sniffing(_) => false,
            Self::Tls(tls) => tls.has_pending_output(closing),
        }
    }

    /// What TLS established about the peer.
    pub(crate) fn peer(&self) -> Option<TlsPeer> {
        match self {
            Self::Plain | Self::Sniffing(_) => None,
            Self::Tls(tls) => tls.peer(),
        }
    }

    /// The accepted peer certificate's names (TLS only).
    pub(crate) fn cert_names(&self) -> Option<&crate::tls::CertNames> {
        match self {
            Self::Plain | Self::Sniffing(_) => None,
            Self::Tls(tls) => tls.cert_names(),
        }
    }

    /// The peer's certificate decided again under new settings (TLS only).
    pub(crate) fn recheck(
        &self,
        ctx: &crate::tls::config::TlsContext,
        unix_ms: u64,
    ) -> Option<Result<(), crate::tls::CertRefusal>> {
        match self {
            Self::Plain | Self::Sniffing(_) => None,
            Self::Tls(tls) => tls.recheck(ctx, unix_ms),
        }
    }

    /// When the peer's certificate ends, unix seconds (TLS only).
    pub(crate) fn peer_not_after(&self) -> Option<i64> {
        match self {
            Self::Plain | Self::Sniffing(_) => None,
            Self::Tls(tls) => tls.peer_not_after(),
        }
    }
}
