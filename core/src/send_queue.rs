//! Outgoing frame bytes, bounded, coalesced, and without copying large payloads.
//!
//! Small frames are copied into one growing chunk, so a burst of 64-byte frames leaves as
//! one write (and, with TLS, as full records rather than one record per frame). A payload
//! of [`ZERO_COPY_MIN`] bytes or more is not copied: it is queued as a frame chunk, its
//! header held inline beside the payload's own [`Bytes`].
//!
//! With TLS the queue is read as slices ([`SendQueue::fill_slices`]) that rustls gathers into
//! records, so a chunk costs no write of its own and payloads from
//! [`ZERO_COPY_MIN_GATHERED`] bytes up are queued by reference too
//! ([`SendQueue::gather`]).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::{encode, encode_header, header, FrameKind, HEADER_LEN};

/// Payloads at least this large are queued by reference instead of copied, when every
/// chunk becomes a write of its own (plaintext links).
pub(crate) const ZERO_COPY_MIN: usize = 16 * 1024;

/// The same, when the chunks are gathered into TLS records: a reference costs two
/// reference-count updates and a slot, about what copying 512 bytes costs. At 1 KiB
/// frames over tokio loopback it measured 2.4–2.5 GB/s against 2.1 GB/s copied (the
/// send queue no longer duplicates the batch), and the same in memory
/// (BENCHMARKS.md, issue 23).
pub(crate) const ZERO_COPY_MIN_GATHERED: usize = 512;

/// One queued piece of the frame stream.
#[derive(Debug)]
enum Chunk {
    /// Bytes already laid out: coalesced small frames, or a tagged frame's payload.
    Bytes(Bytes),
    /// A frame whose payload is queued by reference; `sent` header bytes are gone.
    Frame {
        header: [u8; HEADER_LEN],
        sent: u8,
        payload: Bytes,
    },
}

impl Chunk {
    fn frame(kind: FrameKind, payload: Bytes) -> Self {
        Self::Frame {
            header: header(kind, payload.len()),
            sent: 0,
            payload,
        }
    }

    /// The bytes left, as at most two slices.
    fn slices(&self) -> [&[u8]; 2] {
        match self {
            Self::Bytes(b) => [b, &[]],
            Self::Frame {
                header,
                sent,
                payload,
            } => [
                header.get(usize::from(*sent)..).unwrap_or_default(),
                payload,
            ],
        }
    }

    /// Drops up to `n` bytes from the front; returns how many.
    fn advance(&mut self, n: usize) -> usize {
        match self {
            Self::Bytes(b) => {
                let k = n.min(b.len());
                b.advance(k);
                k
            }
            Self::Frame { sent, payload, .. } => {
                let in_header = (HEADER_LEN - usize::from(*sent)).min(n);
                // At most HEADER_LEN, so it fits a u8.
                *sent += u8::try_from(in_header).unwrap_or(0);
                let k = (n - in_header).min(payload.len());
                payload.advance(k);
                in_header + k
            }
        }
    }

    /// The bytes left.
    fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::Frame { sent, payload, .. } => {
                HEADER_LEN.saturating_sub(usize::from(*sent)) + payload.len()
            }
        }
    }
}

/// Chunk slots an emptied queue keeps.
const KEEP_CHUNKS: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    ready: VecDeque<Chunk>,
    current: BytesMut,
    len: usize,
    /// The chunks are gathered into TLS records, not written one by one.
    gathered: bool,
}

impl SendQueue {
    /// From now on the chunks are gathered into TLS records rather than written one by
    /// one: mid-sized payloads are queued by reference too.
    pub(crate) fn gather(&mut self) {
        self.gathered = true;
    }

    /// Payloads from this many bytes up are queued by reference.
    fn zero_copy_min(&self) -> usize {
        if self.gathered {
            ZERO_COPY_MIN_GATHERED
        } else {
            ZERO_COPY_MIN
        }
    }

    /// Closes the current chunk of coalesced bytes, so what is queued next follows it.
    fn close_current(&mut self) {
        if !self.current.is_empty() {
            self.ready
                .push_back(Chunk::Bytes(self.current.split().freeze()));
        }
    }

    /// Bytes queued and not yet handed out.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a frame whose payload is borrowed (control frames): always copied.
    pub(crate) fn push_control(&mut self, kind: FrameKind, payload: &[u8]) {
        encode(kind, payload, &mut self.current);
        self.len += HEADER_LEN + payload.len();
    }

    /// Queues a frame that owns its payload: large payloads are not copied.
    pub(crate) fn push(&mut self, kind: FrameKind, payload: Bytes) {
        if payload.len() < self.zero_copy_min() {
            self.push_control(kind, &payload);
        } else {
            self.push_by_reference(kind, payload);
        }
    }

    /// Queues a frame without copying its payload.
    fn push_by_reference(&mut self, kind: FrameKind, payload: Bytes) {
        self.len += HEADER_LEN + payload.len();
        if self.gathered {
            self.close_current();
            self.ready.push_back(Chunk::frame(kind, payload));
        } else {
            // Every chunk is a write of its own: the header leaves with the bytes queued
            // before it, not as a 5-byte write.
            encode_header(kind, payload.len(), &mut self.current);
            self.close_current();
            self.ready.push_back(Chunk::Bytes(payload));
        }
    }

    /// Queues frames from the front of `frames` while each is at most `max` bytes and
    /// fits under `limit` queued bytes (a frame always fits an empty queue, as with
    /// `send`); returns how many. Small payloads are copied next to their headers in the
    /// current chunk, large ones are queued by reference as in [`Self::push`].
    pub(crate) fn push_many(
        &mut self,
        kind: FrameKind,
        frames: &[Bytes],
        max: usize,
        limit: usize,
    ) -> usize {
        // One reservation for the run of small frames that fits and one for the chunk
        // slots of the rest, instead of one each.
        let min = self.zero_copy_min();
        let (mut want, mut small, mut large) = (0usize, 0usize, 0usize);
        let mut fit = 0usize;
        for frame in frames {
            let cost = HEADER_LEN + frame.len();
            if frame.len() > max || (self.len + want > 0 && self.len + want + cost > limit) {
                break;
            }
            want += cost;
            if frame.len() < min {
                small += cost;
            } else {
                large += 1;
            }
            fit += 1;
        }
        let Some(batch) = frames.get(..fit) else {
            return 0;
        };
        self.current.reserve(small);
        self.ready
            .reserve(large * if self.gathered { 1 } else { 2 });
        for frame in batch {
            if frame.len() < min {
                encode_header(kind, frame.len(), &mut self.current);
                self.current.extend_from_slice(frame);
                self.len += HEADER_LEN + frame.len();
            } else {
                self.push_by_reference(kind, frame.clone());
            }
        }
        fit
    }

    /// Queues an authenticated frame: `payload ‖ tag` under one header. The payload is
    /// treated as in [`Self::push`] (large ones are not copied); the tag follows it.
    pub(crate) fn push_tagged(&mut self, kind: FrameKind, payload: Bytes, tag: &[u8]) {
        let len = payload.len() + tag.len();
        self.current.reserve(HEADER_LEN + tag.len());
        encode_header(kind, len, &mut self.current);
        if payload.len() < self.zero_copy_min() {
            self.current.extend_from_slice(&payload);
        } else {
            self.close_current();
            self.ready.push_back(Chunk::Bytes(payload));
        }
        self.current.extend_from_slice(tag);
        self.len += HEADER_LEN + len;
    }

    /// Puts raw bytes (the preface) at the end of the queue.
    pub(crate) fn push_raw(&mut self, bytes: &[u8]) {
        self.current.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The queued bytes, oldest first, as the chunks they are held in.
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        let current = Some(&self.current[..]).filter(|c| !c.is_empty());
        self.ready
            .iter()
            .flat_map(Chunk::slices)
            .filter(|c| !c.is_empty())
            .chain(current)
    }

    /// The queued bytes, oldest first, as slices in `slices`: at most `limit` bytes (the
    /// last slice cut short if need be) and as many slices as `slices` holds. Unless they
    /// take everything queued, they end on a multiple of `align` bytes when they hold one
    /// (TLS: every record but the queue's last is full). Returns the slices filled and
    /// the bytes they hold. One pass, no iterator chain per slice: TLS gathers every
    /// record from these.
    pub(crate) fn fill_slices<'a>(
        &'a self,
        limit: usize,
        align: usize,
        slices: &mut [IoSlice<'a>],
    ) -> (usize, usize) {
        let align = align.max(1);
        let (mut count, mut total) = (0usize, 0usize);
        // The slice holding the last multiple of `align`, the piece it came from and the
        // bytes of it up to that multiple.
        let mut boundary: Option<(usize, &'a [u8], usize)> = None;
        // The next multiple of `align` (dividing only when one is reached).
        let mut mark = align;
        let current: [&'a [u8]; 2] = [&self.current, &[]];
        let pieces = self.ready.iter().map(Chunk::slices).chain([current]);
        'fill: for pair in pieces {
            for piece in pair {
                if piece.is_empty() {
                    continue;
                }
                let Some(slot) = slices.get_mut(count) else {
                    break 'fill;
                };
                let take = piece.len().min(limit - total);
                *slot = IoSlice::new(piece.get(..take).unwrap_or_default());
                let before = total;
                total += take;
                if total >= mark {
                    let last = total - total % align;
                    boundary = Some((count, piece, last - before));
                    mark = last + align;
                }
                count += 1;
                if total == limit {
                    break 'fill;
                }
            }
        }
        if total < self.len && total % align != 0 {
            if let Some((at, piece, keep)) = boundary {
                if let Some(slot) = slices.get_mut(at) {
                    *slot = IoSlice::new(piece.get(..keep).unwrap_or_default());
                    count = at + 1;
                    total -= total % align;
                }
            }
        }
        (count, total)
    }

    /// Drops the first `n` queued bytes (they were written), across chunks.
    pub(crate) fn advance(&mut self, n: usize) {
        let mut left = n.min(self.len);
        self.len -= left;
        while left > 0 {
            let Some(chunk) = self.ready.front_mut() else {
                self.current.advance(left.min(self.current.len()));
                break;
            };
            let len = chunk.len();
            if left < len {
                chunk.advance(left);
                break;
            }
            left -= len;
            self.ready.pop_front();
        }
        if self.len == 0 {
            self.release();
        }
    }

    /// Lets go of the buffers a burst grew, once everything queued was handed out: an
    /// idle link should not keep its largest burst's worth of memory.
    fn release(&mut self) {
        self.current = BytesMut::new();
        if self.ready.capacity() > KEEP_CHUNKS {
            self.ready = VecDeque::new();
        }
    }

    /// Drops everything queued (the link can no longer send).
    pub(crate) fn clear(&mut self) {
        self.ready.clear();
        self.current.clear();
        self.len = 0;
    }

    /// The next chunk to write, oldest first.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        let chunk = match self.ready.front_mut() {
            // A frame's header is a write of its own, then its payload.
            Some(Chunk::Frame {
                header,
                sent,
                payload,
            }) if usize::from(*sent) < HEADER_LEN => {
                let head =
                    Bytes::copy_from_slice(header.get(usize::from(*sent)..).unwrap_or_default());
                *sent = u8::try_from(HEADER_LEN).unwrap_or(u8::MAX);
                if payload.is_empty() {
                    self.ready.pop_front();
                }
                head
            }
            Some(_) => match self.ready.pop_front() {
                Some(Chunk::Bytes(b) | Chunk::Frame { payload: b, .. }) => b,
                None => return None,
            },
            // The chunk takes the whole buffer with it, spare capacity included, so no
            // allocation outlives the bytes handed out.
            None if !self.current.is_empty() => std::mem::take(&mut self.current).freeze(),
            None => return None,
        };
        self.len -= chunk.len();
        if self.len == 0 {
            self.release();
        }
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_coalesce_and_large_payloads_are_not_copied() {
        let mut q = SendQueue::default();
        q.push(FrameKind::Data, Bytes::from_static(b"ab"));
        q.push(FrameKind::Data, Bytes::from_static(b"cd"));
        let big = Bytes::from(vec![7u8; ZERO_COPY_MIN]);
        q.push(FrameKind::Data, big.clone());
        assert_eq!(q.len(), 2 * (HEADER_LEN + 2) + HEADER_LEN + ZERO_COPY_MIN);
        let first = q.pop().unwrap();
        assert_eq!(
            first.len(),
            2 * (HEADER_LEN + 2) + HEADER_LEN,
            "two frames and a header in one write"
        );
        let second = q.pop().unwrap();
        assert_eq!(
            second.as_ptr(),
            big.as_ptr(),
            "the big payload is the caller's own buffer"
        );
        assert!(q.pop().is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn chunks_and_advance_span_the_whole_queue_in_order() {
        for gathered in [false, true] {
            let mut q = SendQueue::default();
            if gathered {
                q.gather();
            }
            q.push(FrameKind::Data, Bytes::from_static(b"ab"));
            let big = Bytes::from(vec![7u8; ZERO_COPY_MIN]);
            q.push(FrameKind::Data, big);
            q.push(FrameKind::Data, Bytes::from_static(b"cd"));
            let all: Vec<u8> = q.chunks().flatten().copied().collect();
            assert_eq!(all.len(), q.len());
            assert_eq!(all.len(), 3 * HEADER_LEN + 4 + ZERO_COPY_MIN);
            assert_eq!(&all[HEADER_LEN..HEADER_LEN + 2], b"ab");
            assert_eq!(&all[all.len() - 2..], b"cd");
            let layout: &[usize] = if gathered {
                // Small frame, the large frame's inline header, its payload, tail.
                &[HEADER_LEN + 2, HEADER_LEN, ZERO_COPY_MIN, HEADER_LEN + 2]
            } else {
                // The header leaves with the small frame before it.
                &[2 * HEADER_LEN + 2, ZERO_COPY_MIN, HEADER_LEN + 2]
            };
            assert_eq!(q.chunks().map(<[u8]>::len).collect::<Vec<_>>(), layout);

            // Advances that end inside the large frame's header, then in its payload.
            let mut at = 0;
            for step in [HEADER_LEN + 2 + 3, 1, 100] {
                q.advance(step);
                at += step;
                let rest: Vec<u8> = q.chunks().flatten().copied().collect();
                assert_eq!(rest, all[at..], "after {at} bytes (gathered: {gathered})");
                assert_eq!(q.len(), all.len() - at);
            }
            // Past the end: everything is gone, nothing panics.
            q.advance(usize::MAX);
            assert!(q.is_empty() && q.chunks().next().is_none());
        }
    }

    /// The bytes `fill_slices` hands out, and how many slices hold them.
    fn filled(q: &SendQueue, limit: usize, align: usize, slots: usize) -> (Vec<u8>, usize) {
        let mut slices = vec![IoSlice::new(&[]); slots];
        let (count, total) = q.fill_slices(limit, align, &mut slices);
        let bytes: Vec<u8> = slices[..count]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(bytes.len(), total);
        (bytes, count)
    }

    #[test]
    fn filled_slices_stop_at_the_limit_and_end_on_a_multiple_of_the_alignment() {
        let mut q = SendQueue::default();
        q.gather();
        // Three by-reference frames (705 bytes each) and a small one copied behind them.
        for i in 0..3u8 {
            q.push(FrameKind::Data, Bytes::from(vec![i; 700]));
        }
        q.push(FrameKind::Data, Bytes::from_static(b"tail"));
        let all: Vec<u8> = q.chunks().flatten().copied().collect();
        assert_eq!(all.len(), 3 * 705 + HEADER_LEN + 4);

        // The limit cuts the last slice short.
        let (bytes, count) = filled(&q, 2000, 1, 64);
        assert_eq!((&bytes[..], count), (&all[..2000], 6));
        // Not everything is taken: back to the last multiple of the alignment, which
        // falls inside the second payload.
        let (bytes, count) = filled(&q, 2000, 1000, 64);
        assert_eq!((&bytes[..], count), (&all[..2000], 6), "2000 is a multiple");
        let (bytes, count) = filled(&q, 1900, 1000, 64);
        assert_eq!((&bytes[..], count), (&all[..1000], 4));
        // Everything fits: taken whole, however it ends.
        let (bytes, count) = filled(&q, 1 << 20, 1000, 64);
        assert_eq!((&bytes[..], count), (&all[..], 7));
        // Too few slots to reach a multiple: what fits, uncut.
        let (bytes, count) = filled(&q, 1 << 20, 1000, 3);
        assert_eq!((&bytes[..], count), (&all[..710], 3));
        // Enough slots to pass one multiple but not the limit: cut back to it.
        let (bytes, count) = filled(&q, 1 << 20, 1000, 5);
        assert_eq!((&bytes[..], count), (&all[..1000], 4));

        // After an advance that ends inside a header, the rest of it comes first.
        q.advance(705 + 2);
        let (bytes, _) = filled(&q, 1 << 20, 1, 64);
        assert_eq!(bytes, all[705 + 2..]);
    }

    #[test]
    fn gathered_queues_take_mid_sized_payloads_by_reference() {
        let payload = Bytes::from(vec![3u8; ZERO_COPY_MIN_GATHERED]);
        let smaller = Bytes::from(vec![4u8; ZERO_COPY_MIN_GATHERED - 1]);
        let batch = [payload.clone(), smaller.clone(), payload.clone()];

        let mut copied = SendQueue::default();
        assert_eq!(
            copied.push_many(FrameKind::Data, &batch, usize::MAX, usize::MAX),
            3
        );
        assert_eq!(copied.chunks().count(), 1, "all copied into one chunk");

        let mut gathered = SendQueue::default();
        gathered.gather();
        assert_eq!(
            gathered.push_many(FrameKind::Data, &batch, usize::MAX, usize::MAX),
            3
        );
        let chunks: Vec<&[u8]> = gathered.chunks().collect();
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [
                HEADER_LEN,
                ZERO_COPY_MIN_GATHERED,
                HEADER_LEN + ZERO_COPY_MIN_GATHERED - 1,
                HEADER_LEN,
                ZERO_COPY_MIN_GATHERED
            ]
        );
        assert_eq!(chunks[1].as_ptr(), payload.as_ptr(), "not copied");
        assert_eq!(chunks[4].as_ptr(), payload.as_ptr(), "not copied");
        // The same bytes either way.
        let a: Vec<u8> = copied.chunks().flatten().copied().collect();
        let b: Vec<u8> = gathered.chunks().flatten().copied().collect();
        assert_eq!(a, b);
        assert_eq!(gathered.len(), a.len());
        // Popped one write at a time, still the same stream.
        let mut popped = Vec::new();
        while let Some(chunk) = gathered.pop() {
            popped.extend_from_slice(&chunk);
        }
        assert_eq!(popped, a);
        assert!(gathered.is_empty());
    }

    #[test]
    fn tagged_frames_keep_large_payloads_uncopied_and_the_tag_after_them() {
        let mut q = SendQueue::default();
        q.push_tagged(FrameKind::Data, Bytes::from_static(b"ab"), &[9; 16]);
        let big = Bytes::from(vec![7u8; ZERO_COPY_MIN]);
        q.push_tagged(FrameKind::Data, big.clone(), &[8; 16]);
        let all: Vec<u8> = q.chunks().flatten().copied().collect();
        assert_eq!(all.len(), q.len());
        assert_eq!(
            &all[..HEADER_LEN + 2 + 16],
            &[&[0x10, 0, 0, 0, 18][..], b"ab", &[9; 16]].concat()[..]
        );
        assert_eq!(&all[all.len() - 16..], &[8; 16]);
        let _ = q.pop();
        assert_eq!(
            q.pop().unwrap().as_ptr(),
            big.as_ptr(),
            "payload not copied"
        );
        assert_eq!(&q.pop().unwrap()[..], &[8; 16]);
        assert!(q.is_empty());
    }

    #[test]
    fn an_emptied_queue_holds_no_buffer() {
        let mut q = SendQueue::default();
        for _ in 0..1000 {
            q.push(FrameKind::Data, Bytes::from_static(&[1; 64]));
        }
        assert!(q.current.capacity() >= 1000 * (HEADER_LEN + 64));
        // Written in part: the buffer stays.
        q.advance(HEADER_LEN);
        assert_eq!(q.chunks().next().map(<[u8]>::len), Some(q.len()));
        assert!(q.current.capacity() > 0);
        let rest = q.len();
        q.advance(rest);
        assert!(q.is_empty());
        assert_eq!(
            q.current.capacity(),
            0,
            "the emptied queue let go of its buffer"
        );

        // Handed out whole (no TLS): the chunk owns the buffer, the queue keeps nothing.
        q.push(FrameKind::Data, Bytes::from_static(&[1; 64]));
        let chunk = q.pop().unwrap();
        assert_eq!(chunk.len(), HEADER_LEN + 64);
        assert_eq!(q.current.capacity(), 0);
    }
}
