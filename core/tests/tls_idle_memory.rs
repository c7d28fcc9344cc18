//! An idle TLS link gives back the buffers its traffic grew: after 64 KiB each way, once
//! the frames received are dropped, each side holds at most 24 KiB of heap (the send
//! queue, the receive buffer and the event queue let go of what a burst grew).
//!
//! Heap bytes are counted by dhat's allocator, which counts every thread: this binary
//! holds one test only, so nothing else allocates while it measures.

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use palisade_core::{Config, Connection, Endpoint, Event, SharedSecret};
use palisade_testkit::certs::TestCa;
use palisade_testkit::EPOCH_MS;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const LINKS: usize = 40;
/// Socket reads of an odd size, so records and frames straddle reads.
const PIECE: usize = 7000;
const TRAFFIC: usize = 64 * 1024;
const IDLE_TARGET_PER_SIDE: usize = 24 * 1024;

fn heap() -> usize {
    dhat::HeapStats::get().curr_bytes
}

/// Hands everything `from` has to send to `to`, dropping received frames; returns
/// (whether anything moved, frame bytes received).
fn deliver(from: &mut Connection, to: &mut Connection, now: Instant) -> (bool, usize) {
    let (mut moved, mut received) = (false, 0);
    while let Some(bytes) = from.poll_transmit() {
        moved = true;
        for piece in bytes.chunks(PIECE) {
            assert_eq!(to.handle_input(piece, now), piece.len());
            while let Some(event) = to.poll_event() {
                match event {
                    Event::Frame(f) => received += f.len(),
                    Event::Joined(_) | Event::Rejoined(_) => {}
                    Event::Closed(cause) => panic!("closed: {cause}"),
                }
            }
        }
    }
    (moved, received)
}

/// Moves bytes both ways until both sides are quiet; returns the frame bytes received.
fn pump(a: &mut Connection, b: &mut Connection, now: Instant) -> usize {
    let mut received = 0;
    loop {
        let (ab, r1) = deliver(a, b, now);
        let (ba, r2) = deliver(b, a, now);
        received += r1 + r2;
        if !ab && !ba {
            return received;
        }
    }
}

#[test]
fn idle_tls_links_give_back_what_traffic_grew() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let ca = TestCa::new("cluster CA");
    let endpoint = |name: &str| {
        let config = Config::new("prod", name)
            .with_secret(SharedSecret::new(vec![7; 32]).unwrap())
            .with_tls(ca.tls(&ca.node(name)));
        Endpoint::new(config).unwrap()
    };
    let (ea, eb) = (endpoint("node-a"), endpoint("node-b"));
    let wall = UNIX_EPOCH + Duration::from_millis(EPOCH_MS);
    let now = Instant::now();
    let payload = Bytes::from(vec![0x5a; TRAFFIC]);

    let before = heap();
    let mut links = Vec::new();
    for _ in 0..LINKS {
        let mut a = ea.connect("node-b", now, wall).unwrap();
        let mut b = eb.accept(now, wall).unwrap();
        pump(&mut a, &mut b, now);
        assert!(a.is_joined() && b.is_joined());
        a.send(payload.clone()).unwrap();
        b.send(payload.clone()).unwrap();
        assert_eq!(pump(&mut a, &mut b, now), 2 * TRAFFIC);
        links.push((a, b));
    }
    let idle = heap() - before;
    let per_side = idle / (2 * LINKS);
    assert!(
        per_side <= IDLE_TARGET_PER_SIDE,
        "idle after traffic: {per_side} bytes per side"
    );
    // The count is honest: it sees a received frame while the application holds it,
    // and sees it go when the application drops it.
    let (a, b) = links.first_mut().unwrap();
    let idle_heap = heap();
    a.send(payload.clone()).unwrap();
    while let Some(bytes) = a.poll_transmit() {
        assert_eq!(b.handle_input(&bytes, now), bytes.len());
    }
    let frame = b.poll_event();
    assert!(matches!(&frame, Some(Event::Frame(f)) if f.len() == TRAFFIC));
    assert!(
        heap() >= idle_heap + TRAFFIC,
        "the held frame is not counted"
    );
    drop(frame);
    assert!(
        heap() <= idle_heap + 1024,
        "{} bytes kept after the frame was dropped",
        heap() - idle_heap
    );

    // The links still work with their buffers given back.
    for (a, b) in &mut links {
        a.send(Bytes::from_static(b"after")).unwrap();
        assert_eq!(pump(a, b, now), 5);
    }
}
