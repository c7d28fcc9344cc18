//! CLOSE frames: how a link ends on purpose, and why.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::frame::FrameKind;
use crate::join::{MessageError, MAX_REASON_LEN};
use crate::wire::{put_lp16, FieldError, Reader};

/// Why a link was closed. The numbers are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 0: the application is done with the link.
    Normal,
    /// 1: the node is shutting down.
    ShuttingDown,
    /// 2: the peer broke the protocol (malformed or unexpected bytes).
    ProtocolError,
    /// 3: the peer sent a frame larger than this node's max_frame.
    FrameTooLarge,
    /// 4: the join did not complete within the handshake timeout.
    HandshakeTimeout,
    /// 5: this node failed internally (e.g. its random source).
    InternalError,
    /// 6: the peer is revoked under this node's current settings (its node id, its
    /// certificate or the secret it proved is on the revocation list or a CRL); sent
    /// when a reload revokes a joined link.
    Revoked,
    /// 7: the peer is no longer authorized under this node's current settings (trust,
    /// name rules, `allowed_peers`); sent when a reload withdraws it from a joined link.
    NotAuthorized,
    /// 8: the peer's certificate expired while the link was joined
    /// (`close_on_peer_expiry`).
    CertificateExpired,
    /// 9: a re-join (PROTOCOL.md §5.8) was refused: the link's secret is no longer
    /// accepted and the peer could not prove a current one.
    RejoinFailed,
    /// Any other value; applications may use 0x1000 and up for their own reasons.
    Other(u16),
}

impl CloseCode {
    /// The wire value.
    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Normal => 0,
            Self::ShuttingDown => 1,
            Self::ProtocolError => 2,
            Self::FrameTooLarge => 3,
            Self::HandshakeTimeout => 4,
            Self::InternalError => 5,
            Self::Revoked => 6,
            Self::NotAuthorized => 7,
            Self::CertificateExpired => 8,
            Self::RejoinFailed => 9,
            Self::Other(n) => n,
        }
    }

    /// The code for a wire value.
    pub const fn from_u16(n: u16) -> Self {
        match n {
            0 => Self::Normal,
            1 => Self::ShuttingDown,
            2 => Self::ProtocolError,
            3 => Self::FrameTooLarge,
            4 => Self::HandshakeTimeout,
            5 => Self::InternalError,
            6 => Self::Revoked,
            7 => Self::NotAuthorized,
            8 => Self::CertificateExpired,
            9 => Self::RejoinFailed,
            n => Self::Other(n),
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal close"),
            Self::ShuttingDown => f.write_str("shutting down"),
            Self::ProtocolError => f.write_str("protocol error"),
            Self::FrameTooLarge => f.write_str("frame too large"),
            Self::HandshakeTimeout => f.write_str("handshake timeout"),
            Self::InternalError => f.write_str("internal error"),
            Self::Revoked => f.write_str("revoked"),
            Self::NotAuthorized => f.write_str("no longer authorized"),
            Self::CertificateExpired => f.write_str("peer certificate expired"),
            Self::RejoinFailed => f.write_str("re-join failed"),
            Self::Other(n) => write!(f, "close code {n}"),
        }
    }
}

/// A close code and a message in words. It travels in a CLOSE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Why.
    pub code: CloseCode,
    /// Details for the operator (at most 1024 bytes; longer messages are cut).
    pub message: String,
}

impl CloseReason {
    /// A reason with a code and message.
    pub fn new(code: CloseCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        crate::join::truncate_utf8(&mut message, MAX_REASON_LEN);
        Self { code, message }
    }

    /// A normal close with no message.
    pub fn normal() -> Self {
        Self::new(CloseCode::Normal, "")
    }

    /// The CLOSE body: `code (u16) ‖ lp16(message)`.
    pub fn encode(&self) -> BytesMut {
        let mut dst = BytesMut::with_capacity(4 + self.message.len());
        dst.put_u16(self.code.to_u16());
        put_lp16(&mut dst, self.message.as_bytes());
        dst
    }

    /// Parses a CLOSE body strictly.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let parse = |r: &mut Reader<'_>| -> Result<Self, FieldError> {
            let code = CloseCode::from_u16(r.u16("code")?);
            let message = r.text("message", MAX_REASON_LEN)?.to_owned();
            Ok(Self { code, message })
        };
        parse(&mut r)
            .and_then(|c| r.finish().map(|()| c))
            .map_err(|problem| MessageError {
                message: FrameKind::Close,
                problem,
            })
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_body_round_trips() {
        for code in [
            CloseCode::Normal,
            CloseCode::HandshakeTimeout,
            CloseCode::Revoked,
            CloseCode::RejoinFailed,
            CloseCode::Other(0x1234),
        ] {
            let r = CloseReason::new(code, "bye");
            assert_eq!(CloseReason::decode(&r.encode()), Ok(r));
        }
        for n in 0..=10u16 {
            assert_eq!(CloseCode::from_u16(n).to_u16(), n);
        }
        assert_eq!(CloseCode::from_u16(6), CloseCode::Revoked);
        assert_eq!(CloseCode::from_u16(9), CloseCode::RejoinFailed);
        assert_eq!(
            CloseReason::decode(&[0, 0, 0, 1]).unwrap_err().problem,
            FieldError::Truncated("message")
        );
    }
}
