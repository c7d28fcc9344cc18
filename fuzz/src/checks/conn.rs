//! The single-connection targets: one connection (secret on) fed arbitrary bytes and
//! timeouts, with the application polling, sending and closing in between.
//!
//! It never panics; what it buffers stays within `recv_buffer_limit` plus one frame;
//! after every step its state agrees with its events; and it ends, at the latest when
//! the stream ends, in a typed error, having written (plaintext) exactly the frames the
//! protocol owes the peer.
//!
//! Input: one settings byte (bits 0-1: `recv_buffer_limit` from
//! [`fixtures::RECV_LIMITS`]; bit 2: the application polls events only on [`Op::Poll`];
//! bit 3, [`PERMISSIVE`]: the TLS acceptor is permissive, PROTOCOL.md §8.1), then
//! operations ([`Op`]).

use std::time::{Duration, Instant};

use palisade_core::{CloseCause, ConnectionError, FrameError, Side};

use super::driver::Driven;
use super::fixtures::{self, RECV_LIMITS};
use super::input::{put_u16, Input};
use super::wire::{self, Report};

/// The acceptor without TLS.
pub fn acceptor_plain(data: &[u8]) {
    run(Side::Acceptor, false, data);
}

/// The initiator without TLS.
pub fn initiator_plain(data: &[u8]) {
    run(Side::Initiator, false, data);
}

/// The acceptor with TLS.
pub fn acceptor_tls(data: &[u8]) {
    run(Side::Acceptor, true, data);
}

/// The settings bit that makes the TLS acceptor permissive (`mode`): a peer opening
/// with plaintext palisade, or joining without the secret, is accepted too, and its
/// join reports how it fell short. Ignored by the other targets.
pub const PERMISSIVE: u8 = 8;

/// The settings byte: `recv_limit` indexes [`RECV_LIMITS`].
pub fn settings(recv_limit: usize, lazy: bool) -> u8 {
    (recv_limit.min(3) as u8) | (u8::from(lazy) << 2)
}

/// One step. The opcode's low 4 bits are the operation, its high 4 bits a small
/// argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// The socket read these bytes (opcode 0, u16 length, bytes).
    Input(&'a [u8]),
    /// The socket read these few bytes (opcode 7 or 9 to 15; length 0..=31: the opcode
    /// shifted right by 3).
    Short(&'a [u8]),
    /// The socket reads all the rest of the fuzz input, `chunk` bytes at a time (opcode
    /// 1, chunk = argument², 0 meaning all at once).
    Rest {
        /// Bytes per read.
        chunk: usize,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// The socket read `count` copies of a frame: this kind byte, a `len`-byte body
    /// (opcode 8, then kind, len and count as u8). Frames in bulk, which byte-level
    /// mutation rarely makes.
    Frames {
        /// The kind byte (any value).
        kind: u8,
        /// Body length.
        len: u8,
        /// How many frames.
        count: u8,
    },
    /// Time passes; the timer is checked (opcode 2, u16 × (argument + 1) ms).
    Advance(u64),
    /// The application polls every event (opcode 3).
    Poll,
    /// The peer closed the stream (opcode 4).
    Eof,
    /// The application sends a frame of this length (opcode 5, u16).
    Send(u16),
    /// The application closes with this code (opcode 6, u16).
    Close(u16),
}

impl<'a> Op<'a> {
    /// Reads the next operation.
    pub fn read(input: &mut Input<'a>) -> Self {
        let code = input.u8();
        let arg = code >> 4;
        match code & 15 {
            0 => {
                let len = input.u16();
                Self::Input(input.bytes(usize::from(len)))
            }
            1 => Self::Rest {
                chunk: usize::from(arg) * usize::from(arg),
                bytes: input.rest(),
            },
            2 => Self::Advance(u64::from(input.u16()) * (u64::from(arg) + 1)),
            3 => Self::Poll,
            4 => Self::Eof,
            5 => Self::Send(input.u16()),
            6 => Self::Close(input.u16()),
            8 => Self::Frames {
                kind: input.u8(),
                len: input.u8(),
                count: input.u8(),
            },
            _ => Self::Short(input.bytes(usize::from(code >> 3))),
        }
    }

    /// Appends the operation as [`Op::read`] reads it (for writing seeds). Values out of
    /// range are clamped.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Input(bytes) => {
                let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
                out.push(0);
                put_u16(out, bytes.len() as u16);
                out.extend_from_slice(bytes);
            }
            Self::Short(bytes) => {
                let bytes = &bytes[..bytes.len().min(31)];
                out.push(7 | (bytes.len() as u8) << 3);
                out.extend_from_slice(bytes);
            }
            Self::Rest { chunk, bytes } => {
                let root = (0..16u8)
                    .rev()
                    .find(|&r| usize::from(r) * usize::from(r) <= chunk)
                    .unwrap_or(0);
                out.push(1 | root << 4);
                out.extend_from_slice(bytes);
            }
            Self::Frames { kind, len, count } => out.extend_from_slice(&[8, kind, len, count]),
            Self::Advance(ms) => {
                let arg = (ms / 65_536).min(15) as u8;
                out.push(2 | arg << 4);
                put_u16(out, (ms / (u64::from(arg) + 1)).min(65_535) as u16);
            }
            Self::Poll => out.push(3),
            Self::Eof => out.push(4),
            Self::Send(len) => {
                out.push(5);
                put_u16(out, len);
            }
            Self::Close(code) => {
                out.push(6);
                put_u16(out, code);
            }
        }
    }
}

/// A whole input: settings (`recv_limit` indexes [`RECV_LIMITS`]), then operations.
pub fn encode(recv_limit: usize, lazy: bool, ops: &[Op<'_>]) -> Vec<u8> {
    let mut out = vec![settings(recv_limit, lazy)];
    for op in ops {
        op.encode(&mut out);
    }
    out
}

/// Feeds one operation to the connection (started at `start`; `now` is the clock).
fn apply(d: &mut Driven, op: Op<'_>, start: Instant, now: &mut Instant) {
    match op {
        Op::Input(bytes) | Op::Short(bytes) => {
            d.backlog.extend_from_slice(bytes);
            d.offer(*now);
        }
        Op::Frames { kind, len, count } => {
            for n in 0..count {
                d.backlog.push(kind);
                d.backlog.extend_from_slice(&u32::from(len).to_be_bytes());
                d.backlog.extend(fixtures::payload(usize::from(len), n));
            }
            d.offer(*now);
        }
        Op::Rest { chunk, bytes } => {
            for piece in bytes.chunks(if chunk == 0 {
                bytes.len().max(1)
            } else {
                chunk
            }) {
                d.backlog.extend_from_slice(piece);
                d.offer(*now);
            }
        }
        Op::Advance(ms) => {
            *now += Duration::from_millis(ms);
            d.timeout(start, *now);
        }
        Op::Poll => {
            d.poll_and_offer(*now);
        }
        Op::Eof => d.eof(),
        Op::Send(len) => d.send(len),
        Op::Close(code) => d.close(code),
    }
    if !d.lazy {
        d.poll();
    }
}

/// Runs one input through a connection of `side`; returns what it reported.
pub fn run(side: Side, tls: bool, data: &[u8]) -> Report {
    let mut input = Input::new(data);
    let settings = input.u8();
    let recv_limit = RECV_LIMITS[usize::from(settings & 3)];
    let mut config = fixtures::config(side, true, tls);
    config.recv_buffer_limit = recv_limit;
    let permissive = side == Side::Acceptor && tls && settings & PERMISSIVE != 0;
    if permissive {
        config.mode = palisade_core::Mode::Permissive;
    }
    let endpoint = fixtures::endpoint(side, config);
    let start = Instant::now();
    let conn = match side {
        Side::Initiator => endpoint.connect(fixtures::SERVER_NAME, start, fixtures::wall()),
        Side::Acceptor => endpoint.accept(start, fixtures::wall()),
    };
    let conn = conn.unwrap_or_else(|e| panic!("the connection could not be made: {e}"));
    let mut d = Driven::new(conn, tls, true, settings & 4 != 0, recv_limit);
    d.report.permissive = permissive;
    let mut now = start;
    while !input.is_empty() {
        let op = Op::read(&mut input);
        apply(&mut d, op, start, &mut now);
    }

    // The stream ends: the connection ends in a typed error if nothing ended it before.
    d.poll();
    let was_closed = d.conn.is_closed();
    d.eof();
    d.poll();
    if !was_closed {
        let cause = d.conn.close_cause();
        assert!(
            matches!(
                cause,
                Some(CloseCause::Error(
                    ConnectionError::UnexpectedEof { .. }
                        | ConnectionError::Frame(FrameError::Truncated { .. })
                ))
            ),
            "{}: the stream ended and the cause is {cause:?}",
            d.who
        );
    }
    d.check_closed_for_good(now);
    // A permissive acceptor answers in the peer's language: plaintext palisade (which
    // opens with `P`), TLS records (content types 20 to 23), or nothing at all.
    let plaintext = !tls || (permissive && d.out.first() == Some(&b'P'));
    if plaintext {
        wire::check_output(d.who, side, &d.out, &d.report, &d.sent);
    } else if permissive {
        let first = d.out.first().copied();
        assert!(
            matches!(first, None | Some(0x14..=0x17)),
            "{}: opened with {first:?}, neither plaintext palisade nor TLS",
            d.who
        );
    }
    d.report
}
