//! The node's stream messages: their bytes, pure encode and decode (PROTOCOL.md, "Node
//! streams"). Each is one palisade DATA frame whose first byte is the kind, after the
//! kinds of [`crate::proto`]. Integers are big-endian. Decoding refuses truncated
//! messages and trailing bytes, so a peer cannot smuggle anything past the parser.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const OPEN: u8 = 0x10;
pub const ACCEPT: u8 = 0x11;
pub const REFUSE: u8 = 0x12;
pub const DATA: u8 = 0x13;
pub const WINDOW: u8 = 0x14;
pub const FIN: u8 = 0x15;
pub const RESET: u8 = 0x16;

/// Whether a frame's kind byte is one of the stream messages.
pub fn is_stream_kind(kind: u8) -> bool {
    (OPEN..=RESET).contains(&kind)
}

/// The longest reason text and service name: one length byte.
pub const MAX_TEXT: usize = 255;

/// Why a stream was refused (REFUSE) or reset (RESET): one byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: no `[[service]]` of that name on the acceptor.
    UnknownService,
    /// 2: the service's `allow` does not match the opener's node id.
    NotAllowed,
    /// 3: the acceptor could not connect to the service's target.
    TargetUnreachable,
    /// 4: the link already carries its maximum of streams.
    TooManyStreams,
    /// 5: the peer broke the stream rules (window exceeded, unknown id, bad state).
    Protocol,
    /// 6: a local socket failed or was reset (the program on one end went away).
    Aborted,
    /// 7: a reload removed the service or no longer allows the opener.
    Withdrawn,
    /// 8: the link is closing.
    LinkClosing,
    /// Any other code (from a newer peer): shown as its number.
    Other(u8),
}

impl Code {
    pub fn to_byte(self) -> u8 {
        match self {
            Self::UnknownService => 1,
            Self::NotAllowed => 2,
            Self::TargetUnreachable => 3,
            Self::TooManyStreams => 4,
            Self::Protocol => 5,
            Self::Aborted => 6,
            Self::Withdrawn => 7,
            Self::LinkClosing => 8,
            Self::Other(b) => b,
        }
    }

    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => Self::UnknownService,
            2 => Self::NotAllowed,
            3 => Self::TargetUnreachable,
            4 => Self::TooManyStreams,
            5 => Self::Protocol,
            6 => Self::Aborted,
            7 => Self::Withdrawn,
            8 => Self::LinkClosing,
            b => Self::Other(b),
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Self::UnknownService => "unknown service",
            Self::NotAllowed => "not allowed",
            Self::TargetUnreachable => "target unreachable",
            Self::TooManyStreams => "too many streams",
            Self::Protocol => "protocol violation",
            Self::Aborted => "aborted",
            Self::Withdrawn => "withdrawn by a reload",
            Self::LinkClosing => "link closing",
            Self::Other(b) => return write!(f, "code {b}"),
        };
        f.write_str(text)
    }
}

/// One stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Open {
        id: u32,
        window: u32,
        service: String,
    },
    Accept {
        id: u32,
        window: u32,
    },
    Refuse {
        id: u32,
        code: Code,
        reason: String,
    },
    Data {
        id: u32,
        bytes: Bytes,
    },
    Window {
        id: u32,
        increment: u32,
    },
    Fin {
        id: u32,
    },
    Reset {
        id: u32,
        code: Code,
        reason: String,
    },
}

impl Msg {
    pub fn id(&self) -> u32 {
        match self {
            Self::Open { id, .. }
            | Self::Accept { id, .. }
            | Self::Refuse { id, .. }
            | Self::Data { id, .. }
            | Self::Window { id, .. }
            | Self::Fin { id }
            | Self::Reset { id, .. } => *id,
        }
    }

    /// The frame body (kind byte first). Texts longer than [`MAX_TEXT`] are cut at a
    /// character boundary, so encoding never fails.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(16);
        let text = |b: &mut BytesMut, t: &str| {
            let t = cut(t);
            b.put_u8(t.len() as u8);
            b.put_slice(t.as_bytes());
        };
        match self {
            Self::Open {
                id,
                window,
                service,
            } => {
                b.put_u8(OPEN);
                b.put_u32(*id);
                b.put_u32(*window);
                text(&mut b, service);
            }
            Self::Accept { id, window } => {
                b.put_u8(ACCEPT);
                b.put_u32(*id);
                b.put_u32(*window);
            }
            Self::Refuse { id, code, reason } | Self::Reset { id, code, reason } => {
                b.put_u8(if matches!(self, Self::Refuse { .. }) {
                    REFUSE
                } else {
                    RESET
                });
                b.put_u32(*id);
                b.put_u8(code.to_byte());
                text(&mut b, reason);
            }
            Self::Data { id, bytes } => {
                b.reserve(bytes.len());
                b.put_u8(DATA);
                b.put_u32(*id);
                b.put_slice(bytes);
            }
            Self::Window { id, increment } => {
                b.put_u8(WINDOW);
                b.put_u32(*id);
                b.put_u32(*increment);
            }
            Self::Fin { id } => {
                b.put_u8(FIN);
                b.put_u32(*id);
            }
        }
        b.freeze()
    }

    /// Reads a frame body (kind byte first). DATA's bytes share the frame's buffer.
    pub fn decode(frame: &Bytes) -> Result<Self, DecodeError> {
        let mut r = frame.clone();
        let kind = take_u8(&mut r)?;
        let id = take_u32(&mut r)?;
        let msg = match kind {
            OPEN => {
                let window = take_u32(&mut r)?;
                let service = take_text(&mut r)?;
                Self::Open {
                    id,
                    window,
                    service,
                }
            }
            ACCEPT => Self::Accept {
                id,
                window: take_u32(&mut r)?,
            },
            REFUSE | RESET => {
                let code = Code::from_byte(take_u8(&mut r)?);
                let reason = take_text(&mut r)?;
                if kind == REFUSE {
                    Self::Refuse { id, code, reason }
                } else {
                    Self::Reset { id, code, reason }
                }
            }
            DATA => {
                let bytes = r.split_to(r.len());
                Self::Data { id, bytes }
            }
            WINDOW => Self::Window {
                id,
                increment: take_u32(&mut r)?,
            },
            FIN => Self::Fin { id },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if r.has_remaining() {
            return Err(DecodeError::Trailing(r.remaining()));
        }
        Ok(msg)
    }
}

/// Cuts `t` to at most [`MAX_TEXT`] bytes, at a character boundary.
fn cut(t: &str) -> &str {
    let mut end = t.len().min(MAX_TEXT);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    &t[..end]
}

/// Why a stream message could not be read: the link is closed with it (a peer that
/// sends malformed messages is broken or hostile, not merely slow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    Trailing(usize),
    UnknownKind(u8),
    NotUtf8,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => f.write_str("a stream message is truncated"),
            Self::Trailing(n) => write!(f, "a stream message has {n} trailing byte(s)"),
            Self::UnknownKind(k) => write!(f, "unknown stream message kind {k:#04x}"),
            Self::NotUtf8 => f.write_str("a stream message's text is not UTF-8"),
        }
    }
}

fn take_u8(r: &mut Bytes) -> Result<u8, DecodeError> {
    if r.remaining() < 1 {
        return Err(DecodeError::Truncated);
    }
    Ok(r.get_u8())
}

fn take_u32(r: &mut Bytes) -> Result<u32, DecodeError> {
    if r.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    Ok(r.get_u32())
}

fn take_text(r: &mut Bytes) -> Result<String, DecodeError> {
    let len = usize::from(take_u8(r)?);
    if r.remaining() < len {
        return Err(DecodeError::Truncated);
    }
    let raw = r.split_to(len);
    let text = std::str::from_utf8(&raw).map_err(|_| DecodeError::NotUtf8)?;
    // Texts go into this node's logs: no control characters, so a peer cannot forge log
    // lines with a newline (a service name with one matches no service anyway).
    Ok(text
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of PROTOCOL.md's "Node streams" section, in its order.
    pub fn vectors() -> Vec<(&'static str, Msg)> {
        vec![
            (
                "node_open = 10000000010004000009657463642d70656572",
                Msg::Open {
                    id: 1,
                    window: 262_144,
                    service: "etcd-peer".into(),
                },
            ),
            (
                "node_accept = 110000000100040000",
                Msg::Accept {
                    id: 1,
                    window: 262_144,
                },
            ),
            (
                "node_refuse = 120000000302136e6f7420616c6c6f7765643a206e6f64652d33",
                Msg::Refuse {
                    id: 3,
                    code: Code::NotAllowed,
                    reason: "not allowed: node-3".into(),
                },
            ),
            (
                "node_data = 130000000168656c6c6f",
                Msg::Data {
                    id: 1,
                    bytes: Bytes::from_static(b"hello"),
                },
            ),
            (
                "node_window = 140000000100010000",
                Msg::Window {
                    id: 1,
                    increment: 65_536,
                },
            ),
            ("node_fin = 1500000002", Msg::Fin { id: 2 }),
            (
                "node_reset = 1600000002050f77696e646f77206578636565646564",
                Msg::Reset {
                    id: 2,
                    code: Code::Protocol,
                    reason: "window exceeded".into(),
                },
            ),
        ]
    }

    /// Every vector of PROTOCOL.md encodes to its bytes and decodes back; the document's
    /// hex is checked too, so the spec and the code cannot drift.
    #[test]
    fn protocol_vectors_node_streams() {
        let spec = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md"),
        )
        .unwrap();
        for (line, msg) in vectors() {
            let hex_text = line.split_once(" = ").unwrap().1;
            assert_eq!(hex::encode(msg.encode()), hex_text, "{msg:?}");
            assert_eq!(
                Msg::decode(&Bytes::from(hex::decode(hex_text).unwrap())).unwrap(),
                msg
            );
            assert!(
                spec.lines().any(|l| l == line),
                "PROTOCOL.md lacks the vector line `{line}` ({msg:?})"
            );
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        let d = |h: &str| Msg::decode(&Bytes::from(hex::decode(h).unwrap()));
        assert_eq!(d("10000000"), Err(DecodeError::Truncated));
        assert_eq!(d("1000000001000400000a6574"), Err(DecodeError::Truncated));
        assert_eq!(d("150000000200"), Err(DecodeError::Trailing(1)));
        assert_eq!(d("1700000001"), Err(DecodeError::UnknownKind(0x17)));
        assert_eq!(d("10000000010004000001ff"), Err(DecodeError::NotUtf8));
        assert_eq!(d(""), Err(DecodeError::Truncated));
    }

    proptest::proptest! {
        /// Any bytes decode to a message or an error, never a panic; what decodes encodes
        /// back to the same bytes (texts without control characters, as senders write).
        #[test]
        fn any_bytes_decode_or_fail_cleanly(kind in 0x0eu8..0x18, body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let mut frame = vec![kind];
            frame.extend_from_slice(&body);
            let frame = Bytes::from(frame);
            if let Ok(msg) = Msg::decode(&frame) {
                let again = Msg::decode(&msg.encode());
                proptest::prop_assert_eq!(again, Ok(msg.clone()));
                let replaced = match &msg {
                    Msg::Open { service: t, .. } | Msg::Refuse { reason: t, .. } | Msg::Reset { reason: t, .. } => t.contains('\u{fffd}'),
                    _ => false,
                };
                if !replaced {
                    proptest::prop_assert_eq!(msg.encode(), frame);
                }
            }
        }
    }

    #[test]
    fn a_peer_reason_cannot_forge_log_lines() {
        let m = Msg::Reset {
            id: 1,
            code: Code::Aborted,
            reason: "bye\n2026-01-01 INFO forged".into(),
        };
        let Msg::Reset { reason, .. } = Msg::decode(&m.encode()).unwrap() else {
            panic!()
        };
        assert_eq!(reason, "bye\u{fffd}2026-01-01 INFO forged");
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let reason = "é".repeat(200);
        let m = Msg::Reset {
            id: 1,
            code: Code::Other(99),
            reason,
        };
        let Msg::Reset { reason, code, .. } = Msg::decode(&m.encode()).unwrap() else {
            panic!()
        };
        assert_eq!(reason.len(), 254);
        assert_eq!(code, Code::Other(99));
    }
}
