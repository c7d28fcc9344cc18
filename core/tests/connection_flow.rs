//! Application frames on a joined link: the rules `send` enforces, the send buffer, the
//! receive window, and the graceful close.

mod conn_support;

use bytes::Bytes;
use conn_support::*;
use palisade_core::frame::FrameKind;
use palisade_core::{CloseCause, CloseCode, CloseReason, Config, Event, SendError};
use palisade_testkit::PairBuilder;

fn with(mut c: Config, edit: impl FnOnce(&mut Config)) -> Config {
    edit(&mut c);
    c
}

// ----- 7. send rules -----

#[test]
fn send_before_the_join_is_refused_with_not_joined_and_queues_nothing() {
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    for side in [I, A] {
        assert_eq!(pair.send(side, &b"early"[..]), Err(SendError::NotJoined));
        assert_eq!(pair.conn(side).send_capacity(), 0);
    }
    // After one step the acceptor has joined (it sent WELCOME); the initiator has not.
    pair.step();
    assert!(pair.joined(A) && !pair.joined(I));
    assert_eq!(pair.send(I, &b"early"[..]), Err(SendError::NotJoined));
    assert_eq!(pair.send(A, &b"right after WELCOME"[..]), Ok(()));
    pair.run();
    assert_eq!(
        kinds(&parse_stream(&concat(pair.sent(I)))),
        [FrameKind::Hello],
        "the refused sends left nothing on the wire"
    );
    assert_eq!(pair.frames(I), [Bytes::from_static(b"right after WELCOME")]);
    assert!(pair.frames(A).is_empty());
    assert_eq!(
        SendError::NotJoined.to_string(),
        "the link has not joined yet"
    );
}

#[test]
fn send_over_the_peers_max_frame_is_too_large_and_the_limit_itself_is_fine() {
    let mut pair = joined_pair(
        with(plain("node-a"), |c| c.max_frame = 500),
        with(plain("node-b"), |c| c.max_frame = 1000),
    );
    // Each side is held to the other's announced limit.
    assert_eq!(
        pair.send(I, vec![1u8; 1001]),
        Err(SendError::TooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(
        pair.send(A, vec![2u8; 501]),
        Err(SendError::TooLarge { len: 501, max: 500 })
    );
    assert_eq!(pair.conn(I).send_buffered(), 0);
    assert_eq!(pair.conn(A).send_buffered(), 0);
    assert_eq!(pair.send(I, vec![1u8; 1000]), Ok(()));
    assert_eq!(pair.send(A, vec![2u8; 500]), Ok(()));
    pair.run();
    assert_eq!(pair.frames(A), [Bytes::from(vec![1u8; 1000])]);
    assert_eq!(pair.frames(I), [Bytes::from(vec![2u8; 500])]);
    assert!(pair.conn(I).is_joined() && pair.conn(A).is_joined());
    assert_eq!(
        SendError::TooLarge {
            len: 1001,
            max: 1000
        }
        .to_string(),
        "a 1001-byte frame exceeds the peer's max_frame of 1000 bytes; split it or raise max_frame on the peer"
    );
}

#[test]
fn a_full_send_buffer_hands_the_very_same_bytes_back() {
    let mut pair = joined_pair(
        plain("node-a"),
        with(plain("node-b"), |c| c.send_buffer_limit = 100),
    );
    let conn = pair.conn(A);
    assert_eq!(conn.send_capacity(), 100);
    conn.send(Bytes::from(vec![1u8; 60])).unwrap();
    assert_eq!((conn.send_buffered(), conn.send_capacity()), (65, 35));

    // 31 bytes + header = 36 > 35: refused, and the caller gets its own buffer back.
    let refused = Bytes::from(vec![2u8; 31]);
    match conn.send(refused.clone()) {
        Err(SendError::Full(back)) => {
            assert_eq!(back, refused);
            assert_eq!(back.as_ptr(), refused.as_ptr(), "not a copy");
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(conn.send_buffered(), 65, "nothing queued by the refusal");

    // 30 bytes + header = 35 fits exactly.
    conn.send(Bytes::from(vec![3u8; 30])).unwrap();
    assert_eq!((conn.send_buffered(), conn.send_capacity()), (100, 0));
    assert_eq!(
        conn.send(Bytes::new()),
        Err(SendError::Full(Bytes::new())),
        "even an empty frame needs its header"
    );

    let out = pair.transmit(A);
    assert_eq!(concat(&out).len(), 100);
    assert_eq!(pair.conn(A).send_capacity(), 100, "capacity is back");
    assert_eq!(pair.send(A, refused.clone()), Ok(()));
    pair.deliver(I, &concat(&out));
    pair.run();
    assert_eq!(
        pair.frames(I),
        [
            Bytes::from(vec![1u8; 60]),
            Bytes::from(vec![3u8; 30]),
            refused
        ]
    );
}

#[test]
fn a_frame_larger_than_the_send_buffer_fits_into_an_empty_buffer_only() {
    let mut pair = joined_pair(
        plain("node-a"),
        with(plain("node-b"), |c| c.send_buffer_limit = 100),
    );
    let conn = pair.conn(A);
    conn.send(Bytes::from(vec![4u8; 500])).unwrap();
    assert_eq!((conn.send_buffered(), conn.send_capacity()), (505, 0));
    assert!(matches!(
        conn.send(Bytes::from_static(b"x")),
        Err(SendError::Full(b)) if b == "x"
    ));
    drop(pair.transmit(A));
    assert_eq!(pair.conn(A).send_capacity(), 100);
    assert_eq!(pair.send(A, &b"x"[..]), Ok(()));
}

#[test]
fn send_capacity_falls_by_each_frame_and_rises_by_each_chunk_transmitted() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let limit = 1024 * 1024;
    assert_eq!(pair.conn(A).send_capacity(), limit);
    // Large payloads (>= 16 KiB) are queued by reference: header and payload leave as
    // chunks of their own, the payload chunk being the caller's buffer.
    let payloads: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 20_000])).collect();
    for (n, p) in payloads.iter().enumerate() {
        pair.send(A, p.clone()).unwrap();
        assert_eq!(pair.conn(A).send_capacity(), limit - (n + 1) * 20_005);
    }
    let mut capacity = pair.conn(A).send_capacity();
    let mut chunks = Vec::new();
    while let Some(chunk) = pair.conn(A).poll_transmit() {
        capacity += chunk.len();
        assert_eq!(pair.conn(A).send_capacity(), capacity);
        chunks.push(chunk);
    }
    assert_eq!(capacity, limit);
    assert_eq!(
        chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
        [5, 20_000, 5, 20_000, 5, 20_000]
    );
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(
            chunks[2 * i + 1].as_ptr(),
            p.as_ptr(),
            "payload {i} not copied"
        );
    }
    pair.deliver(I, &concat(&chunks));
    assert_eq!(pair.frames(I), payloads);
}

#[test]
fn send_after_a_close_is_refused_with_closed_on_both_sides() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    pair.conn(A).close(CloseReason::normal());
    assert_eq!(pair.send(A, &b"x"[..]), Err(SendError::Closed));
    assert_eq!(pair.conn(A).send_capacity(), 0);
    pair.run();
    assert_eq!(pair.send(I, &b"x"[..]), Err(SendError::Closed));
    assert_eq!(pair.conn(I).send_capacity(), 0);
    assert_eq!(SendError::Closed.to_string(), "the link is closed");
}

// ----- 8. receive backpressure -----

const WINDOW: usize = 1024;

fn data_stream(count: u8, len: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| frame(FrameKind::Data, &vec![i; len]))
        .collect()
}

#[test]
fn handle_input_stops_at_the_receive_window_while_events_are_not_polled() {
    let mut pair = joined_pair(
        plain("node-a"),
        with(plain("node-b"), |c| c.recv_buffer_limit = WINDOW),
    );
    let now = pair.now();
    let stream = data_stream(10, 300); // 10 frames of 305 bytes
    let conn = pair.conn(A);

    // Window 1024: three whole frames (915 bytes) and 109 bytes of the fourth.
    assert_eq!(conn.handle_input(&stream, now), 1024);
    // 900 payload bytes wait as events plus 109 in the buffer: 15 bytes of window left,
    // but the frame whose header is in may always complete: 196 more bytes.
    assert_eq!(conn.handle_input(&stream[1024..], now), 196);
    // Now full (1200 bytes of unpolled frames); nothing more is taken, however often asked.
    for _ in 0..3 {
        assert_eq!(conn.handle_input(&stream[1220..], now), 0);
    }
    let mut got = Vec::new();
    while let Some(e) = conn.poll_event() {
        got.push(e);
    }
    assert_eq!(
        got,
        (0..4u8)
            .map(|i| Event::Frame(Bytes::from(vec![i; 300])))
            .collect::<Vec<_>>()
    );
    // Polling reopens the window.
    assert_eq!(conn.handle_input(&stream[1220..], now), 1024);
}

#[test]
fn buffered_input_never_exceeds_the_window_plus_one_frame_whatever_the_chunking() {
    const FRAME: usize = 305;
    let stream = data_stream(40, 300);
    for chunk in [1usize, 7, 300, 305, 1000, 5000] {
        let mut pair = joined_pair(
            plain("node-a"),
            with(plain("node-b"), |c| c.recv_buffer_limit = WINDOW),
        );
        let now = pair.now();
        let conn = pair.conn(A);
        let (mut offset, mut polled) = (0usize, Vec::new());
        while offset < stream.len() {
            // Offer input until the connection stops taking it, without polling events.
            loop {
                let end = (offset + chunk).min(stream.len());
                let n = conn.handle_input(&stream[offset..end], now);
                offset += n;
                let buffered = offset - polled.len() * FRAME;
                assert!(
                    buffered <= WINDOW + FRAME,
                    "chunk {chunk}: {buffered} bytes held unpolled"
                );
                if n == 0 || offset == stream.len() {
                    break;
                }
            }
            let before = polled.len();
            while let Some(e) = conn.poll_event() {
                polled.push(e);
            }
            assert!(
                polled.len() > before || offset == stream.len(),
                "chunk {chunk}: stalled at {offset}"
            );
        }
        assert_eq!(polled.len(), 40, "chunk {chunk}");
        for (i, e) in polled.iter().enumerate() {
            assert_eq!(e, &Event::Frame(Bytes::from(vec![i as u8; 300])));
        }
    }
}

/// The driver's contract: when `handle_input` takes fewer bytes than offered, an event
/// is waiting, so "poll the events, then offer the rest" always moves on. It once broke
/// when the window filled exactly inside a frame's body (a frame of window size into an
/// empty buffer): the rest of that frame was welcome, yet the call returned short with
/// nothing to poll, and a socket loop waiting for the application stalled for good.
#[test]
fn a_short_take_always_leaves_an_event_to_poll() {
    for payload in [
        WINDOW - 5,
        WINDOW - 1,
        WINDOW,
        WINDOW + 1,
        WINDOW + 100,
        300,
    ] {
        for chunk in [usize::MAX, 2 * WINDOW, WINDOW + 5, 1000] {
            let mut pair = joined_pair(
                plain("node-a"),
                with(plain("node-b"), |c| c.recv_buffer_limit = WINDOW),
            );
            let now = pair.now();
            let stream: Vec<u8> = (0..6u8)
                .flat_map(|i| frame(FrameKind::Data, &vec![i; payload]))
                .collect();
            let conn = pair.conn(A);
            let (mut offset, mut frames) = (0, 0);
            while offset < stream.len() {
                let end = offset.saturating_add(chunk).min(stream.len());
                let n = conn.handle_input(&stream[offset..end], now);
                offset += n;
                if offset < end {
                    let event = conn.poll_event();
                    assert!(
                        matches!(event, Some(Event::Frame(_))),
                        "payload {payload}, chunk {chunk}: {n} of {} bytes taken at {offset} \
                         and {event:?} to poll",
                        end - (offset - n)
                    );
                    frames += 1;
                }
            }
            while let Some(Event::Frame(_)) = conn.poll_event() {
                frames += 1;
            }
            assert_eq!(frames, 6, "payload {payload}, chunk {chunk}");
        }
    }
}

/// With TLS one read may produce more than the room it was given (a whole record), and
/// what it brings may include the next frame's header, whose frame is then welcome too:
/// a call that took on until no more was welcome chained through every frame offered.
/// One call takes at most the window, one frame and one record; a short take leaves an
/// event to poll, and polling moves the rest along.
#[test]
fn one_tls_input_takes_at_most_the_window_one_frame_and_one_record() {
    const PAYLOAD: usize = 4000;
    const FRAMES: usize = 40;
    let ca = palisade_testkit::certs::TestCa::new("flow CA");
    let tls = |name: &str| ca.tls(&ca.node(name));
    let mut pair = joined_pair(
        plain("node-a").with_tls(tls("node-a")),
        with(plain("node-b").with_tls(tls("node-b")), |c| {
            c.recv_buffer_limit = WINDOW
        }),
    );
    let now = pair.now();
    for i in 0..FRAMES {
        pair.send(I, vec![i as u8; PAYLOAD]).unwrap();
    }
    let wire = concat(&pair.transmit(I));
    let conn = pair.conn(A);
    let mut offset = conn.handle_input(&wire, now);
    assert!(
        offset < wire.len(),
        "one call took all {} bytes",
        wire.len()
    );
    let mut held = 0;
    while let Some(Event::Frame(f)) = conn.poll_event() {
        held += f.len();
    }
    assert!(
        held <= WINDOW + PAYLOAD + 16 * 1024,
        "{held} bytes of {} taken in one call",
        FRAMES * PAYLOAD
    );
    // Polling moves the rest along: every frame arrives.
    let mut frames = held / PAYLOAD;
    while offset < wire.len() {
        let n = conn.handle_input(&wire[offset..], now);
        offset += n;
        let mut polled = false;
        while let Some(Event::Frame(_)) = conn.poll_event() {
            frames += 1;
            polled = true;
        }
        assert!(n > 0 || polled, "stalled at {offset} of {}", wire.len());
    }
    assert_eq!(frames, FRAMES);
}

#[test]
fn a_frame_larger_than_the_window_still_completes_without_polling() {
    let mut pair = joined_pair(
        plain("node-a"),
        with(plain("node-b"), |c| c.recv_buffer_limit = WINDOW),
    );
    let now = pair.now();
    let mut stream = frame(FrameKind::Data, &[1; 300]);
    stream.extend(frame(FrameKind::Data, &[2; 4000]));
    let conn = pair.conn(A);
    assert_eq!(conn.handle_input(&stream, now), 1024);
    // 300 bytes of events + 719 bytes of the big frame held; the rest of it is taken.
    assert_eq!(conn.handle_input(&stream[1024..], now), 4005 - 719);
    assert_eq!(conn.handle_input(&frame(FrameKind::Data, b"more"), now), 0);
    assert_eq!(
        conn.poll_event(),
        Some(Event::Frame(Bytes::from(vec![1u8; 300])))
    );
    assert_eq!(
        conn.poll_event(),
        Some(Event::Frame(Bytes::from(vec![2u8; 4000])))
    );
    assert_eq!(conn.poll_event(), None);
    assert!(conn.is_joined());
}

#[test]
fn a_pair_with_a_small_window_delivers_a_burst_in_order() {
    let mut pair = joined_pair(
        plain("node-a"),
        with(plain("node-b"), |c| c.recv_buffer_limit = WINDOW),
    );
    for i in 0..100u8 {
        pair.send(I, vec![i; 300]).unwrap();
    }
    pair.run();
    let frames = pair.frames(A);
    assert_eq!(frames.len(), 100);
    assert!(frames
        .iter()
        .enumerate()
        .all(|(i, f)| f[..] == [i as u8; 300][..]));
}

// ----- 10. graceful close -----

#[test]
fn a_close_reaches_the_peer_after_the_frames_queued_before_it() {
    let reasons = [
        CloseReason::normal(),
        CloseReason::new(CloseCode::ShuttingDown, "node restarting"),
        CloseReason::new(CloseCode::Other(0x1234), "rebalancing"),
    ];
    for closer in [I, A] {
        for reason in &reasons {
            let mut pair = joined_pair(plain("node-a"), plain("node-b"));
            let peer = other(closer);
            pair.send(closer, &b"one"[..]).unwrap();
            pair.send(closer, &b"two"[..]).unwrap();
            pair.conn(closer).close(reason.clone());
            assert!(pair.conn(closer).is_closed() && !pair.conn(closer).is_drained());
            assert_eq!(pair.send(closer, &b"three"[..]), Err(SendError::Closed));

            let out = concat(&pair.transmit(closer));
            let frames = parse_frames(&out);
            assert_eq!(
                kinds(&frames),
                [FrameKind::Data, FrameKind::Data, FrameKind::Close]
            );
            assert_eq!(&as_close(&frames[2]), reason);
            assert_eq!(
                frames[2].payload[..2],
                reason.code.to_u16().to_be_bytes(),
                "the code as sent"
            );
            pair.deliver(peer, &out);
            pair.run();

            let events = pair.events(peer);
            assert_eq!(events.len(), 4, "{events:?}");
            assert!(matches!(events[0], Event::Joined(_)));
            assert_eq!(events[1], Event::Frame(Bytes::from_static(b"one")));
            assert_eq!(events[2], Event::Frame(Bytes::from_static(b"two")));
            assert_eq!(events[3], Event::Closed(CloseCause::Peer(reason.clone())));
            // The closer's own events: joined, then the Closed from `close`.
            assert_eq!(
                pair.events(closer).last(),
                Some(&Event::Closed(CloseCause::Local(reason.clone())))
            );
            assert_eq!(pair.events(closer).len(), 2);
            assert_eq!(pair.conn(closer).poll_event(), None);
            assert!(pair.transmit(peer).is_empty(), "a CLOSE is not answered");
            for side in [I, A] {
                assert!(pair.conn(side).is_closed() && pair.conn(side).is_drained());
                assert!(!pair.conn(side).is_joined());
            }
        }
    }
    assert_eq!(
        CloseCause::Peer(CloseReason::new(CloseCode::Other(0x1234), "rebalancing")).to_string(),
        "closed by the peer: close code 4660: rebalancing"
    );
}

#[test]
fn an_acceptor_closing_before_the_hello_arrives_tells_the_initiator_why() {
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    let reason = CloseReason::new(CloseCode::ShuttingDown, "draining");
    pair.conn(A).close(reason.clone());
    pair.run();
    assert_eq!(pair.close_cause(I), Some(&CloseCause::Peer(reason.clone())));
    assert_eq!(pair.close_cause(A), Some(&CloseCause::Local(reason)));
    assert_no_join(&pair);
    assert_eq!(
        kinds(&parse_stream(&concat(pair.sent(A)))),
        [FrameKind::Close],
        "the HELLO that arrived after the close got no answer"
    );
    assert_eq!(pair.conn(I).poll_timeout(), None);
}

#[test]
fn both_sides_closing_at_once_keep_their_own_reasons() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let (ri, ra) = (
        CloseReason::new(CloseCode::Normal, "from a"),
        CloseReason::new(CloseCode::ShuttingDown, "from b"),
    );
    pair.conn(I).close(ri.clone());
    pair.conn(A).close(ra.clone());
    pair.run();
    assert_eq!(pair.close_cause(I), Some(&CloseCause::Local(ri)));
    assert_eq!(pair.close_cause(A), Some(&CloseCause::Local(ra)));
    for side in [I, A] {
        assert_eq!(pair.events(side).len(), 2);
        assert!(pair.conn(side).is_drained());
    }
}

#[test]
fn frames_arriving_after_a_local_close_are_discarded() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    pair.send(A, &b"late"[..]).unwrap();
    pair.conn(I).close(CloseReason::normal());
    pair.run();
    assert!(pair.frames(I).is_empty(), "no Frame after Closed");
    assert_eq!(
        pair.events(I)[1..],
        [Event::Closed(CloseCause::Local(CloseReason::normal()))]
    );
    assert_eq!(
        pair.close_cause(A),
        Some(&CloseCause::Peer(CloseReason::normal()))
    );
}
