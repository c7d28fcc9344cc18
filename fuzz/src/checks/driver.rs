//! One connection driven the way an IO adapter drives it (read bytes are offered until
//! taken, writes are flushed after every step, events are polled eagerly or only when
//! asked), with every answer checked on the way.

use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_core::frame::{HEADER_LEN, MAX_CONTROL_PAYLOAD};
use palisade_core::preface::PREFACE_LEN;
use palisade_core::{CloseCause, CloseCode, CloseReason, Connection, ConnectionError, Event, Side};

use super::fixtures::{self, MAX_FRAME};
use super::wire::{self, Report};

/// The largest frame on the wire, header and (plaintext with the secret) tag included.
const ONE_FRAME: usize = HEADER_LEN
    + palisade_core::frame_auth::TAG_LEN
    + if MAX_FRAME > MAX_CONTROL_PAYLOAD {
        MAX_FRAME
    } else {
        MAX_CONTROL_PAYLOAD
    };

/// A connection and what its application saw of it.
#[derive(Debug)]
pub struct Driven {
    /// Names the connection in failure messages.
    pub who: &'static str,
    /// Its side.
    pub side: Side,
    /// Whether TLS is on.
    pub tls: bool,
    /// The connection.
    pub conn: Connection,
    /// The application polls events only when told to (else after every step).
    pub lazy: bool,
    /// The connection's `recv_buffer_limit`.
    pub recv_limit: usize,
    /// Bytes the socket read that the connection has not taken yet.
    pub backlog: Vec<u8>,
    /// Every event polled.
    pub report: Report,
    /// Everything `poll_transmit` returned.
    pub out: Vec<u8>,
    /// The payloads `send` accepted, in order.
    pub sent: Vec<Bytes>,
    /// Socket bytes taken so far: the offset of `backlog` in the incoming stream.
    pub consumed: usize,
    /// For each frame in `report.frames`, and for the join: `consumed` at the poll
    /// before the one that returned it. The event came from a read that started there
    /// or later.
    pub frame_after: Vec<usize>,
    /// As `frame_after`, for the `Joined` event.
    pub joined_after: Option<usize>,
    consumed_at_poll: usize,
    /// Bytes taken while open since the last poll.
    taken_since_poll: usize,
    /// Whether the polled events include the end of the join (`Joined` or `Closed`):
    /// until then the preface and one join message are taken and dropped unreported.
    past_join: bool,
    /// Polls so far: every other one takes frames as runs (`poll_frame_run`) first.
    polls: usize,
}

impl Driven {
    /// Wraps a fresh connection and flushes its first output.
    pub fn new(conn: Connection, tls: bool, keyed: bool, lazy: bool, recv_limit: usize) -> Self {
        let side = conn.side();
        let mut driven = Self {
            who: match side {
                Side::Initiator => "initiator",
                Side::Acceptor => "acceptor",
            },
            side,
            tls,
            conn,
            lazy,
            recv_limit,
            backlog: Vec::new(),
            report: Report::new(keyed),
            out: Vec::new(),
            sent: Vec::new(),
            consumed: 0,
            frame_after: Vec::new(),
            joined_after: None,
            consumed_at_poll: 0,
            polls: 0,
            taken_since_poll: 0,
            past_join: false,
        };
        driven.flush();
        driven.poll();
        driven
    }

    /// Takes everything `poll_transmit` has; returns how many bytes.
    pub fn flush(&mut self) -> usize {
        let before = self.out.len();
        while let Some(chunk) = self.conn.poll_transmit() {
            assert!(!chunk.is_empty(), "{}: empty transmit", self.who);
            self.out.extend_from_slice(&chunk);
        }
        self.out.len() - before
    }

    /// Polls every event, checking what was held unpolled; returns how many.
    pub fn poll(&mut self) -> usize {
        let who = self.who;
        let (mut held, mut count) = (0usize, 0usize);
        // Plaintext with the secret: each frame's tag stays in the receive buffer too.
        let tag = if self.conn.peer().is_some_and(wire::authenticated) {
            palisade_core::frame_auth::TAG_LEN
        } else {
            0
        };
        self.polls += 1;
        let mut events = Vec::new();
        loop {
            if self.polls % 2 == 0 {
                while let Some(run) = self.conn.poll_frame_run() {
                    assert!(
                        !run.is_empty() && run.payloads().count() == run.len(),
                        "{who}: a run's payloads disagree with its length"
                    );
                    events.extend(run.frames().map(Event::Frame));
                }
            }
            match self.conn.poll_event() {
                Some(event) => events.push(event),
                None => break,
            }
        }
        for event in events {
            match &event {
                Event::Frame(payload) => {
                    held += HEADER_LEN + tag + payload.len();
                    self.frame_after.push(self.consumed_at_poll);
                }
                Event::Joined(_) => self.joined_after = Some(self.consumed_at_poll),
                Event::Rejoined(_) | Event::Closed(_) => {}
            }
            self.report.record(who, event);
            count += 1;
        }
        // Frames waiting to be polled are bytes received and not yet taken: the window
        // plus one frame (and what one TLS read decrypts past it).
        let tls_overshoot = if self.tls { 64 * 1024 } else { 0 };
        let max_held = self.recv_limit + HEADER_LEN + tag + MAX_FRAME + tls_overshoot;
        assert!(
            held <= max_held,
            "{who}: {held} bytes of frames were held unpolled (bound {max_held})"
        );
        if !self.tls {
            // Plaintext: every byte taken is buffered, held in an event, or was the
            // preface or the join message.
            let mut bound = self.recv_limit + ONE_FRAME;
            if !self.past_join {
                bound += PREFACE_LEN + ONE_FRAME;
            }
            let taken = self.taken_since_poll;
            assert!(
                taken <= bound,
                "{who}: took {taken} bytes between polls (bound {bound})"
            );
        }
        self.taken_since_poll = 0;
        self.consumed_at_poll = self.consumed;
        self.past_join = self.report.joined.is_some() || self.report.closed.is_some();
        wire::check_state(who, &self.conn, &self.report);
        count
    }

    /// Offers the backlog until the connection stops taking it (polling in between
    /// unless lazy); returns how many bytes it took.
    pub fn offer(&mut self, now: Instant) -> usize {
        let mut total = 0;
        while !self.backlog.is_empty() {
            let open = !self.conn.is_closed();
            let n = self.conn.handle_input(&self.backlog, now);
            let who = self.who;
            assert!(n <= self.backlog.len(), "{who}: took more than offered");
            if !open {
                assert_eq!(n, self.backlog.len(), "{who}: kept input after the close");
            } else if !self.tls {
                let room = self.recv_limit.max(ONE_FRAME);
                assert!(n <= room, "{who}: took {n} bytes at once (room {room})");
                self.taken_since_poll += n;
            }
            self.backlog.drain(..n);
            self.consumed += n;
            total += n;
            self.flush();
            if !self.lazy {
                self.poll();
            }
            if n == 0 {
                break;
            }
        }
        total
    }

    /// The application polls, then the backlog is offered again (the window reopened).
    pub fn poll_and_offer(&mut self, now: Instant) -> usize {
        self.poll() + self.offer(now)
    }

    /// The application sends a `len`-byte frame.
    pub fn send(&mut self, len: u16) {
        let tag = self.sent.len() as u8 ^ self.side as u8;
        let payload = Bytes::from(fixtures::payload(usize::from(len), tag));
        if wire::send(self.who, &mut self.conn, payload.clone()) {
            self.sent.push(payload);
        }
        self.flush();
    }

    /// The application closes with `code`.
    pub fn close(&mut self, code: u16) {
        let was_closed = self.conn.is_closed();
        let reason = CloseReason::new(CloseCode::from_u16(code), "fuzz");
        self.conn.close(reason.clone());
        assert!(self.conn.is_closed(), "{}: open after close", self.who);
        if !was_closed {
            let cause = self.conn.close_cause();
            assert_eq!(cause, Some(&CloseCause::Local(reason)), "{}", self.who);
        }
        self.flush();
    }

    /// The stream from the peer ended.
    pub fn eof(&mut self) {
        self.conn.handle_eof();
        assert!(self.conn.is_closed(), "{}: open after EOF", self.who);
        self.flush();
    }

    /// Time is `now` (the connection started at `start`): the handshake deadline is
    /// `start + handshake_timeout` (or, for an acceptor that has had no byte yet,
    /// `start + first_bytes_timeout`) and, once passed, closes an unjoined link. A
    /// joined TLS link's one deadline is the end of its peer's certificate
    /// (`close_on_peer_expiry`), years after the fixtures' wall clock.
    pub fn timeout(&mut self, start: Instant, now: Instant) {
        let deadline = self.conn.poll_timeout();
        let joined = self.conn.is_joined();
        if let Some(d) = deadline {
            let config = self.conn.config();
            let join = start.checked_add(config.handshake_timeout);
            if joined {
                assert!(
                    self.tls && config.close_on_peer_expiry,
                    "{}: a joined link's deadline without a peer certificate",
                    self.who
                );
                assert!(
                    join.is_some_and(|j| d > j),
                    "{}: a peer certificate's end before the handshake deadline",
                    self.who
                );
            } else {
                // The join deadline, or (an acceptor that has had no byte yet) the
                // earlier first-bytes deadline.
                let first =
                    start.checked_add(config.first_bytes_timeout.min(config.handshake_timeout));
                assert!(
                    Some(d) == join || Some(d) == first,
                    "{}: deadline",
                    self.who
                );
            }
        }
        self.conn.handle_timeout(now);
        if joined && deadline.is_some_and(|d| now >= d) {
            assert!(
                matches!(
                    self.conn.close_cause(),
                    Some(CloseCause::Local(r)) if r.code == CloseCode::CertificateExpired
                ),
                "{}: the peer certificate's end passed and the cause is {:?}",
                self.who,
                self.conn.close_cause()
            );
        } else if deadline.is_some_and(|d| now >= d) {
            assert!(
                matches!(
                    self.conn.close_cause(),
                    Some(CloseCause::Error(
                        ConnectionError::HandshakeTimeout { .. }
                            | ConnectionError::FirstBytesTimeout { .. }
                    ))
                ),
                "{}: the deadline passed and the cause is {:?}",
                self.who,
                self.conn.close_cause()
            );
        }
        self.flush();
    }

    /// After the close: input is dropped, commands refused, nothing more reported, and
    /// once flushed nothing is owed to the peer.
    pub fn check_closed_for_good(&mut self, now: Instant) {
        let who = self.who;
        let cause = self.conn.close_cause().cloned();
        assert!(cause.is_some(), "{who}: not closed");
        assert_eq!(self.conn.handle_input(b"late", now), 4);
        let refused = self.conn.send(Bytes::from_static(b"late"));
        assert_eq!(refused, Err(palisade_core::SendError::Closed), "{who}");
        self.conn.close(CloseReason::normal());
        self.conn.handle_timeout(now + Duration::from_secs(3600));
        self.flush();
        assert_eq!(
            self.conn.poll_event(),
            None,
            "{who}: an event after the close"
        );
        assert_eq!(
            self.conn.close_cause().cloned(),
            cause,
            "{who}: the cause changed"
        );
        assert!(self.conn.is_drained(), "{who}: still owes the peer bytes");
        assert_eq!(
            self.conn.poll_transmit(),
            None,
            "{who}: drained but writing"
        );
    }
}
