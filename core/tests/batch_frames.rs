//! The batch APIs, `Connection::send_frames`, `Connection::poll_frames` and
//! `Connection::poll_frame_run`, against the single-frame ones (`send`, `poll_event`):
//! the same frames arrive, each its own payload, in the same order, over plaintext, authenticated plaintext and TLS links,
//! with send and receive windows small enough to split batches; and the errors come
//! as `send` reports them.
//!
//! Run more cases with `PROPTEST_CASES=1000 cargo test -p palisade-core --test batch_frames`.

mod common;

use std::sync::OnceLock;

use bytes::{Buf, Bytes, BytesMut};
use palisade_core::tls::TlsConfig;
use palisade_core::{CloseCause, CloseReason, Config, Event, SendError, Side};
use palisade_testkit::certs::TestCa;
use proptest::prelude::*;

use common::*;

const DEFAULT_CASES: u32 = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    /// Plaintext with the secret: every frame carries a tag (the per-frame path).
    Authenticated,
    Tls,
}

fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::new("batch CA"))
}

fn tls(name: &str) -> TlsConfig {
    ca().tls(&ca().node(name))
}

fn configs(mode: Mode, send_limit: usize, recv_limit: usize) -> (Config, Config) {
    let make = |name: &str| {
        let mut c = Config::new("batch", name);
        c.send_buffer_limit = send_limit;
        c.recv_buffer_limit = recv_limit;
        match mode {
            Mode::Plain => c,
            Mode::Authenticated => c.with_secret(secret(3)),
            Mode::Tls => c.with_secret(secret(3)).with_tls(tls(name)),
        }
    };
    (make("localhost"), make("node-a"))
}

/// A joined pair of connections with `mode` and the given windows.
fn joined(mode: Mode, send_limit: usize, recv_limit: usize) -> Duplex {
    let (i, a) = configs(mode, send_limit, recv_limit);
    let mut d = Duplex::new(i, a, 15);
    for _ in 0..20 {
        d.transmit();
        for to in 0..2 {
            d.deliver(to, usize::MAX, true);
        }
        if d.nodes.iter().all(|n| n.conn.is_joined()) {
            return d;
        }
    }
    panic!("the pair did not join: {:?}", d.nodes[1].conn.close_cause());
}

/// How the acceptor takes frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// One `poll_event` each.
    Events,
    /// `poll_frames`, then `poll_event` for the rest.
    Frames,
    /// `poll_frame_run`, every other time after one frame taken with `poll_event` (so
    /// runs are also taken after the single-frame path took their first frame).
    Runs,
}

/// Takes every frame `a` has ready into `got` the way `take` says; the receive window
/// is checked to open as frames are taken.
fn take_ready(a: &mut palisade_core::Connection, take: Take, got: &mut Vec<Bytes>) {
    match take {
        Take::Events => {}
        Take::Frames => while a.poll_frames(got) > 0 {},
        Take::Runs => loop {
            if got.len() % 2 == 1 {
                match a.poll_event() {
                    Some(Event::Frame(f)) => got.push(f),
                    Some(other) => panic!("unexpected event {other:?}"),
                    None => break,
                }
            }
            let Some(run) = a.poll_frame_run() else {
                break;
            };
            assert!(!run.is_empty());
            let payloads: Vec<&[u8]> = run.payloads().collect();
            let frames: Vec<Bytes> = run.frames().collect();
            assert_eq!(payloads.len(), run.len());
            assert_eq!(
                run.payload_len(),
                frames.iter().map(Bytes::len).sum::<usize>()
            );
            assert!(payloads.iter().zip(&frames).all(|(p, f)| p == f));
            got.extend(frames);
        },
    }
    while let Some(event) = a.poll_event() {
        match event {
            Event::Frame(f) => got.push(f),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// Sends `frames` from the initiator (in batches of `batch` with `send_frames`, or one
/// `send` each when `batch` is 0) and delivers everything to the acceptor in reads of
/// `read` bytes, taking frames as `take` says.
/// Returns the frames received and the initiator's bytes on the wire after the join.
fn carry(
    d: &mut Duplex,
    frames: &[Bytes],
    batch: usize,
    read: usize,
    take: Take,
) -> (Vec<Bytes>, BytesMut) {
    let mut wire = BytesMut::new();
    let mut got = Vec::new();
    let mut sent = 0;
    let mut rounds = 0;
    // Tiny reads of a large batch would take millions of rounds: reads grow with the
    // batch so that every case ends within the round budget below (small batches keep
    // their 1-byte reads).
    let total: usize = frames.iter().map(|f| f.len() + 64).sum();
    let read = read.max(total / 20_000);
    while sent < frames.len() || d.nodes[0].conn.send_buffered() > 0 || !wire.is_empty() {
        rounds += 1;
        assert!(rounds < 100_000, "no progress");
        let i = &mut d.nodes[0].conn;
        if batch > 0 {
            let end = frames.len().min(sent + batch);
            if let Some(rest) = frames.get(sent..end).filter(|r| !r.is_empty()) {
                match i.send_frames(rest) {
                    Ok(n) => {
                        assert!(n > 0, "Ok(0) for a non-empty batch");
                        sent += n;
                    }
                    Err(SendError::Full(f)) => assert_eq!(f, rest[0]),
                    Err(e) => panic!("send_frames: {e}"),
                }
            }
        } else if let Some(f) = frames.get(sent) {
            match i.send(f.clone()) {
                Ok(()) => sent += 1,
                Err(SendError::Full(_)) => {}
                Err(e) => panic!("send: {e}"),
            }
        }
        while let Some(out) = d.nodes[0].conn.poll_transmit() {
            wire.extend_from_slice(&out);
            d.nodes[0].sent.extend_from_slice(&out);
        }
        // One read, offered until taken, frames drained between offers.
        let mut chunk = wire.split_to(read.min(wire.len()));
        let a = &mut d.nodes[1].conn;
        loop {
            let n = a.handle_input(&chunk, d.nodes[1].now);
            chunk.advance(n);
            let before = got.len();
            take_ready(a, take, &mut got);
            if chunk.is_empty() {
                break;
            }
            assert!(
                n > 0 || got.len() > before,
                "the acceptor stopped taking input"
            );
        }
    }
    (got, d.nodes[0].sent.clone())
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        4 => Just(Mode::Plain),
        2 => Just(Mode::Authenticated),
        1 => Just(Mode::Tls),
    ]
}

/// Mostly small frames (the batch path's reason to exist), some empty, some large
/// enough to be queued by reference.
fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![
            6 => 0usize..200,
            3 => 200usize..3000,
            1 => 16 * 1024usize..20 * 1024,
        ],
        0..120,
    )
}

proptest! {
    #![proptest_config(proptest_config(regressions!("batch_frames"), DEFAULT_CASES))]

    #[test]
    fn batches_deliver_the_same_frames_in_the_same_order_as_single_frames(
        mode in mode(),
        sizes in sizes(),
        batch in 1usize..40,
        read in prop_oneof![1usize..64, 64usize..5000, Just(usize::MAX)],
        send_limit in 1024usize..64 * 1024,
        recv_limit in 1usize..32 * 1024,
    ) {
        let frames: Vec<Bytes> =
            sizes.iter().enumerate().map(|(k, &len)| payload(len, k as u64)).collect();
        let mut single = joined(mode, send_limit, recv_limit);
        let mut batched = joined(mode, send_limit, recv_limit);
        let mut runs = joined(mode, send_limit, recv_limit);
        let (one, wire_one) = carry(&mut single, &frames, 0, read, Take::Events);
        let (many, wire_many) = carry(&mut batched, &frames, batch, read, Take::Frames);
        let (in_runs, _) = carry(&mut runs, &frames, batch, read, Take::Runs);
        prop_assert_eq!(&one, &frames);
        prop_assert_eq!(&many, &frames);
        prop_assert_eq!(&in_runs, &frames);
        if mode != Mode::Tls {
            // The frame stream itself is the same bytes (TLS records differ by nonce).
            prop_assert_eq!(wire_one, wire_many);
        }
    }
}

#[test]
fn send_frames_reports_what_send_would_for_the_first_frame_and_queues_a_prefix() {
    let (i, a) = configs(Mode::Plain, 1000, 1 << 20);
    let mut d = Duplex::new(i, a, 1);
    let small = Bytes::from(vec![1; 400]);
    assert_eq!(
        d.nodes[0].conn.send_frames(std::slice::from_ref(&small)),
        Err(SendError::NotJoined)
    );
    drop(d);

    let mut d = joined(Mode::Plain, 1000, 1 << 20);
    let i = &mut d.nodes[0].conn;
    assert_eq!(i.send_frames(&[]), Ok(0));
    let max = i.peer().map(|p| p.max_frame).unwrap_or_default();
    let huge = Bytes::from(vec![0; max + 1]);
    assert_eq!(
        i.send_frames(&[huge, small.clone()]),
        Err(SendError::TooLarge { len: max + 1, max })
    );
    // 405 bytes a frame under a 1000-byte limit: two fit, the third waits.
    let batch = vec![small.clone(); 3];
    assert_eq!(i.send_frames(&batch), Ok(2));
    assert_eq!(i.send_buffered(), 2 * 405);
    assert_eq!(
        i.send_frames(&batch[2..]),
        Err(SendError::Full(small.clone()))
    );
    // A frame always fits an empty queue, as with `send`.
    while i.poll_transmit().is_some() {}
    let big = Bytes::from(vec![2; 5000]);
    assert_eq!(i.send_frames(&[big.clone(), big]), Ok(1));

    i.close(CloseReason::default());
    assert_eq!(i.send_frames(&batch), Err(SendError::Closed));
}

#[test]
fn poll_frames_leaves_the_close_that_follows_the_frames_to_poll_event() {
    let mut d = joined(Mode::Tls, 1 << 20, 1 << 20);
    let frames: Vec<Bytes> = (0..10).map(|k| payload(100 + k, k as u64)).collect();
    assert_eq!(d.nodes[0].conn.send_frames(&frames), Ok(10));
    d.nodes[0].conn.close(CloseReason::default());
    let mut wire = BytesMut::new();
    while let Some(out) = d.nodes[0].conn.poll_transmit() {
        wire.extend_from_slice(&out);
    }
    let a = &mut d.nodes[1].conn;
    assert_eq!(a.handle_input(&wire, d.nodes[1].now), wire.len());
    let mut got = Vec::new();
    assert_eq!(a.poll_frames(&mut got), 10);
    assert_eq!(got, frames);
    assert_eq!(a.poll_frames(&mut got), 0, "the close is not a frame");
    assert!(matches!(
        a.poll_event(),
        Some(Event::Closed(CloseCause::Peer(_)))
    ));
    assert_eq!(a.poll_event(), None);
}

#[test]
fn a_run_shares_one_buffer_and_gives_its_bytes_back_to_the_window_when_taken() {
    // A window of 3 frames of 100 bytes (105 on the wire each).
    let mut d = joined(Mode::Plain, 1 << 20, 315);
    let frames: Vec<Bytes> = (0..6).map(|k| payload(100, k)).collect();
    assert_eq!(d.nodes[0].conn.send_frames(&frames), Ok(6));
    let mut wire = BytesMut::new();
    while let Some(out) = d.nodes[0].conn.poll_transmit() {
        wire.extend_from_slice(&out);
    }
    let a = &mut d.nodes[1].conn;
    let took = a.handle_input(&wire, d.nodes[1].now);
    assert_eq!(took, 315, "the window holds three frames");
    assert_eq!(
        a.handle_input(&wire[took..], d.nodes[1].now),
        0,
        "and no more"
    );
    let run = a.poll_frame_run().expect("a run");
    assert_eq!((run.len(), run.payload_len()), (3, 300));
    let got: Vec<Bytes> = run.frames().collect();
    assert_eq!(got, frames[..3]);
    // One buffer: each payload starts 105 bytes after the one before.
    let starts: Vec<usize> = got.iter().map(|f| f.as_ptr() as usize).collect();
    assert!(starts.windows(2).all(|w| w[1] == w[0] + 105), "{starts:?}");
    assert!(a.poll_frame_run().is_none());
    // Taking the run opened the window for the rest.
    assert_eq!(a.handle_input(&wire[took..], d.nodes[1].now), 315);
    let rest = a.poll_frame_run().expect("the rest");
    assert_eq!(rest.frames().collect::<Vec<_>>(), frames[3..]);
}

#[test]
fn a_whole_data_frame_over_max_frame_is_refused_on_the_batch_path_too() {
    let (i, mut a) = configs(Mode::Plain, 1 << 20, 1 << 20);
    a.max_frame = 64;
    let mut d = Duplex::new(i, a, 2);
    for _ in 0..10 {
        d.transmit();
        for to in 0..2 {
            d.deliver(to, usize::MAX, true);
        }
    }
    assert!(d.nodes[1].conn.is_joined());
    // A frame within the limit, then a whole one past it, in one read.
    let mut bytes = BytesMut::new();
    bytes.extend_from_slice(&[0x10, 0, 0, 0, 2, b'o', b'k']);
    bytes.extend_from_slice(&[0x10, 0, 0, 0, 65]);
    bytes.extend_from_slice(&[0; 65]);
    let a = &mut d.nodes[1].conn;
    a.handle_input(&bytes, d.nodes[1].now);
    let mut got = Vec::new();
    assert_eq!(a.poll_frames(&mut got), 1);
    assert_eq!(&got[0][..], b"ok");
    match a.poll_event() {
        Some(Event::Closed(CloseCause::Error(e))) => {
            assert!(e.to_string().contains("max_frame"), "{e}")
        }
        other => panic!("expected a close for the oversized frame, got {other:?}"),
    }
    assert_eq!(a.side(), Side::Acceptor);
}
