//! What a connection has to tell the application, queued until it asks.
//!
//! Frames are the hot path: one is queued per DATA frame received, so a queued frame is
//! a `Bytes` and nothing more, and the rare large events (joined, closed) are boxed. The
//! queue also counts what its frames cost the receive window.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::close::CloseReason;
use crate::error::ConnectionError;
use crate::frame::HEADER_LEN;
use crate::join::PeerInfo;

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The join completed: the peer proved itself and frames may flow.
    Joined(PeerInfo),
    /// A re-join completed (PROTOCOL.md §5.8): the link now rests on the secret in
    /// `key_id`. Frames flow on, none lost.
    Rejoined(PeerInfo),
    /// An application frame from the peer, in order. Its bytes were not copied out of
    /// the receive buffer.
    Frame(Bytes),
    /// The link is over. No event follows this one.
    Closed(CloseCause),
}

/// Why a link ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// This node called [`Connection::close`].
    Local(CloseReason),
    /// The peer sent a CLOSE frame.
    Peer(CloseReason),
    /// An error ended the link (the peer was told, where it can still listen).
    Error(ConnectionError),
}

impl std::fmt::Display for CloseCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(r) => write!(f, "closed by this node: {r}"),
            Self::Peer(r) => write!(f, "closed by the peer: {r}"),
            Self::Error(e) => e.fmt(f),
        }
    }
}

/// Slots an empty queue keeps; a burst that grew it beyond this gives the rest back.
const KEEP_SLOTS: usize = 8;

#[derive(Debug)]
enum Queued {
    Frame(Bytes),
    Other(Box<Event>),
}

#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    queue: VecDeque<Queued>,
    /// Wire bytes (header and payload) of the queued frames. Counting the header keeps
    /// empty frames from queuing events without limit.
    frame_bytes: usize,
    /// Bytes each frame carried beyond its payload and header: the authentication tag,
    /// still held in the receive buffer the payload shares (PROTOCOL.md §5.7).
    tag_len: usize,
}

impl EventQueue {
    pub(crate) fn push_frame(&mut self, payload: Bytes) {
        self.frame_bytes += HEADER_LEN + self.tag_len + payload.len();
        self.queue.push_back(Queued::Frame(payload));
    }

    pub(crate) fn push(&mut self, event: Event) {
        match event {
            Event::Frame(payload) => self.push_frame(payload),
            other => self.queue.push_back(Queued::Other(Box::new(other))),
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        let event = match self.queue.pop_front()? {
            Queued::Frame(payload) => {
                let cost = HEADER_LEN + self.tag_len + payload.len();
                self.frame_bytes = self.frame_bytes.saturating_sub(cost);
                Event::Frame(payload)
            }
            Queued::Other(event) => *event,
        };
        if self.queue.is_empty() && self.queue.capacity() > KEEP_SLOTS {
            self.queue.shrink_to(KEEP_SLOTS);
        }
        Some(event)
    }

    /// Room for `n` more entries in one step (a run of frames about to be queued).
    pub(crate) fn reserve(&mut self, n: usize) {
        self.queue.reserve(n);
    }

    /// Moves the frames at the front of the queue (up to the first other event) into
    /// `out`; returns how many.
    pub(crate) fn pop_frames(&mut self, out: &mut Vec<Bytes>) -> usize {
        let n = self
            .queue
            .iter()
            .position(|q| !matches!(q, Queued::Frame(_)))
            .unwrap_or(self.queue.len());
        out.reserve(n);
        let mut bytes = 0;
        for queued in self.queue.drain(..n) {
            if let Queued::Frame(payload) = queued {
                bytes += payload.len();
                out.push(payload);
            }
        }
        let cost = bytes + n * (HEADER_LEN + self.tag_len);
        self.frame_bytes = self.frame_bytes.saturating_sub(cost);
        if self.queue.is_empty() && self.queue.capacity() > KEEP_SLOTS {
            self.queue.shrink_to(KEEP_SLOTS);
        }
        n
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// From now on every frame also cost `tag_len` bytes on the wire (set before any
    /// frame is queued, so every queued frame counts the same).
    pub(crate) fn set_tag_len(&mut self, tag_len: usize) {
        self.tag_len = tag_len;
    }

    /// What the queued frames cost the receive window.
    pub(crate) fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_their_header_and_come_back_in_order() {
        let mut q = EventQueue::default();
        q.push_frame(Bytes::from_static(b"abc"));
        q.push(Event::Frame(Bytes::new()));
        q.push(Event::Closed(CloseCause::Local(CloseReason::default())));
        assert_eq!(q.frame_bytes(), 2 * HEADER_LEN + 3);
        assert_eq!(q.pop(), Some(Event::Frame(Bytes::from_static(b"abc"))));
        assert_eq!(q.frame_bytes(), HEADER_LEN);
        assert_eq!(q.pop(), Some(Event::Frame(Bytes::new())));
        assert_eq!(q.frame_bytes(), 0);
        assert!(matches!(q.pop(), Some(Event::Closed(_))));
        assert!(q.pop().is_none() && q.is_empty());
    }

    #[test]
    fn an_emptied_queue_gives_back_what_a_burst_grew() {
        let mut q = EventQueue::default();
        for _ in 0..1000 {
            q.push_frame(Bytes::from_static(b"x"));
        }
        assert!(q.queue.capacity() >= 1000);
        while q.pop().is_some() {}
        assert!(
            q.queue.capacity() <= 2 * KEEP_SLOTS,
            "{}",
            q.queue.capacity()
        );
    }
}
