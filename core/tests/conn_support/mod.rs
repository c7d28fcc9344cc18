//! Helpers shared by the `connection_*` integration tests: configs, a wire parser built
//! on the public codec, a single raw connection driven by hand, and the assertions that
//! check a refused join on both sides.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use palisade_core::frame::{encode, Frame, FrameDecoder, FrameKind};
use palisade_core::join::{JoinHello, JoinWelcome};
use palisade_core::preface::{PREFACE, PREFACE_LEN};
use palisade_core::{
    CloseCause, CloseCode, CloseReason, Config, Connection, ConnectionError, Endpoint, Event,
    JoinError, RejectCode, Rejection, SendError, SharedSecret, Side,
};
use palisade_testkit::{Pair, PairBuilder, SeededRandom};

/// The wall clock the testkit's `Pair` starts at (2026-01-01T00:00:00Z).
pub const WALL_MS: u64 = 1_767_225_600_000;

pub const I: Side = Side::Initiator;
pub const A: Side = Side::Acceptor;

pub fn other(side: Side) -> Side {
    match side {
        Side::Initiator => Side::Acceptor,
        Side::Acceptor => Side::Initiator,
    }
}

pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(WALL_MS)
}

pub fn secret(byte: u8) -> SharedSecret {
    SharedSecret::new(vec![byte; 32]).unwrap()
}

/// A node of cluster "prod" without a shared secret.
pub fn plain(node: &str) -> Config {
    Config::new("prod", node)
}

/// A node of cluster "prod" holding the secret made of 32 `byte`s.
pub fn keyed(node: &str, byte: u8) -> Config {
    plain(node).with_secret(secret(byte))
}

pub fn endpoint(config: Config, seed: u64) -> Endpoint {
    Endpoint::with_random(config, Arc::new(SeededRandom::new(seed))).unwrap()
}

pub fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

/// One whole frame with any kind byte and the true length.
pub fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(kind, payload, &mut out);
    out.to_vec()
}

pub fn hello_frame(hello: &JoinHello) -> Vec<u8> {
    frame(FrameKind::Hello, &hello.encode())
}

/// The preface followed by `rest`.
pub fn after_preface(rest: &[u8]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(rest);
    out
}

/// The frames of a byte stream (no preface). Panics if bytes are left over.
pub fn parse_frames(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = FrameDecoder::new(u32::MAX as usize);
    let mut frames = Vec::new();
    while let Some(f) = decoder.decode(&mut buf).unwrap() {
        frames.push(f);
    }
    assert!(
        buf.is_empty(),
        "{} bytes left after the last frame",
        buf.len()
    );
    frames
}

/// The frames of a stream that must open with the palisade preface.
pub fn parse_stream(bytes: &[u8]) -> Vec<Frame> {
    assert!(
        bytes.len() >= PREFACE_LEN,
        "stream shorter than the preface: {bytes:02x?}"
    );
    assert_eq!(
        &bytes[..PREFACE_LEN],
        &PREFACE,
        "the stream opens with the preface"
    );
    parse_frames(&bytes[PREFACE_LEN..])
}

pub fn kinds(frames: &[Frame]) -> Vec<FrameKind> {
    frames.iter().map(|f| f.kind).collect()
}

pub fn as_reject(f: &Frame) -> Rejection {
    assert_eq!(f.kind, FrameKind::Reject, "expected a REJECT, got {f:?}");
    Rejection::decode(&f.payload).unwrap()
}

pub fn as_close(f: &Frame) -> CloseReason {
    assert_eq!(f.kind, FrameKind::Close, "expected a CLOSE, got {f:?}");
    CloseReason::decode(&f.payload).unwrap()
}

/// The error inside a `CloseCause::Error`, or a panic naming what was there instead.
pub fn error_of(cause: Option<&CloseCause>) -> &ConnectionError {
    match cause {
        Some(CloseCause::Error(e)) => e,
        other => panic!("expected an error close, got {other:?}"),
    }
}

pub fn joined_count(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Joined(_)))
        .count()
}

/// Exactly one `Closed`, and it is the last event.
pub fn assert_closed_last(events: &[Event]) -> &CloseCause {
    let closed: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Closed(_)))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        closed,
        vec![events.len() - 1],
        "exactly one Closed, last: {events:?}"
    );
    match events.last() {
        Some(Event::Closed(c)) => c,
        _ => unreachable!(),
    }
}

/// A pair that has run until both sides joined.
pub fn joined_pair(initiator: Config, acceptor: Config) -> Pair {
    let mut pair = PairBuilder::new(initiator, acceptor).build();
    pair.run_until(|p| p.joined(I) && p.joined(A));
    assert!(pair.joined(I) && pair.joined(A), "the pair did not join");
    assert_eq!(pair.conn(I).send_buffered(), 0);
    assert_eq!(pair.conn(A).send_buffered(), 0);
    pair
}

/// Hands the initiator's first flight to `tamper`, delivers the result to the acceptor,
/// then delivers the acceptor's whole answer to the initiator (untouched).
pub fn exchange_with_tampered_hello(pair: &mut Pair, tamper: impl FnOnce(&mut Vec<u8>)) {
    let mut flight = concat(&pair.transmit(I));
    tamper(&mut flight);
    pair.deliver(A, &flight);
    let answer = concat(&pair.transmit(A));
    pair.deliver(I, &answer);
    let more = pair.transmit(I);
    pair.deliver(A, &concat(&more));
}

/// Checks a refused join on both sides and on the wire, whatever the refuser's own error:
///
/// - the other side closed with `JoinError::RefusedByPeer(r)`, where `r` is the
///   rejection in the REJECT frame the refuser wrote last;
/// - the refuser wrote exactly one REJECT and no CLOSE; the other side wrote neither;
/// - both emitted exactly one `Closed`, last; both are closed and drained.
///
/// Returns the rejection and the refuser's error. Whether either side emitted `Joined`
/// is left to the caller (an acceptor is joined when it sends WELCOME, so it has joined
/// when the initiator refuses the WELCOME).
pub fn assert_reject_exchange(pair: &mut Pair, refuser: Side) -> (Rejection, ConnectionError) {
    let peer = other(refuser);
    let refuser_frames = parse_stream(&concat(pair.sent(refuser)));
    let last = refuser_frames.last().expect("the refuser wrote a frame");
    let r = as_reject(last);
    assert_eq!(
        refuser_frames
            .iter()
            .filter(|f| matches!(f.kind, FrameKind::Reject | FrameKind::Close))
            .count(),
        1,
        "exactly one REJECT and no CLOSE from the refuser"
    );
    let peer_frames = parse_stream(&concat(pair.sent(peer)));
    assert!(
        peer_frames
            .iter()
            .all(|f| !matches!(f.kind, FrameKind::Reject | FrameKind::Close)),
        "the refused side answers a REJECT with nothing: {:?}",
        kinds(&peer_frames)
    );

    let peer_err = error_of(pair.close_cause(peer)).clone();
    assert_eq!(
        peer_err,
        ConnectionError::Join(JoinError::RefusedByPeer(r.clone())),
        "{peer:?} reports the refusal it received"
    );
    assert!(peer_err.is_refused_by_peer());
    let shown = peer_err.to_string();
    assert!(shown.starts_with("the peer refused to join: "), "{shown}");
    assert!(shown.contains(r.code.describe()), "{shown}");
    assert!(shown.contains(&r.message), "{shown}");

    for side in [refuser, peer] {
        assert_closed_last(pair.events(side));
        let conn = pair.conn(side);
        assert!(
            conn.is_closed() && conn.is_drained(),
            "{side:?} closed and drained"
        );
        assert!(!conn.is_joined());
        assert_eq!(conn.poll_timeout(), None);
        assert_eq!(conn.send(Bytes::from_static(b"x")), Err(SendError::Closed));
    }
    let refuser_err = error_of(pair.close_cause(refuser)).clone();
    assert!(!refuser_err.is_refused_by_peer());
    (r, refuser_err)
}

/// [`assert_reject_exchange`] for a refusal decided by the join checks: the refuser
/// reports `JoinError::RefusedPeer(r)` with the same rejection it sent, with `code`.
pub fn assert_refused(pair: &mut Pair, refuser: Side, code: RejectCode) -> Rejection {
    let (r, err) = assert_reject_exchange(pair, refuser);
    assert_eq!(r.code, code, "reject code: {r}");
    // The refuser's own error says what it sent, plus any detail kept from the peer.
    let local = match &err {
        ConnectionError::Join(JoinError::RefusedPeer(local)) => local.clone(),
        other => panic!("expected RefusedPeer, got {other:?}"),
    };
    assert_eq!((local.code, &local.message), (r.code, &r.message));
    let shown = err.to_string();
    assert!(shown.starts_with("refused the peer's join: "), "{shown}");
    assert!(shown.contains(r.code.advice()), "{shown}");
    r
}

/// [`assert_refused`] for a refusal by the acceptor of the initiator's HELLO: neither side
/// joined, the initiator wrote only its HELLO and the acceptor only the REJECT.
pub fn assert_acceptor_refused(pair: &mut Pair, code: RejectCode) -> Rejection {
    let r = assert_refused(pair, A, code);
    assert_no_join(pair);
    assert_eq!(
        kinds(&parse_stream(&concat(pair.sent(I)))),
        [FrameKind::Hello]
    );
    assert_eq!(
        kinds(&parse_stream(&concat(pair.sent(A)))),
        [FrameKind::Reject]
    );
    r
}

pub fn assert_no_join(pair: &Pair) {
    for side in [I, A] {
        assert_eq!(joined_count(pair.events(side)), 0, "{side:?} never joined");
        assert!(!pair.joined(side));
    }
}

/// One connection driven by hand, with its output and events collected.
#[derive(Debug)]
pub struct Solo {
    pub conn: Connection,
    pub now: Instant,
    pub events: Vec<Event>,
    pub out: Vec<u8>,
}

impl Solo {
    pub fn acceptor(config: Config) -> Self {
        let now = Instant::now();
        let conn = endpoint(config, 7).accept(now, wall()).unwrap();
        Self::new(conn, now)
    }

    pub fn initiator(config: Config) -> Self {
        let now = Instant::now();
        let conn = endpoint(config, 7)
            .connect("localhost", now, wall())
            .unwrap();
        Self::new(conn, now)
    }

    pub fn new(conn: Connection, now: Instant) -> Self {
        let mut solo = Self {
            conn,
            now,
            events: Vec::new(),
            out: Vec::new(),
        };
        solo.pump();
        solo
    }

    /// One `handle_input` call; returns what it consumed. Output and events are drained.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        let n = self.conn.handle_input(bytes, self.now);
        assert!(n <= bytes.len());
        self.pump();
        n
    }

    /// Offers `bytes` until all are consumed (events are drained between calls).
    pub fn input_all(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = self.input(bytes);
            assert!(n > 0, "input stalled with events drained");
            bytes = &bytes[n..];
        }
    }

    pub fn pump(&mut self) {
        while let Some(chunk) = self.conn.poll_transmit() {
            self.out.extend_from_slice(&chunk);
        }
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
        }
    }

    pub fn error(&self) -> &ConnectionError {
        error_of(self.conn.close_cause())
    }

    /// The frames written so far (after the preface).
    pub fn frames(&self) -> Vec<Frame> {
        parse_stream(&self.out)
    }
}

/// Where the HELLO payload starts in the initiator's first flight.
pub const HELLO_AT: usize = PREFACE_LEN + 5;
/// Where the WELCOME payload starts in the acceptor's first flight.
pub const WELCOME_AT: usize = PREFACE_LEN + 5;

/// Runs I → A, hands the acceptor's answer to `tamper`, and delivers it to the initiator.
pub fn exchange_with_tampered_welcome(pair: &mut Pair, tamper: impl FnOnce(&mut Vec<u8>)) {
    let flight = concat(&pair.transmit(I));
    pair.deliver(A, &flight);
    let mut answer = concat(&pair.transmit(A));
    assert_eq!(kinds(&parse_stream(&answer)), [FrameKind::Welcome]);
    tamper(&mut answer);
    pair.deliver(I, &answer);
    let refusal = concat(&pair.transmit(I));
    pair.deliver(A, &refusal);
    assert!(
        pair.transmit(A).is_empty(),
        "the acceptor answers a REJECT with nothing"
    );
}

pub fn rewrite_welcome(answer: &mut Vec<u8>, edit: impl FnOnce(&mut JoinWelcome)) {
    let mut welcome = JoinWelcome::decode(&answer[WELCOME_AT..]).unwrap();
    edit(&mut welcome);
    *answer = after_preface(&frame(FrameKind::Welcome, &welcome.encode()));
}

/// The acceptor joined (it does so when it sends WELCOME) and then learned it was refused.
pub fn assert_acceptor_joined_then_refused(pair: &Pair) {
    let events = pair.events(A);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(&events[0], Event::Joined(p) if p.node_id == "node-a"));
    assert_eq!(
        joined_count(pair.events(I)),
        0,
        "the initiator never joined"
    );
    assert_eq!(pair.events(I).len(), 1);
}

pub fn err_rejection(err: &ConnectionError) -> &Rejection {
    match err {
        ConnectionError::Join(j) => j.rejection(),
        other => panic!("not a join error: {other:?}"),
    }
}

/// What a connection that failed with `err` owes its peer: the frames it wrote after
/// its preface (HELLO for an initiator) end with one CLOSE carrying `code` and the error.
pub fn assert_owes_close(solo: &Solo, err: &ConnectionError, code: CloseCode) {
    let frames = solo.frames();
    let close = frames.last().expect("a CLOSE was written");
    assert_eq!(
        as_close(close),
        CloseReason::new(code, err.to_string()),
        "the CLOSE tells the peer the code and the diagnosis"
    );
    assert_eq!(close.payload[..2], code.to_u16().to_be_bytes());
    assert!(frames[..frames.len() - 1]
        .iter()
        .all(|f| f.kind == FrameKind::Hello || f.kind == FrameKind::Data));
    assert_eq!(
        solo.events,
        [Event::Closed(CloseCause::Error(err.clone()))],
        "one Closed and nothing else"
    );
    assert!(solo.conn.is_drained());
}
