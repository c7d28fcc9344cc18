//! Property tests for whole links: two real connections, every byte between them split
//! into arbitrary chunks and the two directions interleaved arbitrarily (order within a
//! direction preserved, as TCP does), with and without a shared secret, with and without
//! TLS. They always join, deliver every frame in order both ways, and close gracefully.
//!
//! These cases move up to a few MiB each, so the default case count is small; raise it
//! with `PROPTEST_CASES=500 cargo test -p palisade-core --test prop_pair`.

mod common;

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use palisade_core::frame::{FrameKind, DEFAULT_MAX_FRAME};
use palisade_core::preface::PREFACE_LEN;
use palisade_core::tls::TlsConfig;
use palisade_core::{CloseCause, CloseReason, Config, SendError, Side};
use palisade_testkit::certs::TestCa;
use palisade_testkit::PairBuilder;
use proptest::prelude::*;

use common::*;

const DEFAULT_CASES: u32 = 64;

fn config() -> ProptestConfig {
    ProptestConfig {
        // Shrinking a multi-MiB case is slow; a few hundred steps find the small cases.
        max_shrink_iters: 512,
        ..proptest_config(regressions!("prop_pair"), DEFAULT_CASES)
    }
}

const MAX_PAYLOAD: usize = 100 * 1024;

/// One delivery: which direction moves, how many bytes at most, and whether the receiving
/// application polls its events right away.
#[derive(Debug, Clone, Copy)]
struct Op {
    to: Side,
    max: usize,
    poll_events: bool,
}

fn op(lazy: bool) -> impl Strategy<Value = Op> {
    (
        prop::sample::select(SIDES.to_vec()),
        chunk_len(),
        if lazy {
            prop::bool::weighted(0.3).boxed()
        } else {
            Just(true).boxed()
        },
    )
        .prop_map(|(to, max, poll_events)| Op {
            to,
            max,
            poll_events,
        })
}

/// Who closes the link once the frames are through.
#[derive(Debug, Clone, Copy)]
enum Closer {
    Initiator,
    Acceptor,
    /// Both call `close` as soon as their condition holds (they may cross on the wire).
    Both,
}

#[derive(Debug, Clone)]
struct Scenario {
    secret: Option<u8>,
    /// Mutual TLS under the frame stream.
    tls: bool,
    /// Payload sizes and tags, per side (index 0: initiator).
    frames: [Vec<(usize, u64)>; 2],
    ops: Vec<Op>,
    closer: Closer,
    /// Close as soon as this side's own frames are queued, without waiting for the peer
    /// to have received them (they must still arrive before the CLOSE).
    early_close: bool,
    send_buffer_limit: usize,
    recv_buffer_limit: usize,
    /// Each side's max_frame (index 0: initiator). Frames larger than the peer's are
    /// refused by `send` and never reach the wire.
    max_frame: [usize; 2],
    seed: u64,
}

fn frames() -> impl Strategy<Value = Vec<(usize, u64)>> {
    prop::collection::vec((payload_len(MAX_PAYLOAD), any::<u64>()), 0..=50)
}

fn max_frame() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => Just(DEFAULT_MAX_FRAME),
        1 => 1..=128 * 1024usize,
    ]
}

fn scenario(tight: bool) -> impl Strategy<Value = Scenario> {
    // A receive limit under PREFACE_LEN deadlocks the link (see
    // `receive_limits_under_ten_bytes_still_join`), so the tight buffers start there.
    let limits = if tight {
        (1..=64 * 1024usize, PREFACE_LEN..=64 * 1024usize).boxed()
    } else {
        Just((1024 * 1024, 1024 * 1024)).boxed()
    };
    (
        prop::option::of(any::<u8>()),
        [frames(), frames()],
        prop::collection::vec(op(tight), 1..=48),
        prop::sample::select(vec![Closer::Initiator, Closer::Acceptor, Closer::Both]),
        any::<bool>(),
        limits,
        [max_frame(), max_frame()],
        any::<u64>(),
    )
        .prop_map(
            |(secret, frames, ops, closer, early_close, (send, recv), max_frame, seed)| Scenario {
                secret,
                tls: false,
                frames,
                ops,
                closer,
                early_close,
                send_buffer_limit: send,
                recv_buffer_limit: recv,
                max_frame,
                seed,
            },
        )
}

fn closes(closer: Closer, side: Side) -> bool {
    matches!(
        (closer, side),
        (Closer::Both, _)
            | (Closer::Initiator, Side::Initiator)
            | (Closer::Acceptor, Side::Acceptor)
    )
}

/// TLS settings for the initiator and the acceptor, from one CA made once per run.
fn tls_configs() -> &'static [TlsConfig; 2] {
    static CONFIGS: OnceLock<[TlsConfig; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let ca = TestCa::new("prop CA");
        [ca.tls(&ca.node("initiator")), ca.tls(&ca.node("acceptor"))]
    })
}

fn with_tls(mut s: Scenario) -> Scenario {
    s.tls = true;
    s
}

/// Runs a scenario on a [`Duplex`] and checks everything the property promises.
fn run(s: &Scenario) -> Result<(), TestCaseError> {
    let make = |node: &str, i: usize| {
        let mut c = Config::new("prop", node);
        if s.tls {
            c = c.with_tls(tls_configs()[i].clone());
        }
        c.max_frame = s.max_frame[i];
        c.send_buffer_limit = s.send_buffer_limit;
        c.recv_buffer_limit = s.recv_buffer_limit;
        match s.secret {
            Some(b) => c.with_secret(secret(b)),
            None => c,
        }
    };
    let mut link = Duplex::new(make("initiator", 0), make("acceptor", 1), s.seed);
    let expected: [Vec<Bytes>; 2] = [0, 1].map(|i| {
        s.frames[i]
            .iter()
            .map(|&(len, tag)| payload(len, tag ^ i as u64))
            .collect()
    });
    let mut unsent: [VecDeque<Bytes>; 2] = [0, 1].map(|i| expected[i].iter().cloned().collect());
    // What each side's peer must receive: the frames within the peer's max_frame.
    let delivered: [Vec<Bytes>; 2] = [0, 1].map(|i| {
        expected[i]
            .iter()
            .filter(|f| f.len() <= s.max_frame[1 - i])
            .cloned()
            .collect()
    });
    let mut called_close = [false; 2];
    let total_bytes: usize = expected.iter().flatten().map(Bytes::len).sum();
    // Generous: every op moves at least one byte, and the join and close are short.
    let max_steps = 4 * (total_bytes + 10_000);
    let mut op_index = 0;
    let mut steps = 0;

    loop {
        steps += 1;
        prop_assert!(steps < max_steps, "no end after {} steps", steps);

        // The applications act on the events they have seen.
        for side in SIDES {
            let i = idx(side);
            let log = check_events("app", &link.nodes[i].events);
            let conn = &mut link.nodes[i].conn;
            if log.joined.is_some() && !conn.is_closed() {
                while let Some(frame) = unsent[i].front() {
                    // send_capacity is a promise: a frame that fits is not refused as Full.
                    let fits = frame.len() + 5 <= conn.send_capacity();
                    match conn.send(frame.clone()) {
                        Ok(()) => {
                            unsent[i].pop_front();
                        }
                        Err(SendError::Full(back)) => {
                            prop_assert_eq!(&back, frame, "Full hands the frame back");
                            prop_assert!(!fits, "Full although send_capacity had room");
                            prop_assert!(
                                conn.send_buffered() > 0,
                                "an empty buffer refused a frame"
                            );
                            break;
                        }
                        Err(SendError::TooLarge { len, max }) => {
                            prop_assert_eq!((len, max), (frame.len(), s.max_frame[1 - i]));
                            prop_assert!(len > max, "send refused a frame within max_frame");
                            unsent[i].pop_front();
                        }
                        Err(e) => {
                            return Err(TestCaseError::fail(format!("{side:?} send: {e}")));
                        }
                    }
                }
                let peer_got_all = link.nodes[1 - i].log("peer").frames.len() == delivered[i].len();
                let got_all = log.frames.len() == delivered[1 - i].len();
                if closes(s.closer, side)
                    && !called_close[i]
                    && unsent[i].is_empty()
                    && got_all
                    && (s.early_close || peer_got_all)
                {
                    link.nodes[i].conn.close(CloseReason::normal());
                    link.nodes[i].drain_events();
                    called_close[i] = true;
                }
            }
        }

        let moved = link.transmit();
        let waiting = link.pending_to(0) + link.pending_to(1);
        if waiting == 0 && moved == 0 {
            // Nothing in flight: poll whatever the lazy applications left queued, and
            // stop when that changes nothing either.
            let polled = link.nodes[0].drain_events() + link.nodes[1].drain_events();
            if polled == 0 {
                break; // quiescent: the checks below say whether that is the right end
            }
            continue;
        }

        let op = s.ops[op_index % s.ops.len()];
        op_index += 1;
        let mut to = idx(op.to);
        if link.pending_to(to) == 0 {
            to = 1 - to;
        }
        if link.wire[to].is_empty() {
            // Only the inbox holds bytes (a lazy node stopped taking input): let the
            // application poll, then offer them again.
            link.nodes[to].pump();
        } else {
            link.deliver(to, op.max, op.poll_events);
        }
    }

    // Both sides joined, with each other.
    let logs = [
        link.nodes[0].log("initiator"),
        link.nodes[1].log("acceptor"),
    ];
    let names = ["initiator", "acceptor"];
    for i in 0..2 {
        let peer = logs[i].joined.as_ref();
        prop_assert_eq!(peer.map(|p| p.node_id.as_str()), Some(names[1 - i]));
        prop_assert_eq!(
            peer.and_then(|p| p.key_id),
            s.secret.map(|b| secret(b).key_id())
        );
    }
    // Every frame, in order, both ways (compared by length and tag first for a readable
    // failure, then byte for byte).
    for i in 0..2 {
        let got = &logs[1 - i].frames;
        let lens = |v: &[Bytes]| v.iter().map(Bytes::len).collect::<Vec<_>>();
        prop_assert_eq!(
            lens(got),
            lens(&delivered[i]),
            "{} → {}",
            names[i],
            names[1 - i]
        );
        prop_assert!(
            got == &delivered[i],
            "payload bytes differ {} → {}",
            names[i],
            names[1 - i]
        );
    }
    // A graceful close on both sides, and nothing left to send.
    for i in 0..2 {
        let node = &link.nodes[i];
        prop_assert!(
            node.conn.is_closed() && node.conn.is_drained(),
            "{} not closed",
            names[i]
        );
        let want = if called_close[i] {
            CloseCause::Local(CloseReason::normal())
        } else {
            CloseCause::Peer(CloseReason::normal())
        };
        prop_assert_eq!(logs[i].closed.as_ref(), Some(&want), "{}", names[i]);
        prop_assert_eq!(node.conn.poll_timeout(), None);
    }
    // On the wire: preface, join message, the DATA frames, then one CLOSE from each side
    // that closed first (and nothing after it). With TLS the wire is ciphertext; the
    // frames above were checked as delivered.
    for i in (0..2).filter(|_| !s.tls) {
        let mut wire = link.nodes[i].wire();
        if s.secret.is_some() {
            wire.strip_tags_after_join();
        }
        wire.assert_well_formed(names[i]);
        let join = if i == 0 {
            FrameKind::Hello
        } else {
            FrameKind::Welcome
        };
        prop_assert_eq!(wire.frames.first().map(|f| f.0), Some(join));
        prop_assert!(
            wire.data() == delivered[i],
            "{}'s DATA frames on the wire",
            names[i]
        );
        let closes = wire.terminal_frames();
        prop_assert_eq!(closes.len(), usize::from(called_close[i]));
        if called_close[i] {
            prop_assert_eq!(wire.close_reason(), Some(CloseReason::normal()));
        }
    }
    // The sockets are then shut down: EOF after the close changes nothing.
    for node in &mut link.nodes {
        let before = node.events.len();
        node.eof();
        prop_assert_eq!(
            node.events.len(),
            before,
            "events after EOF on a closed link"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Default buffers, the application polls events after every read: any chunking and
    /// interleaving joins, delivers every frame in order both ways, and closes gracefully.
    #[test]
    fn chunked_interleaved_links_deliver_everything_in_order_and_close(s in scenario(false)) {
        run(&s)?;
    }

    /// Small send and receive buffers and an application that often leaves events
    /// queued, so `handle_input` takes only part of what it is offered and `send` reports
    /// the buffer full: still nothing is lost, duplicated or reordered, and nothing stalls.
    #[test]
    fn tight_buffers_and_lazy_polling_lose_nothing(s in scenario(true)) {
        run(&s)?;
    }

    /// The same over mutual TLS: TLS records split anywhere, directions interleaved.
    #[test]
    fn tls_links_deliver_everything_in_order_and_close(s in scenario(false).prop_map(with_tls)) {
        run(&s)?;
    }

    /// Over TLS with tight buffers and lazy polling: records decrypted ahead of the
    /// application still respect the window, and nothing is lost.
    #[test]
    fn tls_with_tight_buffers_loses_nothing(s in scenario(true).prop_map(with_tls)) {
        run(&s)?;
    }

    /// Config::validate accepts any recv_buffer_limit ≥ 1 and the docs promise "a frame
    /// in progress may always complete", so every valid limit must still join and carry
    /// frames.
    #[test]
    fn receive_limits_under_ten_bytes_still_join(
        s in (scenario(true), 1..PREFACE_LEN).prop_map(|(mut s, recv)| {
            s.recv_buffer_limit = recv;
            s
        }),
    ) {
        run(&s)?;
    }

    /// Through the testkit `Pair` (simulated time and latency): the link joins in 0.5
    /// round trips (acceptor) and 1 (initiator), frames queued on both sides arrive in
    /// order, and a close by either side ends both.
    #[test]
    fn the_testkit_pair_joins_delivers_and_closes(
        with_secret in any::<bool>(),
        latency_ms in 1..=500u64,
        frames in [frames(), frames()],
        closer in prop::sample::select(SIDES.to_vec()),
        seed in any::<u64>(),
    ) {
        let make = |node: &str| {
            let c = Config::new("prop", node);
            if with_secret { c.with_secret(secret(9)) } else { c }
        };
        let mut pair = PairBuilder::with_seed(make("i"), make("a"), seed)
            .latency(Duration::from_millis(latency_ms))
            .build();
        pair.run_until(|p| p.joined(Side::Initiator) && p.joined(Side::Acceptor));
        let rtt = |side| pair.round_trips_to_joined(side).unwrap_or(f64::NAN);
        prop_assert!((rtt(Side::Acceptor) - 0.5).abs() < 1e-9, "acceptor joined after {} RTT", rtt(Side::Acceptor));
        prop_assert!((rtt(Side::Initiator) - 1.0).abs() < 1e-9, "initiator joined after {} RTT", rtt(Side::Initiator));

        let expected: [Vec<Bytes>; 2] = [0, 1].map(|i| {
            frames[i].iter().map(|&(len, tag)| payload(len, tag ^ i as u64)).collect()
        });
        for side in SIDES {
            for f in &expected[idx(side)] {
                let mut f = f.clone();
                loop {
                    match pair.send(side, f) {
                        Ok(()) => break,
                        Err(SendError::Full(back)) => {
                            f = back;
                            pair.step();
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("send: {e}"))),
                    }
                }
            }
        }
        pair.run();
        prop_assert!(pair.frames(Side::Acceptor) == expected[0], "initiator → acceptor");
        prop_assert!(pair.frames(Side::Initiator) == expected[1], "acceptor → initiator");
        pair.conn(closer).close(CloseReason::normal());
        pair.run();
        prop_assert_eq!(pair.close_cause(closer), Some(&CloseCause::Local(CloseReason::normal())));
        prop_assert_eq!(pair.close_cause(other(closer)), Some(&CloseCause::Peer(CloseReason::normal())));
        for side in SIDES {
            prop_assert!(pair.conn(side).is_drained());
        }
    }
}
