//! What a connection has to tell the application, queued until it asks.
//!
//! Frames are the hot path: a run of DATA frames split off the receive buffer together
//! is queued as one [`FrameRun`] (one `Bytes` for all of them), a frame decoded on its
//! own as a `Bytes` and nothing more, and the rare large events (joined, closed) are
//! boxed. The queue also counts what its frames cost the receive window.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::close::CloseReason;
use crate::error::ConnectionError;
use crate::frame::HEADER_LEN;
use crate::frame_run::FrameRun;
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
    /// DATA frames split off the receive buffer together (the joined link's fast path).
    Run(FrameRun),
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

    /// Queues a run of whole DATA frames (never authenticated: the fast path is only
    /// taken without frame authentication).
    pub(crate) fn push_run(&mut self, run: FrameRun) {
        if run.is_empty() {
            return;
        }
        self.frame_bytes += run.wire_len();
        self.queue.push_back(Queued::Run(run));
    }

    pub(crate) fn push(&mut self, event: Event) {
        match event {
            Event::Frame(payload) => self.push_frame(payload),
            other => self.queue.push_back(Queued::Other(Box::new(other))),
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Event> {
        let event = match self.queue.front_mut()? {
            Queued::Run(run) => {
                let payload = run.pop_front();
                if run.is_empty() {
                    self.queue.pop_front();
                }
                let payload = payload?;
                self.release(HEADER_LEN + payload.len());
                Event::Frame(payload)
            }
            Queued::Frame(_) | Queued::Other(_) => match self.queue.pop_front()? {
                Queued::Frame(payload) => {
                    self.release(HEADER_LEN + self.tag_len + payload.len());
                    Event::Frame(payload)
                }
                Queued::Other(event) => *event,
                Queued::Run(_) => return None,
            },
        };
        self.shrink_if_empty();
        Some(event)
    }

    /// The frames at the front of the queue as one run: a queued run whole, or a frame
    /// queued on its own as a run of one. `None` when the front is another event.
    pub(crate) fn pop_run(&mut self) -> Option<FrameRun> {
        let run = match self.queue.front()? {
            Queued::Other(_) => return None,
            Queued::Run(_) | Queued::Frame(_) => match self.queue.pop_front()? {
                Queued::Run(run) => {
                    self.release(run.wire_len());
                    run
                }
                Queued::Frame(payload) => {
                    self.release(HEADER_LEN + self.tag_len + payload.len());
                    FrameRun::one(payload)
                }
                Queued::Other(_) => return None,
            },
        };
        self.shrink_if_empty();
        Some(run)
    }

    /// Moves the frames at the front of the queue (up to the first other event) into
    /// `out`, each its own `Bytes`; returns how many.
    pub(crate) fn pop_frames(&mut self, out: &mut Vec<Bytes>) -> usize {
        let before = out.len();
        while let Some(front) = self.queue.front() {
            match front {
                Queued::Other(_) => break,
                Queued::Frame(_) => {
                    if let Some(Queued::Frame(payload)) = self.queue.pop_front() {
                        self.release(HEADER_LEN + self.tag_len + payload.len());
                        out.push(payload);
                    }
                }
                Queued::Run(run) => {
                    out.reserve(run.len());
                    out.extend(run.frames());
                    let cost = run.wire_len();
                    self.queue.pop_front();
                    self.release(cost);
                }
            }
        }
        self.shrink_if_empty();
        out.len() - before
    }

    /// `bytes` of queued frames were taken.
    fn release(&mut self, bytes: usize) {
        self.frame_bytes = self.frame_bytes.saturating_sub(bytes);
    }

    fn shrink_if_empty(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > KEEP_SLOTS {
            self.queue.shrink_to(KEEP_SLOTS);
        }
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
