//! Two connections joined by an in-memory link with simulated time and a fixed one-way
//! latency. Time only moves when [`Pair::step`] moves it, so a run is exact and repeatable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use palisade_core::tls::pki_types::ServerName;
use palisade_core::{CloseCause, Config, Connection, Endpoint, Event, SendError, Side};

use crate::SeededRandom;

/// The wall clock every simulated run starts at: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// How far ahead [`Pair::step`] looks for a timeout by default: one hour. Handshake and
/// re-join deadlines are seconds away; a joined link's other deadline, its peer
/// certificate's end (`close_on_peer_expiry`), is usually years away, and a run that
/// waited for it would close every link it just joined. See [`PairBuilder::horizon`].
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(3600);

/// Settings for a [`Pair`].
#[derive(Debug)]
pub struct PairBuilder {
    initiator: Endpoint,
    acceptor: Endpoint,
    latency: Duration,
    initiator_clock_offset_ms: i64,
    wall_start_ms: u64,
    /// `None`: the acceptor's node id (see [`PairBuilder::server_name`]).
    server_name: Option<String>,
    expected_peer: Option<String>,
    horizon: Duration,
}

/// The simulated link's settings (one-way latency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Time from a write on one side to its arrival on the other.
    pub latency: Duration,
}

impl PairBuilder {
    /// A pair of endpoints with seeded random sources (seeds 1 and 2).
    pub fn new(initiator: Config, acceptor: Config) -> Self {
        Self::with_seed(initiator, acceptor, 1)
    }

    /// A pair whose random sources are seeded from `seed`.
    pub fn with_seed(initiator: Config, acceptor: Config, seed: u64) -> Self {
        let endpoint =
            |config, seed| match Endpoint::with_random(config, Arc::new(SeededRandom::new(seed))) {
                Ok(e) => e,
                Err(e) => panic!("test config is invalid: {e}"),
            };
        Self::from_endpoints(
            endpoint(initiator, seed),
            endpoint(acceptor, seed.wrapping_add(0x5eed)),
        )
    }

    /// A pair made from existing endpoints (e.g. to share an acceptor's replay cache).
    pub fn from_endpoints(initiator: Endpoint, acceptor: Endpoint) -> Self {
        Self {
            initiator,
            acceptor,
            latency: Duration::from_millis(10),
            initiator_clock_offset_ms: 0,
            wall_start_ms: EPOCH_MS,
            server_name: None,
            expected_peer: None,
            horizon: DEFAULT_HORIZON,
        }
    }

    /// One-way latency of the link (default 10 ms).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// How far the initiator's wall clock is ahead of the acceptor's (negative: behind).
    pub fn initiator_clock_offset_ms(mut self, offset: i64) -> Self {
        self.initiator_clock_offset_ms = offset;
        self
    }

    /// The wall clock (unix ms) both sides start at (default [`EPOCH_MS`]); certificate
    /// validity is judged by it.
    pub fn wall_clock_ms(mut self, unix_ms: u64) -> Self {
        self.wall_start_ms = unix_ms;
        self
    }

    /// The name the initiator dials: TLS SNI and the `verify_hostname` check. By default
    /// the acceptor's node id, as a cluster dials a node by its name (so a certificate
    /// made by `TestCa::node(node_id)` passes the safe defaults), or `localhost` when the
    /// node id is not a DNS name.
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }

    /// The initiator dials expecting the node with this node id
    /// ([`Endpoint::connect_expecting`]).
    pub fn expect_peer(mut self, node_id: &str) -> Self {
        self.expected_peer = Some(node_id.to_owned());
        self
    }

    /// How far ahead of the current simulated time a timeout may be for [`Pair::step`]
    /// to move time to it (default [`DEFAULT_HORIZON`], one hour). A timeout further
    /// away counts as nothing left to happen, so [`Pair::run`] stops with the links
    /// joined rather than jumping to their certificates' expiry; use
    /// [`Pair::set_horizon`] (or a long horizon here) to reach such a deadline.
    pub fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// Creates both connections at the same simulated instant.
    pub fn build(self) -> Pair {
        let start = Instant::now();
        let server_name = self.server_name.clone().unwrap_or_else(|| {
            let node_id = &self.acceptor.config().node_id;
            match ServerName::try_from(node_id.as_str()) {
                Ok(ServerName::DnsName(_)) => node_id.clone(),
                _ => "localhost".to_owned(),
            }
        });
        let wall = |offset: i64| {
            let ms = self.wall_start_ms.saturating_add_signed(offset);
            UNIX_EPOCH + Duration::from_millis(ms)
        };
        let make = |e: &Endpoint, side: Side, offset| {
            let made = match side {
                Side::Initiator => e.connect_expecting(
                    &server_name,
                    self.expected_peer.as_deref(),
                    start,
                    wall(offset),
                ),
                Side::Acceptor => e.accept(start, wall(offset)),
            };
            match made {
                Ok(c) => c,
                Err(e) => panic!("the test connection could not be made: {e}"),
            }
        };
        Pair {
            conns: [
                make(
                    &self.initiator,
                    Side::Initiator,
                    self.initiator_clock_offset_ms,
                ),
                make(&self.acceptor, Side::Acceptor, 0),
            ],
            start,
            now: start,
            link: Link {
                latency: self.latency,
            },
            in_flight: [VecDeque::new(), VecDeque::new()],
            backlog: [BytesMut::new(), BytesMut::new()],
            events: [Vec::new(), Vec::new()],
            joined_at: [None, None],
            sent: [Vec::new(), Vec::new()],
            horizon: self.horizon,
        }
    }
}

fn idx(side: Side) -> usize {
    match side {
        Side::Initiator => 0,
        Side::Acceptor => 1,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Initiator => Side::Acceptor,
        Side::Acceptor => Side::Initiator,
    }
}

/// Two connected connections and the simulated link between them.
#[derive(Debug)]
pub struct Pair {
    conns: [Connection; 2],
    start: Instant,
    now: Instant,
    link: Link,
    /// Bytes on their way to side `i`, with their arrival time, oldest first.
    in_flight: [VecDeque<(Instant, Bytes)>; 2],
    /// Bytes delivered to side `i` that it has not consumed yet.
    backlog: [BytesMut; 2],
    events: [Vec<Event>; 2],
    joined_at: [Option<Instant>; 2],
    sent: [Vec<Bytes>; 2],
    /// Timeouts further than this past `now` are not waited for.
    horizon: Duration,
}

impl Pair {
    /// A pair with default settings; see [`PairBuilder`] for more.
    pub fn new(initiator: Config, acceptor: Config) -> Self {
        PairBuilder::new(initiator, acceptor).build()
    }

    /// Changes how far ahead [`Pair::step`] waits for a timeout (see
    /// [`PairBuilder::horizon`]).
    pub fn set_horizon(&mut self, horizon: Duration) {
        self.horizon = horizon;
    }

    /// One side's connection.
    pub fn conn(&mut self, side: Side) -> &mut Connection {
        &mut self.conns[idx(side)]
    }

    /// The simulated time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Simulated time since the pair was built.
    pub fn elapsed(&self) -> Duration {
        self.now.duration_since(self.start)
    }

    /// Every event one side has produced so far.
    pub fn events(&self, side: Side) -> &[Event] {
        &self.events[idx(side)]
    }

    /// The application frames one side has received, in order.
    pub fn frames(&self, side: Side) -> Vec<Bytes> {
        self.events(side)
            .iter()
            .filter_map(|e| match e {
                Event::Frame(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether one side has emitted `Joined`.
    pub fn joined(&self, side: Side) -> bool {
        self.joined_at[idx(side)].is_some()
    }

    /// Why one side closed, once it has.
    pub fn close_cause(&self, side: Side) -> Option<&CloseCause> {
        self.events(side).iter().find_map(|e| match e {
            Event::Closed(c) => Some(c),
            _ => None,
        })
    }

    /// Every chunk one side has written so far (the recorded traffic).
    pub fn sent(&self, side: Side) -> &[Bytes] {
        &self.sent[idx(side)]
    }

    /// Simulated round trips (2 × latency) from the start until one side joined.
    pub fn round_trips_to_joined(&self, side: Side) -> Option<f64> {
        let at = self.joined_at[idx(side)]?;
        let rtt = 2.0 * self.link.latency.as_secs_f64();
        Some(at.duration_since(self.start).as_secs_f64() / rtt)
    }

    /// Queues an application frame on one side.
    pub fn send(&mut self, from: Side, payload: impl Into<Bytes>) -> Result<(), SendError> {
        self.conns[idx(from)].send(payload.into())
    }

    /// Drains what one side wants to write, recording it. The bytes are not put on the
    /// link; pass them to [`Pair::deliver`] (possibly altered, split or delayed).
    pub fn transmit(&mut self, from: Side) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(chunk) = self.conns[idx(from)].poll_transmit() {
            self.sent[idx(from)].push(chunk.clone());
            out.push(chunk);
        }
        out
    }

    /// Hands bytes to one side as if read from its socket now, then drains its events.
    pub fn deliver(&mut self, to: Side, bytes: &[u8]) {
        let i = idx(to);
        self.backlog[i].extend_from_slice(bytes);
        self.pump(to);
    }

    /// Tells one side its peer closed the stream.
    pub fn deliver_eof(&mut self, to: Side) {
        self.conns[idx(to)].handle_eof();
        self.drain_events(to);
    }

    /// Offers the backlog to a side until it consumes all of it or stops consuming.
    fn pump(&mut self, to: Side) {
        let i = idx(to);
        loop {
            let n = self.conns[i].handle_input(&self.backlog[i], self.now);
            self.backlog[i].advance(n);
            self.drain_events(to);
            if n == 0 || self.backlog[i].is_empty() {
                break;
            }
        }
    }

    fn drain_events(&mut self, side: Side) {
        let i = idx(side);
        while let Some(event) = self.conns[i].poll_event() {
            if matches!(event, Event::Joined(_)) {
                self.joined_at[i] = Some(self.now);
            }
            self.events[i].push(event);
        }
    }

    /// Moves the simulation forward by one moment: puts every pending transmit on the
    /// link, advances time to the next arrival or timeout, and handles it. Returns
    /// `false` when nothing is left to happen: no bytes in flight and no timeout within
    /// the horizon ([`PairBuilder::horizon`]).
    pub fn step(&mut self) -> bool {
        for side in [Side::Initiator, Side::Acceptor] {
            // Events from commands given between steps (a local `close`, say).
            self.drain_events(side);
            let arrival = self.now + self.link.latency;
            for chunk in self.transmit(side) {
                self.in_flight[idx(other(side))].push_back((arrival, chunk));
            }
        }
        let next_arrival = self
            .in_flight
            .iter()
            .filter_map(|q| q.front().map(|(t, _)| *t))
            .min();
        let horizon = self.now + self.horizon;
        let next_timeout = self
            .conns
            .iter()
            .filter_map(Connection::poll_timeout)
            .filter(|t| *t <= horizon)
            .min();
        let Some(next) = [next_arrival, next_timeout].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(next);
        for side in [Side::Acceptor, Side::Initiator] {
            while self.in_flight[idx(side)]
                .front()
                .is_some_and(|(t, _)| *t <= self.now)
            {
                if let Some((_, chunk)) = self.in_flight[idx(side)].pop_front() {
                    self.deliver(side, &chunk);
                }
            }
        }
        for side in [Side::Initiator, Side::Acceptor] {
            self.conns[idx(side)].handle_timeout(self.now);
            self.drain_events(side);
        }
        true
    }

    /// Steps until nothing is left to happen within the horizon (at most `100_000`
    /// steps).
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
    }

    /// Steps until `done` holds or nothing is left to happen.
    pub fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..100_000 {
            if done(self) || !self.step() {
                return;
            }
        }
    }
}
