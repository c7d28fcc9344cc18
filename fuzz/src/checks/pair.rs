//! `pair_ops`: two real connections on a simulated link, driven by an arbitrary sequence
//! of operations: send, deliver a chunk, let time pass, close, flip a byte in transit,
//! poll, drop a socket, pump everything. Then the link settles (everything in flight is
//! delivered, timers fire) and the invariants are checked:
//!
//! - frames arrive in order and unaltered: what a side received is a prefix of what
//!   its peer sent, up to the first tampered byte (plaintext without the secret) or
//!   always (TLS, whose records are authenticated; plaintext with the secret, whose
//!   frames after the join are, PROTOCOL.md §5.7);
//! - never a frame, nor a join, after a tampered byte (TLS), nor a join through a
//!   tampered preface or join message, nor a frame holding or after a tampered byte
//!   (plaintext with the secret);
//! - each side's output is well-formed and ends as the protocol says for its close;
//! - both sides end agreeing: both closed, or both joined and open; without tampering
//!   or dropped sockets, every frame sent arrives and a CLOSE is reported by the peer as
//!   sent.
//!
//! Input: one settings byte (bit 0: TLS; bit 1: no shared secret; bits 2-3:
//! `recv_buffer_limit` from [`RECV_LIMITS`]; bit 4: the applications poll events only
//! on [`Op::Poll`]), then operations ([`Op`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use palisade_core::{CloseCause, ConnectionError, Side};

use super::driver::Driven;
use super::fixtures::{self, idx, other, RECV_LIMITS};
use super::input::{put_u16, Input};
use super::wire::{self, Report};

const SIDES: [Side; 2] = [Side::Initiator, Side::Acceptor];

/// The settings byte.
pub fn settings(tls: bool, keyed: bool, recv_limit: usize, lazy: bool) -> u8 {
    u8::from(tls) | u8::from(!keyed) << 1 | (recv_limit.min(3) as u8) << 2 | u8::from(lazy) << 4
}

/// One operation. The opcode's low 3 bits are the operation, bit 3 the side, bits 4-7
/// a small argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The application on `from` sends a frame of `len` bytes (opcode 0, u16 length).
    Send {
        /// The sender.
        from: Side,
        /// Payload length.
        len: u16,
    },
    /// Up to `max` bytes in flight arrive at `to` (opcode 1, u16; 0 meaning all).
    Deliver {
        /// The receiver.
        to: Side,
        /// Bytes at most.
        max: u16,
    },
    /// Time passes, timers fire (opcode 2, u16 × (argument + 1) ms).
    Advance(u64),
    /// The application on `side` closes with `code` (opcode 3, u16).
    Close {
        /// Who closes.
        side: Side,
        /// The close code.
        code: u16,
    },
    /// A byte in flight to `to` is XORed with `mask` (opcode 4, u16 offset into what
    /// is in flight, u8 mask; 0 read as 1).
    Flip {
        /// The direction: bytes on their way to this side.
        to: Side,
        /// Offset into the bytes in flight (modulo their length).
        offset: u16,
        /// Bits to flip.
        mask: u8,
    },
    /// The application on `side` polls its events (opcode 5).
    Poll(Side),
    /// The socket of `side` is dropped: it reads and writes nothing more, its peer
    /// reads what was in flight, then the end of the stream (opcode 6).
    Abort(Side),
    /// Everything written is delivered, `rounds` times over (opcode 7, argument + 1).
    Pump(u8),
}

fn side_bit(side: Side) -> u8 {
    (idx(side) as u8) << 3
}

impl Op {
    /// Reads the next operation.
    pub fn read(input: &mut Input<'_>) -> Self {
        let code = input.u8();
        let side = if code & 8 == 0 {
            Side::Initiator
        } else {
            Side::Acceptor
        };
        let arg = code >> 4;
        match code & 7 {
            0 => Self::Send {
                from: side,
                len: input.u16(),
            },
            1 => Self::Deliver {
                to: side,
                max: input.u16(),
            },
            2 => Self::Advance(u64::from(input.u16()) * (u64::from(arg) + 1)),
            3 => Self::Close {
                side,
                code: input.u16(),
            },
            4 => Self::Flip {
                to: side,
                offset: input.u16(),
                mask: input.u8().max(1),
            },
            5 => Self::Poll(side),
            6 => Self::Abort(side),
            _ => Self::Pump(arg + 1),
        }
    }

    /// Appends the operation as [`Op::read`] reads it (for writing seeds).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Send { from, len } => {
                out.push(side_bit(from));
                put_u16(out, len);
            }
            Self::Deliver { to, max } => {
                out.push(1 | side_bit(to));
                put_u16(out, max);
            }
            Self::Advance(ms) => {
                let arg = (ms / 65_536).min(15) as u8;
                out.push(2 | arg << 4);
                put_u16(out, (ms / (u64::from(arg) + 1)).min(65_535) as u16);
            }
            Self::Close { side, code } => {
                out.push(3 | side_bit(side));
                put_u16(out, code);
            }
            Self::Flip { to, offset, mask } => {
                out.push(4 | side_bit(to));
                put_u16(out, offset);
                out.push(mask);
            }
            Self::Poll(side) => out.push(5 | side_bit(side)),
            Self::Abort(side) => out.push(6 | side_bit(side)),
            Self::Pump(rounds) => out.push(7 | (rounds.clamp(1, 16) - 1) << 4),
        }
    }
}

/// A whole input: settings, then operations.
pub fn encode(tls: bool, keyed: bool, recv_limit: usize, lazy: bool, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![settings(tls, keyed, recv_limit, lazy)];
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// The two connections and the link between them.
struct Sim {
    ends: [Driven; 2],
    tls: bool,
    keyed: bool,
    start: Instant,
    now: Instant,
    /// How much of each side's output has been put on the link.
    on_link: [usize; 2],
    /// Bytes on their way to each side (possibly tampered with).
    in_flight: [VecDeque<u8>; 2],
    /// Bytes delivered to each side so far: the stream offset of `in_flight`'s front.
    delivered: [usize; 2],
    /// The stream offsets at which each side received a byte other than the one its
    /// peer wrote.
    flipped: [Vec<usize>; 2],
    /// The side's socket was dropped.
    aborted: [bool; 2],
    /// The side writes nothing more (drained after its close, or dropped).
    shut: [bool; 2],
    /// The side was told its stream ended.
    eof: [bool; 2],
}

impl Sim {
    fn end(&mut self, side: Side) -> &mut Driven {
        &mut self.ends[idx(side)]
    }

    /// Moves what `side` writes onto the link; a drained side shuts its socket.
    fn transmit(&mut self, side: Side) -> bool {
        let i = idx(side);
        self.ends[i].flush();
        let out = &self.ends[i].out;
        let wrote = self.on_link[i] < out.len();
        if !self.aborted[i] {
            self.in_flight[idx(other(side))].extend(&out[self.on_link[i]..]);
        }
        self.on_link[i] = out.len();
        let shuts = !self.shut[i] && self.ends[i].conn.is_drained();
        if shuts {
            self.shut[i] = true;
        }
        wrote || shuts
    }

    /// Up to `max` bytes in flight arrive at `to`; once all has arrived from a peer that
    /// shut its socket, the end of the stream does too.
    fn deliver(&mut self, to: Side, max: usize) -> bool {
        let i = idx(to);
        if self.aborted[i] {
            self.in_flight[i].clear();
            return false;
        }
        let n = max.min(self.in_flight[i].len());
        let now = self.now;
        let at = self.delivered[i];
        let bytes: Vec<u8> = self.in_flight[i].drain(..n).collect();
        let written = &self.ends[idx(other(to))].out[at..at + n];
        let tampered = bytes
            .iter()
            .zip(written)
            .enumerate()
            .filter(|(_, (a, b))| a != b);
        self.flipped[i].extend(tampered.map(|(k, _)| at + k));
        self.delivered[i] += n;
        let end = &mut self.ends[i];
        end.backlog.extend(bytes);
        let taken = end.offer(now);
        let mut progress = n > 0 || taken > 0;
        let peer_shut = self.shut[idx(other(to))];
        if peer_shut
            && !self.eof[i]
            && self.in_flight[i].is_empty()
            && (end.backlog.is_empty() || end.conn.is_closed())
        {
            self.eof[i] = true;
            end.eof();
            progress = true;
        }
        progress
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Send { from, len } => {
                if !self.aborted[idx(from)] {
                    self.end(from).send(len);
                }
            }
            Op::Deliver { to, max } => {
                let max = if max == 0 {
                    usize::MAX
                } else {
                    usize::from(max)
                };
                self.deliver(to, max);
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(ms);
                self.fire_timers();
            }
            Op::Close { side, code } => {
                if !self.aborted[idx(side)] {
                    self.end(side).close(code);
                }
            }
            Op::Flip { to, offset, mask } => {
                let flight = &mut self.in_flight[idx(to)];
                if !flight.is_empty() {
                    let at = usize::from(offset) % flight.len();
                    flight[at] ^= mask.max(1);
                }
            }
            Op::Poll(side) => {
                let now = self.now;
                if !self.aborted[idx(side)] {
                    self.end(side).poll_and_offer(now);
                }
            }
            Op::Abort(side) => {
                let i = idx(side);
                self.aborted[i] = true;
                self.shut[i] = true;
                self.in_flight[i].clear();
            }
            Op::Pump(rounds) => {
                for _ in 0..rounds {
                    for side in SIDES {
                        self.transmit(side);
                    }
                    for side in SIDES {
                        self.deliver(side, usize::MAX);
                    }
                }
            }
        }
        for side in SIDES {
            self.transmit(side);
            if !self.ends[idx(side)].lazy {
                self.end(side).poll();
            }
        }
    }

    fn fire_timers(&mut self) {
        let (start, now) = (self.start, self.now);
        for side in SIDES {
            if !self.aborted[idx(side)] {
                self.end(side).timeout(start, now);
            }
        }
    }

    /// Delivers everything, polls everything and fires every handshake timer until
    /// nothing is left to happen.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut progress = false;
            for side in SIDES {
                progress |= self.transmit(side);
            }
            for side in SIDES {
                progress |= self.deliver(side, usize::MAX);
            }
            let now = self.now;
            for side in SIDES {
                if !self.aborted[idx(side)] {
                    progress |= self.end(side).poll_and_offer(now) > 0;
                }
            }
            if progress {
                continue;
            }
            // A joined link's one timer is its peer certificate's end, years away:
            // waiting for it would close every joined TLS link, so the link has settled
            // once only such timers are left.
            let next = SIDES
                .iter()
                .filter(|s| !self.aborted[idx(**s)])
                .filter(|s| !self.ends[idx(**s)].conn.is_joined())
                .filter_map(|s| self.ends[idx(*s)].conn.poll_timeout())
                .min();
            match next {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.fire_timers();
                }
                None => return,
            }
        }
        panic!("the link never settled");
    }

    /// Frames `to` received from its peer are the ones sent, in order, as far as the
    /// link can vouch for them; and nothing was accepted through tampering.
    fn check_delivery(&self, to: Side, peer_frames: Option<&[wire::WireFrame]>) {
        let (rx, tx) = (&self.ends[idx(to)], &self.ends[idx(other(to))]);
        let got = &rx.report.frames;
        let who = rx.who;
        let prefix = got.len() <= tx.sent.len() && got.iter().zip(&tx.sent).all(|(a, b)| a == b);
        let flips = &self.flipped[idx(to)];
        // TLS authenticates every record, and without TLS the secret authenticates every
        // frame after the join (PROTOCOL.md §5.7): tampering never alters a frame.
        if flips.is_empty() || self.tls || self.keyed {
            assert!(
                prefix,
                "{who}: received frames that were not sent, or out of order"
            );
        }
        if self.tls {
            let significant = flips.iter().filter(|&&p| !tls_unprotected(&tx.out, p));
            let Some(&p) = significant.min() else { return };
            let late = rx.frame_after.iter().any(|&after| after > p);
            assert!(!late, "{who}: a frame after the tampered byte at {p}");
            let joined_late = rx.joined_after.is_some_and(|after| after > p);
            assert!(!joined_late, "{who}: joined after the tampered byte at {p}");
            return;
        }
        // Plaintext frames: those wholly before the tampered byte arrive intact; with the
        // secret, no frame that holds or follows a tampered byte arrives at all.
        let (Some(&p), Some(frames)) = (flips.iter().min(), peer_frames) else {
            return;
        };
        if self.keyed {
            let data_ends = frames
                .iter()
                .filter(|f| f.kind == palisade_core::FrameKind::Data);
            for (k, f) in data_ends.enumerate().take(got.len()) {
                assert!(
                    f.end <= p,
                    "{who}: frame {k} (ending at {}) arrived despite the tampered byte at {p}",
                    f.end
                );
            }
        }
        let data_ends = frames
            .iter()
            .filter(|f| f.kind == palisade_core::FrameKind::Data)
            .map(|f| f.end);
        for (k, end) in data_ends.enumerate().take(got.len()) {
            if end > p {
                break;
            }
            assert_eq!(
                got[k], tx.sent[k],
                "{who}: frame {k} altered before the tampering"
            );
        }
        // The join message is authenticated: tampering with it (or the preface before
        // it) prevents the join.
        let join_end = frames.first().map_or(usize::MAX, |f| f.end);
        if self.keyed && p < join_end {
            assert!(
                rx.report.joined.is_none(),
                "{who}: joined through a tampered byte at {p} of the peer's join message"
            );
        }
    }

    fn check_end(&mut self) {
        let now = self.now;
        for side in SIDES {
            self.end(side).poll();
        }
        let outputs = SIDES.map(|side| {
            let end = &self.ends[idx(side)];
            (!self.tls).then(|| wire::check_output(end.who, side, &end.out, &end.report, &end.sent))
        });
        for side in SIDES {
            self.check_delivery(side, outputs[idx(other(side))].as_deref());
        }
        if self.keyed && !self.tls {
            let [i, a] = &self.ends;
            wire::check_tags([&i.out, &a.out], [&i.report, &a.report]);
        }

        let live: Vec<&Driven> = SIDES
            .iter()
            .filter(|s| !self.aborted[idx(**s)])
            .map(|s| &self.ends[idx(*s)])
            .collect();
        let open_joined = |d: &Driven| !d.conn.is_closed() && d.conn.is_joined();
        match live.as_slice() {
            [a, b] => assert!(
                (a.conn.is_closed() && b.conn.is_closed()) || (open_joined(a) && open_joined(b)),
                "the sides disagree: initiator {:?} (joined {}), acceptor {:?} (joined {})",
                a.conn.close_cause(),
                a.conn.is_joined(),
                b.conn.close_cause(),
                b.conn.is_joined()
            ),
            [a] => assert!(a.conn.is_closed(), "{}: open after its peer left", a.who),
            _ => {}
        }

        let clean = self.flipped.iter().all(Vec::is_empty) && self.aborted == [false, false];
        if clean {
            for side in SIDES {
                self.check_clean(side);
            }
        }
        for side in SIDES {
            if self.ends[idx(side)].conn.is_closed() {
                self.end(side).check_closed_for_good(now);
            }
        }
    }

    /// Without tampering or dropped sockets: no error but the handshake timeout (and
    /// the end of stream it, or a close before the TLS handshake finished, leaves the
    /// peer with); every frame sent arrives; a CLOSE arrives as sent.
    fn check_clean(&self, to: Side) {
        let (rx, tx) = (&self.ends[idx(to)], &self.ends[idx(other(to))]);
        let who = rx.who;
        let cause = rx.conn.close_cause();
        let tx_cause = tx.conn.close_cause();
        if let Some(CloseCause::Error(e)) = cause {
            let peer_left =
                matches!(e, ConnectionError::UnexpectedEof { joined: false }) && tx_cause.is_some();
            assert!(
                matches!(
                    e,
                    ConnectionError::HandshakeTimeout { .. }
                        | ConnectionError::FirstBytesTimeout { .. }
                ) || peer_left,
                "{who}: failed on a clean link: {e}"
            );
        }
        if cause.is_none() || matches!(cause, Some(CloseCause::Peer(_))) {
            assert_eq!(rx.report.frames, tx.sent, "{who}: frames were lost");
        }
        if let Some(CloseCause::Peer(reason)) = cause {
            let matches = match tx_cause {
                Some(CloseCause::Local(sent)) => sent == reason,
                Some(CloseCause::Error(
                    ConnectionError::HandshakeTimeout { .. }
                    | ConnectionError::FirstBytesTimeout { .. },
                )) => reason.code == palisade_core::CloseCode::HandshakeTimeout,
                _ => false,
            };
            assert!(
                matches,
                "{who}: got {reason:?}, the peer closed with {tx_cause:?}"
            );
        }
    }
}

/// Whether stream offset `p` of TLS records `out` is a byte TLS does not protect: a
/// record's `legacy_record_version`, and the outer content type of an encrypted record.
/// RFC 8446 §5.1 has the version ignored in records sent in the clear, and rustls builds
/// the AEAD additional data of encrypted records from constants (type 23, version
/// 0x0303) rather than from the received header: the real content type is the inner
/// one, encrypted and authenticated, and the handshake authenticates the version.
fn tls_unprotected(out: &[u8], p: usize) -> bool {
    let mut at = 0;
    while let Some(header) = out.get(at..at + 5) {
        if p < at + 5 {
            let encrypted = header[0] == 23;
            return p == at + 1 || p == at + 2 || (p == at && encrypted);
        }
        at += 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
        if p < at {
            return false;
        }
    }
    false
}

/// The check.
pub fn check(data: &[u8]) {
    run(data);
}

/// Runs one input; returns what each side (initiator, acceptor) reported.
pub fn run(data: &[u8]) -> [Report; 2] {
    let mut input = Input::new(data);
    let settings = input.u8();
    let tls = settings & 1 != 0;
    let keyed = settings & 2 == 0;
    let recv_limit = RECV_LIMITS[usize::from((settings >> 2) & 3)];
    let lazy = settings & 16 != 0;
    let start = Instant::now();
    let ends = SIDES.map(|side| {
        let mut config = fixtures::config(side, keyed, tls);
        config.recv_buffer_limit = recv_limit;
        let endpoint = fixtures::endpoint(side, config);
        let conn = match side {
            Side::Initiator => endpoint.connect(fixtures::SERVER_NAME, start, fixtures::wall()),
            Side::Acceptor => endpoint.accept(start, fixtures::wall()),
        };
        let conn = conn.unwrap_or_else(|e| panic!("the connection could not be made: {e}"));
        Driven::new(conn, tls, keyed, lazy, recv_limit)
    });
    let mut sim = Sim {
        ends,
        tls,
        keyed,
        start,
        now: start,
        on_link: [0, 0],
        in_flight: [VecDeque::new(), VecDeque::new()],
        delivered: [0, 0],
        flipped: [Vec::new(), Vec::new()],
        aborted: [false, false],
        shut: [false, false],
        eof: [false, false],
    };
    for side in SIDES {
        sim.transmit(side);
    }
    // Long inputs add nothing but time: a few hundred steps reach every state.
    for _ in 0..512 {
        if input.is_empty() {
            break;
        }
        let op = Op::read(&mut input);
        sim.apply(op);
    }
    sim.settle();
    sim.check_end();
    sim.ends.map(|d| d.report)
}
