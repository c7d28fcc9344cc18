//! Shared helpers for the property suites (`prop_frames`, `prop_join`, `prop_pair`).
//!
//! * [`proptest_config`]: the case count (env `PROPTEST_CASES`, else a per-suite default)
//!   and failure persistence in `core/proptest-regressions/<suite>.txt`.
//! * Strategies for names, payload sizes and chunk schedules.
//! * [`Node`] and [`Duplex`]: two real [`Connection`]s driven byte by byte, with the
//!   caller choosing every chunk size and which direction moves next.
//! * [`parse_wire`] and [`check_events`]: what a side sent and what it reported must be
//!   well formed.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use palisade_core::frame::FrameKind;
use palisade_core::preface::{PREFACE, PREFACE_LEN};
use palisade_core::tls::pki_types::ServerName;
use palisade_core::{
    CloseCause, CloseReason, Config, Connection, Endpoint, Event, FrameDecoder, PeerInfo,
    Rejection, SharedSecret, Side,
};
use palisade_testkit::SeededRandom;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

/// The wall clock simulated runs start at (2026-01-01T00:00:00Z), as in the testkit.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// The default clock-skew tolerance, in ms.
pub const TOLERANCE_MS: u64 = 300_000;
/// The default `clock_ahead_tolerance` in ms: how far ahead a plaintext HELLO with a
/// secret may be dated.
pub const AHEAD_MS: u64 = 30_000;

/// Cases to run: `PROPTEST_CASES` when set (proptest's own variable), else `default`.
///
/// proptest 1.x reads `PROPTEST_CASES` only into `Config::default()`; `with_cases(n)` and
/// `Config { cases: n, .. }` override it. So the suites read the variable here and use
/// their own modest default only when it is unset.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A proptest config with [`cases`] and failures persisted in `regressions_file`
/// (an absolute path, see the `regressions!` use in each suite).
pub fn proptest_config(regressions_file: &'static str, default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions_file))),
        ..ProptestConfig::default()
    }
}

/// `core/proptest-regressions/<suite>.txt`, absolute, so it does not depend on the
/// working directory the test runs in.
#[macro_export]
macro_rules! regressions {
    ($suite:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/",
            $suite,
            ".txt"
        )
    };
}

// ----- small values -----

pub fn secret(byte: u8) -> SharedSecret {
    SharedSecret::new(vec![byte; 32]).expect("32 bytes is long enough")
}

pub fn wall(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub fn idx(side: Side) -> usize {
    match side {
        Side::Initiator => 0,
        Side::Acceptor => 1,
    }
}

pub fn other(side: Side) -> Side {
    match side {
        Side::Initiator => Side::Acceptor,
        Side::Acceptor => Side::Initiator,
    }
}

pub const SIDES: [Side; 2] = [Side::Initiator, Side::Acceptor];

/// Deterministic payload bytes: `len` bytes that depend on `tag` (SplitMix64 words).
pub fn payload(len: usize, tag: u64) -> Bytes {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = tag ^ 0xa076_1d64_78bd_642f;
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A payload whose `Debug` shows its length and a hash instead of every byte, so a
/// failing case with 100 KiB frames stays readable.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob(pub Bytes);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.len() <= 16 {
            write!(f, "Blob({:02x?})", &self.0[..])
        } else {
            let sum = self
                .0
                .iter()
                .fold(0u32, |h, &b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            write!(
                f,
                "Blob(len {}, head {:02x?}, hash {sum:08x})",
                self.0.len(),
                &self.0[..8]
            )
        }
    }
}

/// Random small bodies or large deterministic ones, up to `max` bytes.
pub fn blob(max: usize) -> impl Strategy<Value = Blob> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..=32.min(max)).prop_map(|v| Blob(Bytes::from(v))),
        1 => (payload_len(max), any::<u64>()).prop_map(|(n, tag)| Blob(payload(n, tag))),
    ]
}

/// The whole frame, header included.
pub fn frame_bytes(kind: FrameKind, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    palisade_core::frame::encode(kind, body, &mut out);
    out
}

// ----- strategies -----

pub fn any_kind() -> impl Strategy<Value = FrameKind> {
    prop::sample::select(vec![
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Reject,
        FrameKind::Rejoin,
        FrameKind::Rejoined,
        FrameKind::Rekey,
        FrameKind::Data,
        FrameKind::Close,
    ])
}

/// Cuts characters onto a string until the next one would pass `max` bytes.
pub fn chars_within(chars: &[char], max: usize) -> String {
    let mut s = String::new();
    for &c in chars {
        if s.len() + c.len_utf8() > max {
            break;
        }
        s.push(c);
    }
    s
}

/// A valid cluster name or node id: 1..=255 bytes of UTF-8, sometimes ASCII, sometimes
/// any characters, sometimes exactly at the limit.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9-]{1,24}",
        2 => prop::collection::vec(any::<char>(), 1..=80).prop_map(|c| chars_within(&c, 255)),
        1 => prop::collection::vec(any::<char>(), 250..=255).prop_map(|c| chars_within(&c, 255)),
        1 => (1..=255usize).prop_map(|n| "n".repeat(n)),
        1 => Just("é".repeat(127) + "x"),
    ]
}

/// Application payload sizes up to `max`: mostly small, with the zero-copy boundary
/// (16 KiB) and the extremes well represented.
pub fn payload_len(max: usize) -> impl Strategy<Value = usize> {
    let zc = 16 * 1024;
    let edges: Vec<usize> = [0, 1, zc - 1, zc, zc + 1, max]
        .into_iter()
        .filter(|&n| n <= max)
        .collect();
    prop_oneof![
        4 => 0..=64usize.min(max),
        2 => 0..=max,
        1 => prop::sample::select(edges),
    ]
}

/// A chunk size for splitting a byte stream: tiny, medium or large.
pub fn chunk_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => 1..=16usize,
        2 => 17..=4096usize,
        1 => 4097..=200_000usize,
    ]
}

// ----- inspecting what a side sent -----

/// A side's whole outgoing stream, parsed.
#[derive(Debug, Default)]
pub struct WireLog {
    pub preface_ok: bool,
    pub frames: Vec<(FrameKind, Bytes)>,
    /// Undecodable tail (0 for a well-formed stream).
    pub leftover: usize,
    pub error: Option<palisade_core::FrameError>,
}

impl WireLog {
    /// The REJECT / CLOSE frames, in order.
    pub fn terminal_frames(&self) -> Vec<&(FrameKind, Bytes)> {
        self.frames
            .iter()
            .filter(|(k, _)| matches!(k, FrameKind::Reject | FrameKind::Close))
            .collect()
    }

    /// Plaintext with the secret (PROTOCOL.md §5.7): every frame after this side's own
    /// join message (HELLO or WELCOME) ends in a 16-byte tag; cut it off, checking that
    /// it is there.
    pub fn strip_tags_after_join(&mut self) {
        let join = self
            .frames
            .iter()
            .position(|(k, _)| matches!(k, FrameKind::Hello | FrameKind::Welcome));
        for (kind, body) in self
            .frames
            .iter_mut()
            .skip(join.map_or(usize::MAX, |j| j + 1))
        {
            let len = body.len().checked_sub(palisade_core::frame_auth::TAG_LEN);
            let len = len.unwrap_or_else(|| panic!("a {kind} too short for its tag"));
            body.truncate(len);
        }
    }

    pub fn data(&self) -> Vec<Bytes> {
        self.frames
            .iter()
            .filter(|(k, _)| *k == FrameKind::Data)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Asserts: the preface, then frames, nothing undecodable, and at most one REJECT or
    /// CLOSE, which is the last frame (a side sends nothing after it).
    pub fn assert_well_formed(&self, who: &str) {
        assert!(
            self.preface_ok,
            "{who}: stream does not open with the preface"
        );
        assert_eq!(self.error, None, "{who}: sent an undecodable frame");
        assert_eq!(self.leftover, 0, "{who}: sent a partial frame");
        let terminal = self.terminal_frames();
        assert!(
            terminal.len() <= 1,
            "{who}: sent {} REJECT/CLOSE frames",
            terminal.len()
        );
        if let Some(t) = terminal.first() {
            assert_eq!(
                self.frames.last().map(|(k, _)| *k),
                Some(t.0),
                "{who}: sent frames after its REJECT/CLOSE"
            );
        }
    }

    pub fn rejection(&self) -> Option<Rejection> {
        self.frames
            .iter()
            .find(|(k, _)| *k == FrameKind::Reject)
            .map(|(_, b)| Rejection::decode(b).expect("a REJECT we sent parses"))
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.frames
            .iter()
            .find(|(k, _)| *k == FrameKind::Close)
            .map(|(_, b)| CloseReason::decode(b).expect("a CLOSE we sent parses"))
    }
}

/// Parses everything a side wrote: preface, then frames.
pub fn parse_wire(bytes: &[u8]) -> WireLog {
    let mut log = WireLog::default();
    if bytes.len() < PREFACE_LEN || bytes[..PREFACE_LEN] != PREFACE {
        return log;
    }
    log.preface_ok = true;
    let mut buf = BytesMut::from(&bytes[PREFACE_LEN..]);
    let mut dec = FrameDecoder::new(u32::MAX as usize);
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(f)) => log.frames.push((f.kind, f.payload)),
            Ok(None) => break,
            Err(e) => {
                log.error = Some(e);
                break;
            }
        }
    }
    log.leftover = buf.len();
    log
}

// ----- inspecting what a side reported -----

/// A side's events, checked for shape: at most one `Joined`, first; `Frame`s only after
/// it; at most one `Closed`, last.
#[derive(Debug, Default)]
pub struct EventLog {
    pub joined: Option<PeerInfo>,
    pub frames: Vec<Bytes>,
    pub closed: Option<CloseCause>,
}

pub fn check_events(who: &str, events: &[Event]) -> EventLog {
    let mut log = EventLog::default();
    for (i, e) in events.iter().enumerate() {
        assert!(log.closed.is_none(), "{who}: event #{i} {e:?} after Closed");
        match e {
            Event::Joined(p) => {
                assert!(log.joined.is_none(), "{who}: Joined twice");
                assert!(log.frames.is_empty(), "{who}: Joined after a frame");
                log.joined = Some(p.clone());
            }
            Event::Frame(b) => {
                assert!(log.joined.is_some(), "{who}: a frame before Joined");
                log.frames.push(b.clone());
            }
            Event::Rejoined(p) => {
                let joined = log.joined.as_ref().expect("Rejoined before Joined");
                assert_eq!(
                    joined.node_id, p.node_id,
                    "{who}: a re-join changed the peer"
                );
                log.joined = Some(p.clone());
            }
            Event::Closed(c) => log.closed = Some(c.clone()),
        }
    }
    log
}

// ----- driving connections by hand -----

/// One connection plus what the test saw of it.
#[derive(Debug)]
pub struct Node {
    pub conn: Connection,
    /// Every event polled so far.
    pub events: Vec<Event>,
    /// Every byte handed out by `poll_transmit` so far.
    pub sent: BytesMut,
    /// Bytes delivered to this node and not yet consumed by `handle_input`.
    pub inbox: BytesMut,
    pub now: Instant,
}

impl Node {
    pub fn new(conn: Connection, now: Instant) -> Self {
        Self {
            conn,
            events: Vec::new(),
            sent: BytesMut::new(),
            inbox: BytesMut::new(),
            now,
        }
    }

    pub fn endpoint(config: Config, seed: u64) -> Endpoint {
        Endpoint::with_random(config, Arc::new(SeededRandom::new(seed)))
            .expect("test config is valid")
    }

    pub fn connect(endpoint: &Endpoint, now: Instant, wall_ms: u64) -> Self {
        Self::connect_to(endpoint, "localhost", now, wall_ms)
    }

    /// Dials `server_name` (TLS SNI and the `verify_hostname` check).
    pub fn connect_to(endpoint: &Endpoint, server_name: &str, now: Instant, wall_ms: u64) -> Self {
        Self::new(
            endpoint
                .connect(server_name, now, wall(wall_ms))
                .expect("seeded random"),
            now,
        )
    }

    pub fn accept(endpoint: &Endpoint, now: Instant, wall_ms: u64) -> Self {
        Self::new(
            endpoint.accept(now, wall(wall_ms)).expect("seeded random"),
            now,
        )
    }

    /// Everything `poll_transmit` has now, concatenated (also appended to `sent`).
    pub fn flush(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.conn.poll_transmit() {
            assert!(!chunk.is_empty(), "poll_transmit returned an empty chunk");
            self.sent.extend_from_slice(&chunk);
            out.extend_from_slice(&chunk);
        }
        out
    }

    /// Polls every queued event. Returns how many there were.
    pub fn drain_events(&mut self) -> usize {
        let mut n = 0;
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
            n += 1;
        }
        n
    }

    /// Offers the inbox once; returns bytes consumed.
    pub fn offer(&mut self) -> usize {
        if self.inbox.is_empty() {
            return 0;
        }
        let offered = self.inbox.len();
        let n = self.conn.handle_input(&self.inbox, self.now);
        assert!(n <= offered, "handle_input consumed {n} of {offered} bytes");
        self.inbox.advance(n);
        n
    }

    /// Delivers bytes as one socket read and processes them like an IO loop: offer, drain
    /// events, offer the rest again. Panics if the connection stops taking input while its
    /// event queue is empty (that would deadlock a real loop).
    pub fn input(&mut self, bytes: &[u8]) {
        self.inbox.extend_from_slice(bytes);
        self.pump();
    }

    /// Offers the inbox until it is empty, draining events in between.
    pub fn pump(&mut self) {
        while !self.inbox.is_empty() {
            let n = self.offer();
            let polled = self.drain_events();
            assert!(
                n > 0 || polled > 0,
                "connection takes no input although its event queue is empty \
                 ({} bytes waiting)",
                self.inbox.len()
            );
        }
        self.drain_events();
    }

    pub fn eof(&mut self) {
        self.conn.handle_eof();
        self.drain_events();
    }

    pub fn log(&self, who: &str) -> EventLog {
        check_events(who, &self.events)
    }

    pub fn wire(&self) -> WireLog {
        parse_wire(&self.sent)
    }
}

/// Two connections and the two byte pipes between them. Index 0 is the initiator,
/// 1 the acceptor; `wire[i]` holds bytes on their way to node `i`, in order (as TCP).
#[derive(Debug)]
pub struct Duplex {
    pub nodes: [Node; 2],
    pub wire: [BytesMut; 2],
}

impl Duplex {
    /// Connections made at the same instant, both wall clocks at [`EPOCH_MS`]. The
    /// initiator dials the acceptor by its node id, as a cluster does (so certificates
    /// made by `TestCa::node(node_id)` pass `verify_hostname`, on by default in CA mode).
    pub fn new(initiator: Config, acceptor: Config, seed: u64) -> Self {
        let now = Instant::now();
        let server_name = match ServerName::try_from(acceptor.node_id.as_str()) {
            Ok(ServerName::DnsName(_)) => acceptor.node_id.clone(),
            _ => "localhost".to_owned(),
        };
        let i = Node::endpoint(initiator, seed);
        let a = Node::endpoint(acceptor, seed.wrapping_add(0x5eed));
        Self {
            nodes: [
                Node::connect_to(&i, &server_name, now, EPOCH_MS),
                Node::accept(&a, now, EPOCH_MS),
            ],
            wire: [BytesMut::new(), BytesMut::new()],
        }
    }

    pub fn node(&mut self, side: Side) -> &mut Node {
        &mut self.nodes[idx(side)]
    }

    /// Moves everything both sides want to write onto the pipes. Returns bytes moved.
    pub fn transmit(&mut self) -> usize {
        let mut moved = 0;
        for i in 0..2 {
            let out = self.nodes[i].flush();
            moved += out.len();
            self.wire[1 - i].extend_from_slice(&out);
        }
        moved
    }

    /// Bytes not yet consumed by node `to` (in the pipe or its inbox).
    pub fn pending_to(&self, to: usize) -> usize {
        self.wire[to].len() + self.nodes[to].inbox.len()
    }

    /// Hands node `to` at most `max` bytes from its pipe as one read. With `drain`, the
    /// node's events are polled and the read is fully processed (an eager IO loop);
    /// without, the connection is offered the bytes once and its events stay queued, so
    /// its receive window fills up. Either way, if the connection takes nothing, its
    /// events are drained and it must then take input.
    pub fn deliver(&mut self, to: usize, max: usize, drain: bool) {
        let n = max.min(self.wire[to].len());
        let chunk = self.wire[to].split_to(n);
        let node = &mut self.nodes[to];
        node.inbox.extend_from_slice(&chunk);
        // Lazy: one offer; only a connection that took nothing gets its events polled.
        if drain || (node.offer() == 0 && !node.inbox.is_empty()) {
            node.pump();
        }
    }
}
