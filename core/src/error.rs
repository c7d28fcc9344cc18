//! The connection's error: one enum wrapping each layer's error, with a message an
//! operator can act on, and the frame (if any) that tells the peer.

use std::fmt;
use std::time::Duration;

use crate::close::{CloseCode, CloseReason};
use crate::frame::{FrameError, FrameKind};
use crate::frame_auth::FrameAuthError;
use crate::join::{JoinError, MessageError};
use crate::preface::PrefaceError;
use crate::random::RandomError;
use crate::tls::TlsError;

/// Why a connection failed. Fatal and sticky: after one, the connection only flushes the
/// REJECT or CLOSE it owes the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer's stream does not open with the palisade preface.
    Preface(PrefaceError),
    /// The frame stream is malformed.
    Frame(FrameError),
    /// A join or close message is malformed.
    Message(MessageError),
    /// The join was refused, by this node or by the peer.
    Join(JoinError),
    /// A frame arrived that the protocol does not allow at this point.
    UnexpectedFrame {
        /// What arrived.
        kind: FrameKind,
        /// What the connection was doing.
        during: &'static str,
    },
    /// The join did not complete within the handshake timeout.
    HandshakeTimeout {
        /// The configured timeout.
        after: Duration,
    },
    /// The peer sent not one byte within the first-bytes timeout (acceptor side).
    FirstBytesTimeout {
        /// The configured timeout.
        after: Duration,
    },
    /// The peer closed the stream without a CLOSE frame.
    UnexpectedEof {
        /// Whether the link had joined.
        joined: bool,
    },
    /// The random source failed.
    Random(RandomError),
    /// The TLS layer failed (the peer was told with a TLS alert where rustls could).
    Tls(TlsError),
    /// A frame after the join failed authentication (plaintext with a secret).
    FrameAuth(FrameAuthError),
}

impl ConnectionError {
    /// Whether this is the peer refusing us (as opposed to a failure on our side or a
    /// refusal we made).
    pub fn is_refused_by_peer(&self) -> bool {
        matches!(self, Self::Join(JoinError::RefusedByPeer(_)))
    }

    /// The CLOSE this error sends the peer, for errors that are not join refusals
    /// (those send a REJECT) and where the peer can still listen.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        let code = match self {
            Self::Preface(_)
            | Self::Message(_)
            | Self::UnexpectedFrame { .. }
            | Self::FrameAuth(_) => CloseCode::ProtocolError,
            // An oversized control frame is a protocol violation, not a DATA limit.
            Self::Frame(FrameError::TooLarge { kind, .. }) if !kind.is_control() => {
                CloseCode::FrameTooLarge
            }
            Self::Frame(_) => CloseCode::ProtocolError,
            Self::HandshakeTimeout { .. } | Self::FirstBytesTimeout { .. } => {
                CloseCode::HandshakeTimeout
            }
            Self::Random(_) => CloseCode::InternalError,
            Self::Join(_) | Self::UnexpectedEof { .. } | Self::Tls(_) => return None,
        };
        Some(CloseReason::new(code, self.to_string()))
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Preface(e) => e.fmt(f),
            Self::Frame(e) => e.fmt(f),
            Self::Message(e) => e.fmt(f),
            Self::Join(e) => e.fmt(f),
            Self::UnexpectedFrame { kind, during } => write!(
                f,
                "the peer sent a {kind} frame {during}, which the protocol does not allow"
            ),
            Self::HandshakeTimeout { after } => write!(
                f,
                "the peer did not complete the join within {} ms (handshake_timeout); it may be \
                 stalled, overloaded, or not a palisade node",
                after.as_millis()
            ),
            Self::FirstBytesTimeout { after } => write!(
                f,
                "the peer sent nothing for {} ms after connecting; raise first_bytes_timeout if \
                 peers are that slow",
                after.as_millis()
            ),
            Self::UnexpectedEof { joined: false } => f.write_str(
                "the peer closed the connection during the handshake (it may have refused this \
                 node's TLS certificate, or it does not speak palisade)",
            ),
            Self::UnexpectedEof { joined: true } => {
                f.write_str("the peer closed the connection without a CLOSE frame")
            }
            Self::Random(e) => e.fmt(f),
            Self::Tls(e) => e.fmt(f),
            Self::FrameAuth(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Preface(e) => Some(e),
            Self::Frame(e) => Some(e),
            Self::Message(e) => Some(e),
            Self::Join(e) => Some(e),
            Self::Random(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::FrameAuth(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PrefaceError> for ConnectionError {
    fn from(e: PrefaceError) -> Self {
        Self::Preface(e)
    }
}

impl From<FrameError> for ConnectionError {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

impl From<MessageError> for ConnectionError {
    fn from(e: MessageError) -> Self {
        Self::Message(e)
    }
}

impl From<JoinError> for ConnectionError {
    fn from(e: JoinError) -> Self {
        Self::Join(e)
    }
}
