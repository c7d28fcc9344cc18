//! The frame codec: `kind (u8) ‖ length (u32, big-endian) ‖ payload`.
//!
//! [`FrameDecoder`] works like a tokio-util `Decoder`: it looks at the front of a
//! [`BytesMut`], and once a whole frame is there it splits the payload off as [`Bytes`]
//! without copying it. The declared length is checked against the limit for that kind
//! of frame as soon as the 5-byte header is in, before a byte of the body is buffered,
//! so a peer that claims a 4 GiB frame costs nothing.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes in a frame header: one kind byte and a 32-bit length.
pub const HEADER_LEN: usize = 5;

/// Largest payload of a control frame (HELLO, WELCOME, REJECT, CLOSE). Control frames are
/// small; capping them means an unauthenticated peer can never make a node buffer more
/// than this before the join.
pub const MAX_CONTROL_PAYLOAD: usize = 4096;

/// Default largest DATA payload (8 MiB), configurable per node as `max_frame`.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// Join request, initiator to acceptor.
    Hello,
    /// Join acceptance, acceptor to initiator.
    Welcome,
    /// Join refusal, either direction, then the link closes.
    Reject,
    /// Re-join request on a joined link (a HELLO body), either direction (§5.8).
    Rejoin,
    /// Re-join answer (a WELCOME body), from the side that received REJOIN.
    Rejoined,
    /// Re-join done, from the side that sent REJOIN; empty. Frame keys switch after it.
    Rekey,
    /// Application payload.
    Data,
    /// Orderly shutdown with a code and reason.
    Close,
}

impl FrameKind {
    /// The byte that stands for this kind on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Hello => 0x01,
            Self::Welcome => 0x02,
            Self::Reject => 0x03,
            Self::Rejoin => 0x04,
            Self::Rejoined => 0x05,
            Self::Rekey => 0x06,
            Self::Data => 0x10,
            Self::Close => 0x11,
        }
    }

    /// The kind a wire byte stands for, if any.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Reject,
            0x04 => Self::Rejoin,
            0x05 => Self::Rejoined,
            0x06 => Self::Rekey,
            0x10 => Self::Data,
            0x11 => Self::Close,
            _ => return None,
        })
    }

    /// Whether this is a control frame (limited to [`MAX_CONTROL_PAYLOAD`]).
    pub const fn is_control(self) -> bool {
        !matches!(self, Self::Data)
    }

    /// The protocol's name for the kind, as the spec and error messages write it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hello => "HELLO",
            Self::Welcome => "WELCOME",
            Self::Reject => "REJECT",
            Self::Rejoin => "REJOIN",
            Self::Rejoined => "REJOINED",
            Self::Rekey => "REKEY",
            Self::Data => "DATA",
            Self::Close => "CLOSE",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One decoded frame. The payload shares the decoder's buffer; nothing was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is.
    pub kind: FrameKind,
    /// The frame body.
    pub payload: Bytes,
}

/// The frame stream is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a body larger than this node accepts.
    TooLarge {
        /// The kind the header announced.
        kind: FrameKind,
        /// The length the header announced.
        declared: u64,
        /// The limit for this kind of frame.
        max: usize,
    },
    /// The kind byte is not one this protocol version defines.
    UnknownKind(u8),
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes of the frame that had arrived.
        have: usize,
        /// Bytes the frame needs (header + body), when the header was complete.
        need: Option<u64>,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { kind, declared, max } if kind.is_control() => write!(
                f,
                "peer announced a {declared}-byte {kind} frame; control frames are at most {max} bytes \
                 (the peer is misbehaving or does not speak this protocol)"
            ),
            Self::TooLarge { kind, declared, max } => write!(
                f,
                "peer announced a {declared}-byte {kind} frame but this node's max_frame is {max} bytes; \
                 raise max_frame on this node if the peer legitimately sends frames that large"
            ),
            Self::UnknownKind(k) => write!(
                f,
                "peer sent a frame of unknown kind 0x{k:02x} (it speaks a newer protocol or is corrupting the stream)"
            ),
            Self::Truncated { have, need: Some(need) } => write!(
                f,
                "the stream ended inside a frame ({have} of {need} bytes arrived)"
            ),
            Self::Truncated { have, need: None } => write!(
                f,
                "the stream ended inside a frame header ({have} of {HEADER_LEN} bytes arrived)"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// The parsed 5-byte header at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    kind: FrameKind,
    len: usize,
}

/// Splits frames off the front of a buffer, enforcing the size limits on each header.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_data: usize,
    /// Bytes every frame carries beyond its payload limit: the tag on authenticated links.
    tag_len: usize,
}

impl FrameDecoder {
    /// A decoder that accepts DATA payloads up to `max_frame` bytes and control payloads
    /// up to [`MAX_CONTROL_PAYLOAD`].
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_data: max_frame,
            tag_len: 0,
        }
    }

    /// From now on every frame may carry `tag_len` bytes beyond its payload limit (the
    /// authentication tag of docs/PROTOCOL.md §5.7), so `max_frame` keeps meaning the payload.
    pub fn set_tag_len(&mut self, tag_len: usize) {
        self.tag_len = tag_len;
    }

    /// The largest DATA payload accepted.
    pub fn max_frame(&self) -> usize {
        self.max_data
    }

    /// The limit that applies to a payload of `kind`.
    pub fn limit(&self, kind: FrameKind) -> usize {
        if kind.is_control() {
            MAX_CONTROL_PAYLOAD
        } else {
            self.max_data
        }
    }

    fn header(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let Some(&kind_byte) = buf.first() else {
            return Ok(None);
        };
        // The kind is checked on the first byte so a stranger's stream fails fast.
        let kind = FrameKind::from_byte(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
        let Some(len_bytes) = buf.get(1..HEADER_LEN) else {
            return Ok(None);
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(len_bytes);
        let declared = u32::from_be_bytes(len);
        let max = self.limit(kind);
        match usize::try_from(declared) {
            Ok(len) if len <= max.saturating_add(self.tag_len) => Ok(Some(Header { kind, len })),
            // Reported as payload sizes, so the numbers match the max_frame setting.
            _ => Err(FrameError::TooLarge {
                kind,
                declared: u64::from(declared).saturating_sub(self.tag_len as u64),
                max,
            }),
        }
    }

    /// Total bytes (header + body) of the frame at the front of `buf`, once its header
    /// is complete and valid. Lets a caller size its input window to finish that frame.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        Ok(self.header(buf)?.map(|h| HEADER_LEN + h.len))
    }

    /// Splits the next whole frame off the front of `buf`, or returns `Ok(None)` when
    /// more bytes are needed. The payload is not copied.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.header(buf)? else {
            return Ok(None);
        };
        if buf.len() < HEADER_LEN + header.len {
            // Make room for the whole body once, instead of growing step by step.
            buf.reserve(HEADER_LEN + header.len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(header.len).freeze();
        Ok(Some(Frame {
            kind: header.kind,
            payload,
        }))
    }

    /// How many whole DATA frames lead `buf`, up to the first thing that is not one (a
    /// control frame, a partial frame, a header over the limit), and how many bytes they
    /// span: the joined link's hot path, which leaves every other case to
    /// [`Self::decode`] and its errors. The caller splits the run off in one piece (a
    /// [`FrameRun`](crate::FrameRun)).
    pub fn data_run(&self, buf: &[u8]) -> (usize, usize) {
        let limit = self.max_data.saturating_add(self.tag_len);
        let (mut count, mut end) = (0, 0);
        while let Some(&[kind, a, b, c, d]) = buf.get(end..end + HEADER_LEN) {
            let len = u32::from_be_bytes([a, b, c, d]) as usize;
            if kind != FrameKind::Data.to_byte()
                || len > limit
                || buf.len() - end - HEADER_LEN < len
            {
                break;
            }
            end += HEADER_LEN + len;
            count += 1;
        }
        (count, end)
    }

    /// The error for a stream that ended with `buf` still holding part of a frame, or
    /// `None` when it ended cleanly between frames.
    pub fn truncation(&self, buf: &[u8]) -> Option<FrameError> {
        if buf.is_empty() {
            return None;
        }
        let need = self
            .header(buf)
            .ok()
            .flatten()
            .map(|h| (HEADER_LEN + h.len) as u64);
        Some(FrameError::Truncated {
            have: buf.len(),
            need,
        })
    }
}

/// Appends a frame header for a payload of `len` bytes. Callers check `len` against the
/// limit first; a length past `u32::MAX` cannot be represented and is a caller bug the
/// limits already exclude.
pub fn encode_header(kind: FrameKind, len: usize, dst: &mut impl BufMut) {
    dst.put_slice(&header(kind, len));
}

/// The header of a frame of `kind` with a payload of `len` bytes: the kind byte and the
/// length as a big-endian `u32` (saturated; see [`encode_header`]).
pub fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind.to_byte(), a, b, c, d]
}

/// Appends a whole frame to `dst`.
pub fn encode(kind: FrameKind, payload: &[u8], dst: &mut BytesMut) {
    dst.reserve(HEADER_LEN + payload.len());
    encode_header(kind, payload.len(), dst);
    dst.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_without_copying_and_waits_for_more() {
        let mut buf = BytesMut::new();
        encode(FrameKind::Data, b"hello", &mut buf);
        encode(FrameKind::Close, b"", &mut buf);
        let whole = buf.clone();
        let mut dec = FrameDecoder::new(16);
        let mut partial = BytesMut::from(&whole[..7]);
        assert_eq!(dec.decode(&mut partial), Ok(None));
        assert_eq!(partial.len(), 7, "a partial frame is left in place");

        let base = buf.as_ptr();
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::Data);
        assert_eq!(&f.payload[..], b"hello");
        assert_eq!(
            f.payload.as_ptr(),
            base.wrapping_add(HEADER_LEN),
            "payload not copied"
        );
        let f = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.kind, f.payload.len()), (FrameKind::Close, 0));
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn refuses_oversized_header_before_buffering_the_body() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&[0x10, 0xff, 0xff, 0xff, 0xff][..]);
        let err = dec.decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                kind: FrameKind::Data,
                declared: u64::from(u32::MAX),
                max: DEFAULT_MAX_FRAME
            }
        );
        assert!(
            buf.capacity() < 1024,
            "nothing was reserved for the claimed body"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("4294967295") && msg.contains("8388608"),
            "{msg}"
        );
    }

    #[test]
    fn control_frames_have_their_own_small_limit() {
        let dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let header = [0x01, 0, 0, 0x10, 0x01];
        assert!(matches!(
            dec.frame_len(&header),
            Err(FrameError::TooLarge {
                kind: FrameKind::Hello,
                max: MAX_CONTROL_PAYLOAD,
                ..
            })
        ));
    }

    #[test]
    fn unknown_kind_fails_on_the_first_byte() {
        let mut dec = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0x7f][..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::UnknownKind(0x7f)));
    }

    #[test]
    fn truncation_reports_what_arrived() {
        let dec = FrameDecoder::new(16);
        assert_eq!(dec.truncation(&[]), None);
        assert_eq!(
            dec.truncation(&[0x10, 0, 0]),
            Some(FrameError::Truncated {
                have: 3,
                need: None
            })
        );
        assert_eq!(
            dec.truncation(&[0x10, 0, 0, 0, 4, 1]),
            Some(FrameError::Truncated {
                have: 6,
                need: Some(9)
            })
        );
    }
}
