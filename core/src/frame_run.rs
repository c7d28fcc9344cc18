//! A run of DATA frames handed over as the bytes they arrived in.
//!
//! On a joined link the receive path finds the whole DATA frames at the front of its
//! buffer and splits them off in one piece, headers and all: one reference-counted
//! [`Bytes`] for the run instead of one per frame. A frame of 64 bytes costs about as
//! much in reference counting (an atomic increment when split, a decrement when
//! dropped) as in AES-GCM, so an application that reads small frames in bulk takes the
//! run ([`Connection::poll_frame_run`](crate::Connection::poll_frame_run)) and reads
//! each payload as a slice of it ([`FrameRun::payloads`]), or takes any payload as its
//! own [`Bytes`] ([`FrameRun::frames`]) where it must outlive the run. Nothing is
//! copied either way.

use bytes::{Buf, Bytes};

use crate::frame::HEADER_LEN;

/// DATA frames in arrival order, their payloads sharing one buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameRun {
    inner: Inner,
}

#[derive(Clone, PartialEq, Eq)]
enum Inner {
    /// `count` whole frames as on the wire (5-byte header, then the payload), checked
    /// by the decoder before the run was made.
    Wire { wire: Bytes, count: usize },
    /// One payload decoded on its own (the frame-by-frame path).
    One(Bytes),
}

impl FrameRun {
    /// `count` whole DATA frames, headers included, as [`FrameDecoder::data_run`]
    /// (crate::frame::FrameDecoder::data_run) counted them.
    pub(crate) fn wire(wire: Bytes, count: usize) -> Self {
        Self {
            inner: Inner::Wire { wire, count },
        }
    }

    /// One payload.
    pub(crate) fn one(payload: Bytes) -> Self {
        Self {
            inner: Inner::One(payload),
        }
    }

    /// Frames in the run.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Wire { count, .. } => *count,
            Inner::One(_) => 1,
        }
    }

    /// Whether the run holds no frame (never, for a run a connection handed over).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payloads' bytes, headers not counted.
    pub fn payload_len(&self) -> usize {
        match &self.inner {
            Inner::Wire { wire, count } => wire.len().saturating_sub(count * HEADER_LEN),
            Inner::One(payload) => payload.len(),
        }
    }

    /// Wire bytes the run held: what it gave back to the receive window when taken.
    pub(crate) fn wire_len(&self) -> usize {
        match &self.inner {
            Inner::Wire { wire, .. } => wire.len(),
            Inner::One(payload) => HEADER_LEN + payload.len(),
        }
    }

    /// Each payload in order, borrowed from the run.
    pub fn payloads(&self) -> Payloads<'_> {
        match &self.inner {
            Inner::Wire { wire, count } => Payloads {
                rest: wire,
                left: *count,
                framed: true,
            },
            Inner::One(payload) => Payloads {
                rest: payload,
                left: 1,
                framed: false,
            },
        }
    }

    /// Each payload in order as its own [`Bytes`] (a reference to the run's buffer,
    /// not a copy).
    pub fn frames(&self) -> impl Iterator<Item = Bytes> + '_ {
        let base = match &self.inner {
            Inner::Wire { wire, .. } => wire,
            Inner::One(payload) => payload,
        };
        self.payloads().map(move |p| base.slice_ref(p))
    }

    /// Takes the first frame off the run; `None` once it is empty.
    pub(crate) fn pop_front(&mut self) -> Option<Bytes> {
        match &mut self.inner {
            Inner::Wire { wire, count } => {
                let len = payload_len_at(wire)?;
                let payload = wire.slice(HEADER_LEN..HEADER_LEN + len);
                wire.advance(HEADER_LEN + len);
                *count -= 1;
                Some(payload)
            }
            Inner::One(payload) => {
                let payload = std::mem::take(payload);
                self.inner = Inner::Wire {
                    wire: Bytes::new(),
                    count: 0,
                };
                Some(payload)
            }
        }
    }
}

/// The length of the frame at the front of `wire`, when the whole frame is there.
fn payload_len_at(wire: &[u8]) -> Option<usize> {
    let &[_, a, b, c, d] = wire.get(..HEADER_LEN)? else {
        return None;
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    (wire.len() - HEADER_LEN >= len).then_some(len)
}

/// Shown as its shape: payloads are application data.
impl std::fmt::Debug for FrameRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameRun")
            .field("frames", &self.len())
            .field("payload_len", &self.payload_len())
            .finish()
    }
}

/// The payloads of a [`FrameRun`], borrowed.
#[derive(Debug, Clone)]
pub struct Payloads<'a> {
    rest: &'a [u8],
    left: usize,
    /// `rest` holds frames with headers (else it is the one payload).
    framed: bool,
}

impl<'a> Iterator for Payloads<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if !self.framed {
            return Some(std::mem::take(&mut self.rest));
        }
        let len = payload_len_at(self.rest)?;
        let payload = self.rest.get(HEADER_LEN..HEADER_LEN + len)?;
        self.rest = self.rest.get(HEADER_LEN + len..)?;
        Some(payload)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode, FrameKind};
    use bytes::BytesMut;

    fn run(payloads: &[&[u8]]) -> FrameRun {
        let mut wire = BytesMut::new();
        for p in payloads {
            encode(FrameKind::Data, p, &mut wire);
        }
        FrameRun::wire(wire.freeze(), payloads.len())
    }

    #[test]
    fn payloads_frames_and_pops_agree_in_order() {
        let payloads: [&[u8]; 4] = [b"alpha", b"", b"gamma!", b"d"];
        let mut r = run(&payloads);
        assert_eq!((r.len(), r.payload_len()), (4, 12));
        assert_eq!(r.wire_len(), 12 + 4 * HEADER_LEN);
        assert_eq!(r.payloads().collect::<Vec<_>>(), payloads);
        assert_eq!(
            r.frames().collect::<Vec<_>>(),
            payloads.map(Bytes::from_static)
        );
        for p in payloads {
            assert_eq!(r.pop_front().as_deref(), Some(p));
        }
        assert_eq!((r.pop_front(), r.len()), (None, 0));
    }

    #[test]
    fn frames_share_the_run_buffer() {
        let r = run(&[b"one", b"two"]);
        let Inner::Wire { wire, .. } = &r.inner else {
            panic!("a wire run");
        };
        let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        for f in r.frames() {
            assert!(range.contains(&(f.as_ptr() as usize)), "no copy");
        }
    }

    #[test]
    fn a_single_payload_is_a_run_of_one() {
        let mut r = FrameRun::one(Bytes::from_static(b"solo"));
        assert_eq!(
            (r.len(), r.payload_len(), r.wire_len()),
            (1, 4, 4 + HEADER_LEN)
        );
        assert_eq!(r.payloads().collect::<Vec<_>>(), [b"solo"]);
        assert_eq!(r.pop_front().as_deref(), Some(&b"solo"[..]));
        assert!(r.is_empty() && r.pop_front().is_none());
    }
}
