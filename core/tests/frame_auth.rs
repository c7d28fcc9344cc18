//! Frame authentication on plaintext links with a shared secret (PROTOCOL.md §5.7): a man
//! in the middle between two joined connections injects, flips, drops, reorders, replays,
//! reflects and moves frames; each is detected, the victim ends the link with the typed
//! error and an authenticated CLOSE 2, and no payload it did not get from its peer, in
//! order, is ever delivered. Without a secret the wire is unchanged.

mod conn_support;

use bytes::Bytes;
use conn_support::*;
use palisade_core::frame::FrameKind;
use palisade_core::frame_auth::{FrameAuthError, TAG_LEN};
use palisade_core::{CloseCause, CloseCode, CloseReason, ConnectionError, Side};
use palisade_testkit::{Pair, PairBuilder};

fn authed_pair() -> Pair {
    joined_pair(keyed("node-a", 7), keyed("node-b", 7))
}

/// Whole frames (header included) of a stream that holds only whole frames.
fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = 5 + u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    out
}

/// `from` sends each payload; returns the frames as they would go on the wire.
fn sent_frames(pair: &mut Pair, from: Side, payloads: &[&'static [u8]]) -> Vec<Vec<u8>> {
    for p in payloads {
        pair.send(from, Bytes::from_static(p)).unwrap();
    }
    split(&concat(&pair.transmit(from)))
}

/// The victim ended the link for a failed tag, told the peer with CLOSE 2, and delivered
/// exactly `delivered` (no injected, altered or out-of-order payload).
fn assert_detected(pair: &mut Pair, victim: Side, delivered: &[&[u8]]) -> FrameAuthError {
    let frames: Vec<Bytes> = pair.frames(victim);
    assert_eq!(frames, delivered, "what the victim delivered");
    let err = match error_of(pair.close_cause(victim)) {
        ConnectionError::FrameAuth(e) => e.clone(),
        other => panic!("expected a frame authentication error, got {other:?}"),
    };
    let shown = err.to_string();
    assert!(
        shown.contains("failed authentication") && shown.contains("tampered with"),
        "{shown}"
    );
    let out = parse_frames(&concat(&pair.transmit(victim)));
    assert_eq!(kinds(&out), [FrameKind::Close]);
    let body = &out[0].payload[..out[0].payload.len() - TAG_LEN];
    let reason = CloseReason::decode(body).unwrap();
    assert_eq!(reason.code, CloseCode::ProtocolError);
    assert_eq!(reason.message, shown);
    err
}

#[test]
fn a_frame_sent_on_an_authenticated_link_carries_a_tag_and_arrives_without_it() {
    let mut pair = authed_pair();
    let frames = sent_frames(&mut pair, I, &[b"hello, cluster"]);
    assert_eq!(frames[0].len(), 5 + 14 + TAG_LEN);
    assert_eq!(&frames[0][..5], &[0x10, 0, 0, 0, 14 + TAG_LEN as u8]);
    pair.deliver(A, &frames[0]);
    assert_eq!(pair.frames(A), [&b"hello, cluster"[..]]);
    // The authenticated CLOSE is accepted as the peer's close.
    pair.conn(A)
        .close(CloseReason::new(CloseCode::Normal, "bye"));
    let close = concat(&pair.transmit(A));
    assert_eq!(close.len(), 5 + 7 + TAG_LEN);
    pair.deliver(I, &close);
    assert_eq!(
        pair.close_cause(I),
        Some(&CloseCause::Peer(CloseReason::new(
            CloseCode::Normal,
            "bye"
        )))
    );
}

#[test]
fn without_a_secret_frames_carry_no_tag() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let frames = sent_frames(&mut pair, I, &[b"hello, cluster"]);
    assert_eq!(frames, [frame(FrameKind::Data, b"hello, cluster")]);
}

#[test]
fn a_an_injected_data_frame_is_refused() {
    let mut pair = authed_pair();
    let real = sent_frames(&mut pair, I, &[b"one", b"two"]);
    pair.deliver(A, &real[0]);
    // Untagged, as the relay would inject it, and with a tag-sized tail of guesses.
    let mut injected = frame(FrameKind::Data, b"rm -rf / --no-preserve-root");
    pair.deliver(A, &injected);
    assert!(matches!(
        assert_detected(&mut pair, A, &[b"one"]),
        FrameAuthError::BadTag { seq: 1, .. }
    ));

    let mut pair = authed_pair();
    injected = frame(
        FrameKind::Data,
        &[b"rm -rf /".as_slice(), &[0; TAG_LEN]].concat(),
    );
    pair.deliver(A, &injected);
    assert_detected(&mut pair, A, &[]);

    // Shorter than a tag.
    let mut pair = authed_pair();
    pair.deliver(I, &frame(FrameKind::Data, b"x"));
    assert_eq!(
        assert_detected(&mut pair, I, &[]),
        FrameAuthError::TooShort {
            kind: FrameKind::Data,
            len: 1
        }
    );
}

#[test]
fn b_a_flipped_payload_byte_is_refused() {
    let mut pair = authed_pair();
    let mut real = sent_frames(&mut pair, A, &[b"transfer 10"]);
    real[0][5 + 9] ^= 0x08; // "transfer 90"
    pair.deliver(I, &real[0]);
    assert_detected(&mut pair, I, &[]);
}

#[test]
fn c_a_dropped_frame_is_detected_at_the_next_one() {
    let mut pair = authed_pair();
    let real = sent_frames(&mut pair, I, &[b"one", b"two", b"three"]);
    pair.deliver(A, &real[0]);
    pair.deliver(A, &real[2]);
    assert!(matches!(
        assert_detected(&mut pair, A, &[b"one"]),
        FrameAuthError::BadTag { seq: 1, .. }
    ));
}

#[test]
fn d_reordered_frames_are_refused() {
    let mut pair = authed_pair();
    let real = sent_frames(&mut pair, A, &[b"one", b"two"]);
    pair.deliver(I, &[real[1].as_slice(), &real[0]].concat());
    assert_detected(&mut pair, I, &[]);
}

#[test]
fn e_a_replayed_frame_is_refused() {
    let mut pair = authed_pair();
    let real = sent_frames(&mut pair, I, &[b"pay 10"]);
    pair.deliver(A, &real[0]);
    pair.deliver(A, &real[0]);
    assert_detected(&mut pair, A, &[b"pay 10"]);
}

#[test]
fn f_a_frame_reflected_to_its_sender_is_refused() {
    for side in [I, A] {
        let mut pair = authed_pair();
        let real = sent_frames(&mut pair, side, &[b"mine"]);
        pair.deliver(side, &real[0]);
        assert_detected(&mut pair, side, &[]);
    }
}

#[test]
fn g_a_frame_moved_from_another_link_between_the_same_nodes_is_refused() {
    // Two links between the same two endpoints: same secret, same node ids.
    let (a, b) = (keyed("node-a", 7), keyed("node-b", 7));
    let (ea, eb) = (endpoint(a, 11), endpoint(b, 12));
    let mut first = PairBuilder::from_endpoints(ea.clone(), eb.clone()).build();
    let mut second = PairBuilder::from_endpoints(ea, eb).build();
    for pair in [&mut first, &mut second] {
        pair.run_until(|p| p.joined(I) && p.joined(A));
        assert!(pair.joined(I) && pair.joined(A));
    }
    let real = sent_frames(&mut first, I, &[b"for link one"]);
    // Same position (seq 0), same direction, other link.
    second.deliver(A, &real[0]);
    assert_detected(&mut second, A, &[]);
}

#[test]
fn a_reject_or_close_from_an_initiator_that_was_not_yet_joined_still_ends_the_link() {
    // The initiator gave up (CLOSE, no key yet) while the WELCOME was in flight.
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    let hello = concat(&pair.transmit(I));
    pair.deliver(A, &hello);
    assert!(pair.joined(A));
    pair.conn(I)
        .close(CloseReason::new(CloseCode::ShuttingDown, "bye"));
    let close = concat(&pair.transmit(I));
    pair.deliver(A, &close);
    assert_eq!(
        pair.close_cause(A),
        Some(&CloseCause::Peer(CloseReason::new(
            CloseCode::ShuttingDown,
            "bye"
        )))
    );

    // After an authenticated frame from the initiator, an unauthenticated CLOSE is refused.
    let mut pair = authed_pair();
    let real = sent_frames(&mut pair, I, &[b"one"]);
    pair.deliver(A, &real[0]);
    let forged = CloseReason::new(CloseCode::Normal, "nothing to see here");
    pair.deliver(A, &frame(FrameKind::Close, &forged.encode()));
    assert!(matches!(
        assert_detected(&mut pair, A, &[b"one"]),
        FrameAuthError::BadTag {
            kind: FrameKind::Close,
            seq: 1
        }
    ));
}

#[test]
fn the_limits_count_the_tag_beside_max_frame() {
    let mut acceptor = keyed("node-b", 7);
    acceptor.max_frame = 1024;
    let mut pair = joined_pair(keyed("node-a", 7), acceptor);
    let full = vec![1u8; 1024];
    pair.send(I, Bytes::from(full.clone())).unwrap();
    let out = concat(&pair.transmit(I));
    pair.deliver(A, &out);
    assert_eq!(pair.frames(A), [full]);
    // A header one byte over max_frame + 16 is refused before the body, in payload sizes.
    pair.deliver(A, &[0x10, 0, 0, 0x04, 0x11]);
    let err = error_of(pair.close_cause(A)).to_string();
    assert!(
        err.contains("1025-byte DATA frame") && err.contains("max_frame is 1024"),
        "{err}"
    );
}

// ----- any single-byte corruption after the join -----

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// One byte of the authenticated stream changed anywhere (kind, length, payload or
    /// tag of any frame, DATA or CLOSE): the receiver delivers exactly the frames wholly
    /// before the changed byte, never a changed one, and the link ends.
    #[test]
    fn any_single_byte_corruption_after_the_join_is_detected(
        from_initiator in any::<bool>(),
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..6),
        close in any::<bool>(),
        at in any::<prop::sample::Index>(),
        mask in 1..=255u8,
        chunk in 1..64usize,
    ) {
        let (from, to) = if from_initiator { (I, A) } else { (A, I) };
        let mut pair = authed_pair();
        for p in &payloads {
            pair.send(from, Bytes::from(p.clone())).unwrap();
        }
        if close {
            pair.conn(from).close(CloseReason::new(CloseCode::Normal, "done"));
        }
        let stream = concat(&pair.transmit(from));
        let ends: Vec<usize> = split(&stream)
            .iter()
            .scan(0, |end, f| { *end += f.len(); Some(*end) })
            .collect();
        let pos = at.index(stream.len());
        let mut bad = stream.clone();
        bad[pos] ^= mask;
        for piece in bad.chunks(chunk) {
            pair.deliver(to, piece);
        }
        pair.deliver_eof(to);
        let got = pair.frames(to);
        let whole_before = ends.iter().take_while(|&&e| e <= pos).count().min(payloads.len());
        prop_assert_eq!(got.len(), whole_before, "frames delivered");
        for (g, p) in got.iter().zip(&payloads) {
            prop_assert_eq!(&g[..], &p[..]);
        }
        prop_assert!(pair.conn(to).is_closed());
        prop_assert!(
            !matches!(pair.close_cause(to), Some(CloseCause::Peer(r)) if r.message == "done"),
            "a tampered CLOSE was taken as the peer's"
        );
    }
}

#[test]
fn unpolled_authenticated_frames_count_their_tags_against_the_receive_window() {
    let mut acceptor = keyed("node-b", 7);
    acceptor.recv_buffer_limit = 1024;
    let mut pair = joined_pair(keyed("node-a", 7), acceptor);
    for _ in 0..500 {
        pair.send(I, Bytes::new()).unwrap();
    }
    let stream = concat(&pair.transmit(I));
    assert_eq!(stream.len(), 500 * (5 + TAG_LEN));
    // The application polls nothing: the window must close after about 1 KiB of frames
    // as they were on the wire (21 bytes each), not 1 KiB of headers (5 bytes each).
    let now = pair.now();
    let mut taken = 0;
    while taken < stream.len() {
        match pair.conn(A).handle_input(&stream[taken..], now) {
            0 => break,
            n => taken += n,
        }
    }
    assert!(
        taken <= 1024 + 5 + TAG_LEN,
        "took {taken} bytes of empty frames into a 1024-byte window"
    );
}

#[test]
fn send_capacity_deducts_the_tag_so_a_frame_that_fits_is_accepted() {
    let mut initiator = keyed("node-a", 7);
    initiator.send_buffer_limit = 100;
    let mut pair = joined_pair(initiator, keyed("node-b", 7));
    let conn = pair.conn(I);
    conn.send(Bytes::from_static(&[1; 10])).unwrap();
    assert_eq!(conn.send_buffered(), 5 + 10 + TAG_LEN);
    // 100 - 31 queued - 16 for the next frame's tag.
    assert_eq!(conn.send_capacity(), 53);
    let fits = Bytes::from(vec![2; 53 - 5]);
    conn.send(fits)
        .expect("a frame within send_capacity is accepted");
    assert_eq!(conn.send_buffered(), 100);
    assert_eq!(conn.send_capacity(), 0);
}
