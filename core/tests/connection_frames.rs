//! Frames on the stream: size limits checked on the header, unknown kinds, frames the
//! state does not allow, and how a failed connection behaves afterwards (sticky errors).

mod conn_support;

use bytes::Bytes;
use conn_support::*;
use palisade_core::frame::{FrameKind, MAX_CONTROL_PAYLOAD};
use palisade_core::join::{JoinHello, MessageError};
use palisade_core::{
    CloseCause, CloseCode, CloseReason, ConnectionError, Event, FieldError, FrameError, RejectCode,
    Rejection, SendError,
};
use palisade_testkit::PairBuilder;

const MIB8: u64 = 8 * 1024 * 1024;

// ----- 5. frame limits, unknown kinds, DATA before the join -----

#[test]
fn a_data_header_claiming_4_gib_after_the_join_is_refused_on_its_fifth_byte() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let now = pair.now();
    let conn = pair.conn(A);
    assert_eq!(conn.handle_input(&[0x10, 0xff], now), 2);
    assert!(conn.is_joined(), "two header bytes decide nothing");
    assert_eq!(conn.handle_input(&[0xff, 0xff, 0xff], now), 3);
    let err = ConnectionError::Frame(FrameError::TooLarge {
        kind: FrameKind::Data,
        declared: u64::from(u32::MAX),
        max: MIB8 as usize,
    });
    assert_eq!(conn.close_cause(), Some(&CloseCause::Error(err.clone())));
    let shown = err.to_string();
    assert!(
        shown.contains("4294967295-byte DATA frame") && shown.contains("max_frame is 8388608"),
        "{shown}"
    );
    // The claimed body is never taken: it is discarded as it arrives.
    let body = vec![0xab; 1 << 20];
    assert_eq!(conn.handle_input(&body, now), body.len());
    assert_eq!(
        conn.poll_event(),
        Some(Event::Closed(CloseCause::Error(err.clone())))
    );
    assert_eq!(conn.poll_event(), None);
    let out = concat(&pair.transmit(A));
    let frames = parse_frames(&out);
    assert_eq!(kinds(&frames), [FrameKind::Close]);
    assert_eq!(
        as_close(&frames[0]),
        CloseReason::new(CloseCode::FrameTooLarge, shown)
    );
}

#[test]
fn data_up_to_max_frame_is_taken_and_one_byte_more_is_refused_with_close_3() {
    let mut acceptor = plain("node-b");
    acceptor.max_frame = 1024;
    let mut pair = joined_pair(plain("node-a"), acceptor);
    assert_eq!(pair.conn(I).peer().unwrap().max_frame, 1024);
    pair.deliver(A, &frame(FrameKind::Data, &[7; 1024]));
    assert_eq!(pair.frames(A), [Bytes::from(vec![7u8; 1024])]);
    pair.deliver(A, &[0x10, 0, 0, 0x04, 0x01]);
    let err = ConnectionError::Frame(FrameError::TooLarge {
        kind: FrameKind::Data,
        declared: 1025,
        max: 1024,
    });
    assert_eq!(error_of(pair.close_cause(A)), &err);
    let out = concat(&pair.transmit(A));
    let frames = parse_frames(&out);
    assert_eq!(frames.len(), 1);
    assert_eq!(
        as_close(&frames[0]),
        CloseReason::new(CloseCode::FrameTooLarge, err.to_string())
    );
    pair.deliver(I, &out);
    assert_eq!(
        pair.close_cause(I),
        Some(&CloseCause::Peer(CloseReason::new(
            CloseCode::FrameTooLarge,
            err.to_string()
        )))
    );
}

/// An oversized control frame before the join: refused on its header, without buffering.
#[test]
fn an_oversized_control_frame_before_the_join_is_refused_on_its_header() {
    for kind in [FrameKind::Hello, FrameKind::Reject, FrameKind::Close] {
        let mut solo = Solo::acceptor(plain("node-b"));
        let header = [kind.to_byte(), 0, 0, 0x10, 0x01];
        assert_eq!(solo.input(&after_preface(&header)), 15);
        let err = ConnectionError::Frame(FrameError::TooLarge {
            kind,
            declared: 4097,
            max: MAX_CONTROL_PAYLOAD,
        });
        assert_eq!(solo.error(), &err);
        assert!(
            err.to_string()
                .contains("control frames are at most 4096 bytes"),
            "{err}"
        );
        let frames = solo.frames();
        assert_eq!(kinds(&frames), [FrameKind::Close], "a CLOSE, not a REJECT");
        assert_eq!(as_close(&frames[0]).message, err.to_string());
        assert_eq!(solo.events, [Event::Closed(CloseCause::Error(err))]);
    }
}

#[test]
fn an_oversized_control_frame_is_answered_with_close_code_2() {
    // Before the join (HELLO to an acceptor).
    let mut solo = Solo::acceptor(plain("node-b"));
    solo.input(&after_preface(&[0x01, 0, 0, 0x10, 0x01]));
    assert_eq!(as_close(&solo.frames()[0]).code, CloseCode::ProtocolError);
    // After the join (CLOSE to a joined acceptor).
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    pair.deliver(A, &[0x11, 0, 0, 0x10, 0x01]);
    let out = concat(&pair.transmit(A));
    assert_eq!(
        as_close(&parse_frames(&out)[0]).code,
        CloseCode::ProtocolError
    );
}

#[test]
fn a_control_frame_of_exactly_4096_bytes_passes_the_frame_layer_and_is_then_parsed() {
    let mut solo = Solo::acceptor(plain("node-b"));
    solo.input_all(&after_preface(&frame(
        FrameKind::Hello,
        &[0; MAX_CONTROL_PAYLOAD],
    )));
    let err = ConnectionError::Message(MessageError {
        message: FrameKind::Hello,
        problem: FieldError::BadValue("cluster name"),
    });
    assert_eq!(solo.error(), &err);
    let frames = solo.frames();
    assert_eq!(
        as_reject(&frames[0]),
        Rejection::new(RejectCode::Malformed, err.to_string())
    );
}

#[test]
fn an_unknown_kind_is_a_protocol_error_on_its_first_byte_before_and_after_the_join() {
    for byte in [0x00u8, 0x07, 0x0f, 0x12, 0x7f, 0xff] {
        let err = ConnectionError::Frame(FrameError::UnknownKind(byte));
        // Before the join, at an acceptor.
        let mut solo = Solo::acceptor(plain("node-b"));
        assert_eq!(solo.input(&after_preface(&[byte])), 11);
        assert_eq!(solo.error(), &err);
        assert_owes_close(&solo, &err, CloseCode::ProtocolError);
        assert_eq!(kinds(&solo.frames()), [FrameKind::Close]);

        // After the join, at either side.
        for side in [I, A] {
            let mut pair = joined_pair(plain("node-a"), plain("node-b"));
            pair.deliver(side, &[byte]);
            assert_eq!(error_of(pair.close_cause(side)), &err);
            let out = concat(&pair.transmit(side));
            let frames = parse_frames(&out);
            assert_eq!(frames.len(), 1);
            assert_eq!(
                as_close(&frames[0]),
                CloseReason::new(CloseCode::ProtocolError, err.to_string())
            );
        }
    }
    assert_eq!(
        ConnectionError::Frame(FrameError::UnknownKind(0x7f)).to_string(),
        "peer sent a frame of unknown kind 0x7f (it speaks a newer protocol or is corrupting the stream)"
    );
}

#[test]
fn data_before_the_join_is_refused_on_its_kind_byte_with_reject_10() {
    for (initiator, during) in [
        (false, "while waiting for HELLO"),
        (true, "while waiting for WELCOME"),
    ] {
        // Just the kind byte, and a header claiming 4 GiB: both fail on the kind byte.
        for tail in [&[0x10][..], &[0x10, 0xff, 0xff, 0xff, 0xff][..]] {
            let mut solo = if initiator {
                Solo::initiator(keyed("node-a", 7))
            } else {
                Solo::acceptor(keyed("node-b", 7))
            };
            assert_eq!(solo.input(&after_preface(tail)), 10 + tail.len());
            let err = ConnectionError::UnexpectedFrame {
                kind: FrameKind::Data,
                during,
            };
            assert_eq!(solo.error(), &err);
            let frames = solo.frames();
            assert_eq!(
                as_reject(frames.last().unwrap()),
                Rejection::new(RejectCode::Malformed, err.to_string())
            );
            assert_eq!(solo.events, [Event::Closed(CloseCause::Error(err))]);
        }
    }
}

#[test]
fn join_messages_after_the_join_are_answered_with_close_2() {
    // A second HELLO to a joined acceptor, a WELCOME to a joined initiator.
    let hello = JoinHello {
        version: 1,
        cluster_name: "prod".into(),
        node_id: "node-a".into(),
        timestamp_ms: WALL_MS,
        nonce: [9; 32],
        max_frame: 1024,
        auth: None,
    };
    for (side, kind, body) in [
        (A, FrameKind::Hello, hello.encode().to_vec()),
        (I, FrameKind::Welcome, vec![0; 10]),
    ] {
        let mut pair = joined_pair(plain("node-a"), plain("node-b"));
        pair.deliver(side, &frame(kind, &body));
        let err = ConnectionError::UnexpectedFrame {
            kind,
            during: "after the join",
        };
        assert_eq!(error_of(pair.close_cause(side)), &err);
        let out = concat(&pair.transmit(side));
        assert_eq!(
            as_close(&parse_frames(&out)[0]),
            CloseReason::new(CloseCode::ProtocolError, err.to_string())
        );
        pair.deliver(other(side), &out);
        assert!(matches!(
            pair.close_cause(other(side)),
            Some(CloseCause::Peer(CloseReason {
                code: CloseCode::ProtocolError,
                ..
            }))
        ));
    }
}

#[test]
fn a_malformed_close_after_the_join_ends_the_link_with_a_message_error() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    // code 0, message length 5, but one byte of message.
    pair.deliver(A, &raw_frame(0x11, &[0, 0, 0, 5, b'a']));
    assert_eq!(
        error_of(pair.close_cause(A)),
        &ConnectionError::Message(MessageError {
            message: FrameKind::Close,
            problem: FieldError::Truncated("message"),
        })
    );
    assert!(pair.conn(A).is_closed());
    let out = concat(&pair.transmit(A));
    assert_eq!(parse_frames(&out).len(), 1, "it owes the peer one frame");
}

#[test]
fn a_malformed_close_after_the_join_is_answered_with_close_2() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    pair.deliver(A, &raw_frame(0x11, &[0, 0, 0, 5, b'a']));
    let out = concat(&pair.transmit(A));
    let frames = parse_frames(&out);
    assert_eq!(kinds(&frames), [FrameKind::Close]);
    assert_eq!(as_close(&frames[0]).code, CloseCode::ProtocolError);
    // And the peer hears a CLOSE, not a join refusal, on a link it had joined.
    pair.deliver(I, &out);
    assert!(matches!(
        pair.close_cause(I),
        Some(CloseCause::Peer(CloseReason {
            code: CloseCode::ProtocolError,
            ..
        }))
    ));
}

// ----- 6. sticky errors -----

#[test]
fn after_a_fatal_error_only_the_owed_frames_leave_and_every_input_is_ignored() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let now = pair.now();
    pair.send(A, &b"queued before"[..]).unwrap();
    let conn = pair.conn(A);
    assert_eq!(conn.handle_input(&[0x7f], now), 1);
    let err = ConnectionError::Frame(FrameError::UnknownKind(0x7f));
    let cause = CloseCause::Error(err.clone());
    assert!(conn.is_closed() && !conn.is_joined());
    assert!(!conn.is_drained(), "the CLOSE is still owed");
    let close_len = 5 + CloseReason::new(CloseCode::ProtocolError, err.to_string())
        .encode()
        .len();
    assert_eq!(conn.send_buffered(), 5 + 13 + close_len);

    // Everything after the error is a no-op.
    let hello_again = frame(FrameKind::Data, b"more");
    assert_eq!(conn.handle_input(&hello_again, now), hello_again.len());
    assert_eq!(conn.send(Bytes::from_static(b"x")), Err(SendError::Closed));
    assert_eq!(conn.send_capacity(), 0);
    conn.close(CloseReason::normal());
    conn.handle_eof();
    conn.handle_timeout(now + std::time::Duration::from_secs(3600));
    assert_eq!(
        conn.send_buffered(),
        5 + 13 + close_len,
        "nothing more queued"
    );
    assert_eq!(conn.close_cause(), Some(&cause));
    assert_eq!(conn.poll_event(), Some(Event::Closed(cause.clone())));
    assert_eq!(conn.poll_event(), None);
    assert_eq!(conn.poll_timeout(), None);

    // The owed bytes: the DATA queued before the error, then the CLOSE.
    let out = concat(&pair.transmit(A));
    let frames = parse_frames(&out);
    assert_eq!(kinds(&frames), [FrameKind::Data, FrameKind::Close]);
    assert_eq!(&frames[0].payload[..], b"queued before");
    assert_eq!(as_close(&frames[1]).code, CloseCode::ProtocolError);
    assert!(pair.conn(A).is_drained());
    assert_eq!(pair.conn(A).poll_transmit(), None);

    pair.deliver(I, &out);
    assert_eq!(pair.frames(I), [Bytes::from_static(b"queued before")]);
    assert!(matches!(
        pair.close_cause(I),
        Some(CloseCause::Peer(CloseReason {
            code: CloseCode::ProtocolError,
            ..
        }))
    ));
}

#[test]
fn an_acceptor_that_refused_a_join_ignores_a_valid_hello_that_follows() {
    let mut pair = PairBuilder::new(plain("node-a"), keyed("node-b", 7)).build();
    pair.run();
    let before = pair.events(A).to_vec();
    assert!(matches!(
        error_of(pair.close_cause(A)),
        ConnectionError::Join(_)
    ));
    // A correct HELLO from a node with the secret, on the dead link.
    let mut good = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    let flight = concat(&good.transmit(I));
    let now = pair.now();
    assert_eq!(pair.conn(A).handle_input(&flight, now), flight.len());
    assert_eq!(pair.conn(A).poll_event(), None);
    assert_eq!(pair.conn(A).poll_transmit(), None);
    assert!(!pair.conn(A).is_joined());
    assert_eq!(pair.events(A), &before[..]);
}

#[test]
fn a_reject_ends_a_joined_acceptor_link_with_the_peers_reason() {
    // PROTOCOL.md §4: a joined acceptor may still receive a REJECT (its WELCOME was refused).
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let r = Rejection::new(RejectCode::AuthenticationFailed, "late refusal");
    pair.deliver(A, &frame(FrameKind::Reject, &r.encode()));
    assert_eq!(
        error_of(pair.close_cause(A)),
        &ConnectionError::Join(palisade_core::JoinError::RefusedByPeer(r))
    );
    assert!(pair.transmit(A).is_empty(), "a REJECT is not answered");
}

#[test]
fn a_reject_to_a_joined_initiator_is_an_unexpected_frame() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    let r = Rejection::new(RejectCode::Busy, "late");
    pair.deliver(I, &frame(FrameKind::Reject, &r.encode()));
    let err = ConnectionError::UnexpectedFrame {
        kind: FrameKind::Reject,
        during: "after the join",
    };
    assert_eq!(error_of(pair.close_cause(I)), &err);
    let out = concat(&pair.transmit(I));
    assert_eq!(
        as_close(&parse_frames(&out)[0]),
        CloseReason::new(CloseCode::ProtocolError, err.to_string())
    );
}
