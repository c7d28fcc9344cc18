//! The socket-bound bytes a link's writer holds (chunks the core handed out), written
//! with vectored writes: the slices are gathered on the stack, so a write allocates
//! nothing, and what a write took is dropped from the front. The async driver and the
//! blocking writer both write this way.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Most chunks handed to one vectored write.
pub(crate) const MAX_WRITE_SLICES: usize = 64;

/// Slices for one vectored write of `out`'s front chunks.
pub(crate) struct Gathered<'a> {
    slices: [IoSlice<'a>; MAX_WRITE_SLICES],
    count: usize,
}

impl<'a> Gathered<'a> {
    /// The first chunks of `out` (at most [`MAX_WRITE_SLICES`]).
    pub(crate) fn front(out: &'a VecDeque<Bytes>) -> Self {
        let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
        let mut count = 0;
        for (slot, chunk) in slices.iter_mut().zip(out) {
            *slot = IoSlice::new(chunk);
            count += 1;
        }
        Self { slices, count }
    }

    /// The slices to write.
    pub(crate) fn slices(&self) -> &[IoSlice<'a>] {
        self.slices.get(..self.count).unwrap_or_default()
    }
}

/// Drops the first `n` bytes of `out` (a write took them), across chunks.
pub(crate) fn consume(out: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = out.front_mut() else {
            break;
        };
        let take = n.min(front.len());
        front.advance(take);
        n -= take;
        if front.is_empty() {
            out.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathered_slices_are_the_front_chunks_and_consume_spans_them() {
        let mut out: VecDeque<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; 3])).collect();
        let gathered = Gathered::front(&out);
        assert_eq!(gathered.slices().len(), MAX_WRITE_SLICES);
        assert_eq!(&*gathered.slices()[1], &[1, 1, 1]);
        // A write that ends inside a chunk leaves the rest of it at the front.
        consume(&mut out, 3 * 2 + 1);
        assert_eq!(out.len(), 98);
        assert_eq!(&out[0][..], &[2, 2]);
        consume(&mut out, usize::MAX);
        assert!(out.is_empty());
        assert!(Gathered::front(&out).slices().is_empty());
    }
}
