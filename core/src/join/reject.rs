//! Why a join was refused: the REJECT codes, the REJECT body, and the join error.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::frame::FrameKind;
use crate::wire::{put_lp16, FieldError, Reader};

use super::messages::MessageError;

/// Longest REJECT or CLOSE message, in bytes of UTF-8.
pub const MAX_REASON_LEN: usize = 1024;

/// Why a join was refused. The numbers are the wire values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectCode {
    /// 1: the refusing side requires a shared secret and the other side presented no proof.
    SecretRequired,
    /// 2: the refusing side has no shared secret, but the other side requires one.
    NoSecret,
    /// 3: the proof does not verify although it names a key id the refusing side holds:
    /// the message was forged, altered or relayed from another connection.
    AuthenticationFailed,
    /// 4: the proof names a key id the refusing side does not hold.
    UnknownKey,
    /// 5: the HELLO's timestamp is outside the clock-skew tolerance.
    ClockSkew,
    /// 6: the HELLO's nonce was already used inside the tolerance window.
    Replay,
    /// 7: the HELLO names another cluster.
    ClusterMismatch,
    /// 8: the join message's version is not spoken here.
    UnsupportedVersion,
    /// 9: the peer's identity is not allowed by this node's authorization rules.
    IdentityNotAllowed,
    /// 10: the join message is malformed or arrived out of order.
    Malformed,
    /// 11: the refusing side is temporarily unable to accept joins (e.g. its replay cache is full).
    Busy,
    /// 12: the join message carries the refusing node's own identity (its node id, or a
    /// nonce of its own HELLO): a join reflected back to its sender, or two nodes
    /// configured with the same node id.
    Reflected,
    /// 13: the peer is revoked: its node id or the secret it proved is on the refusing
    /// node's revocation list (a revoked certificate is refused earlier, by TLS, with
    /// the alert `certificate_revoked`).
    Revoked,
    /// A code this version does not know.
    Other(u16),
}

impl RejectCode {
    /// The wire value.
    pub const fn to_u16(self) -> u16 {
        match self {
            Self::SecretRequired => 1,
            Self::NoSecret => 2,
            Self::AuthenticationFailed => 3,
            Self::UnknownKey => 4,
            Self::ClockSkew => 5,
            Self::Replay => 6,
            Self::ClusterMismatch => 7,
            Self::UnsupportedVersion => 8,
            Self::IdentityNotAllowed => 9,
            Self::Malformed => 10,
            Self::Busy => 11,
            Self::Reflected => 12,
            Self::Revoked => 13,
            Self::Other(n) => n,
        }
    }

    /// The code for a wire value.
    pub const fn from_u16(n: u16) -> Self {
        match n {
            1 => Self::SecretRequired,
            2 => Self::NoSecret,
            3 => Self::AuthenticationFailed,
            4 => Self::UnknownKey,
            5 => Self::ClockSkew,
            6 => Self::Replay,
            7 => Self::ClusterMismatch,
            8 => Self::UnsupportedVersion,
            9 => Self::IdentityNotAllowed,
            10 => Self::Malformed,
            11 => Self::Busy,
            12 => Self::Reflected,
            13 => Self::Revoked,
            n => Self::Other(n),
        }
    }

    /// A short name for the code.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::SecretRequired => "shared secret required",
            Self::NoSecret => "peer has no shared secret",
            Self::AuthenticationFailed => "authentication failed",
            Self::UnknownKey => "unknown key",
            Self::ClockSkew => "clock skew",
            Self::Replay => "replayed join",
            Self::ClusterMismatch => "cluster name mismatch",
            Self::UnsupportedVersion => "unsupported version",
            Self::IdentityNotAllowed => "peer identity not allowed",
            Self::Malformed => "malformed join message",
            Self::Busy => "busy",
            Self::Reflected => "reflected join",
            Self::Revoked => "revoked",
            Self::Other(_) => "unknown reject code",
        }
    }

    /// What an operator of the refused node should do about it.
    pub const fn advice(self) -> &'static str {
        match self {
            Self::SecretRequired | Self::NoSecret => {
                "configure the same shared_secret on every node of the cluster"
            }
            Self::AuthenticationFailed => {
                "the key ids match, so this is not a wrong secret: the join message was forged \
                 (key ids are not secret), altered in transit or relayed from another \
                 connection; look for a man in the middle, or a peer that binds the join to \
                 its TLS session differently (`palisade secret id` prints a secret's key id)"
            }
            Self::UnknownKey => {
                "the nodes share no secret: during a rotation, add the new secret to every node's \
                 accepted secrets before making it primary anywhere; compare the nodes' key ids \
                 (`palisade secret id --file FILE` on each node)"
            }
            Self::ClockSkew => "synchronise the nodes' clocks (NTP), or raise clock_skew_tolerance",
            Self::Replay => {
                "someone resent a recorded join; if this repeats, look for a man in the middle"
            }
            Self::ClusterMismatch => "check cluster_name on both nodes",
            Self::UnsupportedVersion => "upgrade the older node",
            Self::IdentityNotAllowed => {
                "check the peer authorization rules and the names in the peer's certificate"
            }
            Self::Malformed => "the peer has a bug or is not a palisade node",
            Self::Busy => "retry later",
            Self::Reflected => {
                "give every node its own node_id; if they differ, someone is reflecting joins \
                 back to their sender (a man in the middle)"
            }
            Self::Revoked => {
                "this node was removed from the cluster (its revocation_file entry is named \
                 above); if that is a mistake, remove the entry on the refusing node and reload"
            }
            Self::Other(_) => "upgrade this node to learn what the peer meant",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(n) => write!(f, "{} {n}", self.describe()),
            _ => f.write_str(self.describe()),
        }
    }
}

/// A refusal: the code and a message for the operator. It travels in a REJECT frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub code: RejectCode,
    /// Details in words, e.g. the measured clock skew. Sent to the peer.
    pub message: String,
    /// Details for this node's operator only, never sent: what would help an attacker
    /// (e.g. the key ids this node holds) stays here.
    pub local_detail: Option<String>,
}

impl Rejection {
    /// A rejection with a code and message.
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        truncate_utf8(&mut message, MAX_REASON_LEN);
        Self {
            code,
            message,
            local_detail: None,
        }
    }

    /// The same rejection with details shown to this node's operator (in errors and
    /// logs) but never sent to the peer.
    pub fn with_local_detail(mut self, detail: impl Into<String>) -> Self {
        self.local_detail = Some(detail.into());
        self
    }

    /// The REJECT body: `code (u16) ‖ lp16(message)`.
    pub fn encode(&self) -> BytesMut {
        let mut dst = BytesMut::with_capacity(4 + self.message.len());
        dst.put_u16(self.code.to_u16());
        put_lp16(&mut dst, self.message.as_bytes());
        dst
    }

    /// Parses a REJECT body strictly.
    pub fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(body);
        let parse = |r: &mut Reader<'_>| -> Result<Self, FieldError> {
            let code = RejectCode::from_u16(r.u16("code")?);
            let message = r.text("message", MAX_REASON_LEN)?.to_owned();
            Ok(Self {
                code,
                message,
                local_detail: None,
            })
        };
        parse(&mut r)
            .and_then(|rej| r.finish().map(|()| rej))
            .map_err(|problem| MessageError {
                message: FrameKind::Reject,
                problem,
            })
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)?;
        } else {
            write!(f, "{}: {}", self.code, self.message)?;
        }
        match &self.local_detail {
            Some(detail) => write!(f, " [not sent to the peer: {detail}]"),
            None => Ok(()),
        }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A join did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// This node refused the peer, and sent it a REJECT saying why.
    RefusedPeer(Rejection),
    /// The peer refused this node with a REJECT.
    RefusedByPeer(Rejection),
}

impl JoinError {
    /// The refusal, whichever side made it.
    pub fn rejection(&self) -> &Rejection {
        match self {
            Self::RefusedPeer(r) | Self::RefusedByPeer(r) => r,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RefusedPeer(r) => write!(f, "refused the peer's join: {r} ({})", r.code.advice()),
            Self::RefusedByPeer(r) => {
                write!(f, "the peer refused to join: {r} ({})", r.code.advice())
            }
        }
    }
}

impl std::error::Error for JoinError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_wire_values() {
        for n in 0..=14u16 {
            assert_eq!(RejectCode::from_u16(n).to_u16(), n);
        }
        assert_eq!(RejectCode::from_u16(5), RejectCode::ClockSkew);
        assert_eq!(RejectCode::from_u16(999), RejectCode::Other(999));
        assert_eq!(RejectCode::from_u16(12), RejectCode::Reflected);
        assert_eq!(RejectCode::from_u16(13), RejectCode::Revoked);
    }

    #[test]
    fn local_detail_is_shown_here_and_never_encoded() {
        let r = Rejection::new(RejectCode::UnknownKey, "no such key")
            .with_local_detail("this node holds 0011223344556677");
        assert!(r.to_string().contains("0011223344556677"), "{r}");
        let on_the_wire = Rejection::decode(&r.encode()).unwrap();
        assert_eq!(on_the_wire.local_detail, None);
        assert!(!on_the_wire.to_string().contains("0011223344556677"));
        assert!(!r.encode().windows(4).any(|w| w == b"0011"));
    }

    #[test]
    fn reject_body_round_trips_and_is_bounded() {
        let r = Rejection::new(RejectCode::ClockSkew, "skew of 400000 ms");
        assert_eq!(Rejection::decode(&r.encode()), Ok(r));
        let long = Rejection::new(RejectCode::Busy, "é".repeat(2000));
        assert!(long.message.len() <= MAX_REASON_LEN);
        assert!(Rejection::decode(&[0, 1, 0]).is_err());
    }

    #[test]
    fn join_errors_say_which_side_refused_and_what_to_do() {
        let r = Rejection::new(RejectCode::AuthenticationFailed, "");
        let msg = JoinError::RefusedByPeer(r).to_string();
        assert!(
            msg.contains("peer refused") && msg.contains("not a wrong secret"),
            "{msg}"
        );
    }
}
