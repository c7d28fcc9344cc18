//! The ends of the byte stream: what a connection says about a peer that does not open
//! with the palisade preface, and how it treats the stream ending.

mod conn_support;

use conn_support::*;
use palisade_core::frame::FrameKind;
use palisade_core::preface::PREFACE;
use palisade_core::{
    CloseCause, CloseCode, CloseReason, ConnectionError, Event, FrameError, PrefaceError,
    RandomSource,
};
use palisade_testkit::{PairBuilder, SeededRandom};

/// A TLS 1.2/1.3 ClientHello record as a browser would open with (truncated body).
fn tls_client_hello() -> Vec<u8> {
    let mut b = vec![
        0x16, 0x03, 0x01, 0x00, 0xf1, 0x01, 0x00, 0x00, 0xed, 0x03, 0x03,
    ];
    b.extend_from_slice(&[0x5a; 32]);
    b.extend_from_slice(&[0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    b
}

// ----- 4. preface diagnostics -----

#[test]
fn a_bad_preface_is_diagnosed_and_answered_with_close_2_on_either_side() {
    let mut noise = [0u8; 64];
    SeededRandom::new(99).fill(&mut noise).unwrap();
    noise[0] = 0x8f; // neither 'P' nor a TLS record
    let cases: Vec<(&str, Vec<u8>, PrefaceError)> = vec![
        (
            "TLS ClientHello",
            tls_client_hello(),
            PrefaceError::PeerSpeaksTls,
        ),
        (
            "TLS record byte alone",
            vec![0x16],
            PrefaceError::PeerSpeaksTls,
        ),
        (
            "HTTP GET",
            b"GET / HTTP/1.1\r\nHost: node-b\r\n\r\n".to_vec(),
            PrefaceError::PeerSpeaksHttp,
        ),
        (
            "HTTP POST",
            b"POST /join HTTP/1.1\r\n".to_vec(),
            PrefaceError::PeerSpeaksHttp,
        ),
        (
            "HTTP PATCH (shares 'PA' with the magic)",
            b"PATCH /x HTTP/1.1\r\n".to_vec(),
            PrefaceError::PeerSpeaksHttp,
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            PrefaceError::PeerSpeaksHttp,
        ),
        (
            "random bytes",
            noise.to_vec(),
            PrefaceError::NotPalisade {
                first_bytes: noise[..10].to_vec(),
            },
        ),
        (
            "SSH banner",
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            PrefaceError::NotPalisade {
                first_bytes: b"SSH-2.0-Op".to_vec(),
            },
        ),
        (
            "magic with one wrong byte",
            b"PALISADX".to_vec(),
            PrefaceError::NotPalisade {
                first_bytes: b"PALISADX".to_vec(),
            },
        ),
        (
            "palisade version 2",
            b"PALISADE\x00\x02".to_vec(),
            PrefaceError::UnsupportedVersion { ours: 1, theirs: 2 },
        ),
        (
            "palisade version 256",
            b"PALISADE\x01\x00\x01\x00\x00\x00\x00".to_vec(),
            PrefaceError::UnsupportedVersion {
                ours: 1,
                theirs: 256,
            },
        ),
    ];
    for (what, bytes, expected) in cases {
        for initiator in [false, true] {
            let mut solo = if initiator {
                Solo::initiator(plain("node-a"))
            } else {
                Solo::acceptor(plain("node-b"))
            };
            let consumed = solo.input(&bytes);
            assert_eq!(consumed, bytes.len(), "{what}");
            let err = ConnectionError::Preface(expected.clone());
            assert_eq!(solo.error(), &err, "{what}");
            assert_owes_close(&solo, &err, CloseCode::ProtocolError);
            let written = kinds(&solo.frames());
            if initiator {
                assert_eq!(written, [FrameKind::Hello, FrameKind::Close], "{what}");
            } else {
                assert_eq!(written, [FrameKind::Close], "{what}");
            }
        }
    }
}

#[test]
fn preface_diagnoses_read_like_advice() {
    let shown = |e: PrefaceError| ConnectionError::Preface(e).to_string();
    assert!(shown(PrefaceError::PeerSpeaksTls).contains("enable TLS on this node"));
    assert!(shown(PrefaceError::PeerSpeaksHttp).contains("sent an HTTP request"));
    assert_eq!(
        shown(PrefaceError::UnsupportedVersion { ours: 1, theirs: 2 }),
        "the peer speaks palisade protocol version 2 but this node speaks version 1; upgrade the older node"
    );
    assert_eq!(
        shown(PrefaceError::NotPalisade {
            first_bytes: b"SSH-2.0-Op".to_vec()
        }),
        "the peer does not speak palisade (it opened with bytes 5353482d322e302d4f70)"
    );
}

#[test]
fn the_peer_of_a_bad_preface_is_told_protocol_error_with_the_diagnosis() {
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    drop(pair.transmit(I));
    pair.deliver(A, b"PALISADE\x00\x02");
    let answer = concat(&pair.transmit(A));
    pair.deliver(I, &answer);
    let diagnosis = PrefaceError::UnsupportedVersion { ours: 1, theirs: 2 };
    assert_eq!(
        pair.close_cause(A),
        Some(&CloseCause::Error(ConnectionError::Preface(
            diagnosis.clone()
        )))
    );
    assert_eq!(
        pair.close_cause(I),
        Some(&CloseCause::Peer(CloseReason::new(
            CloseCode::ProtocolError,
            diagnosis.to_string()
        )))
    );
    assert_no_join(&pair);
    assert!(pair.transmit(I).is_empty(), "a CLOSE is not answered");
}

#[test]
fn a_preface_arriving_byte_by_byte_is_accepted_and_a_wrong_version_waits_for_its_last_byte() {
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    let flight = concat(&pair.transmit(I));
    let mut acceptor = Solo::acceptor(plain("node-b"));
    for (n, byte) in flight.iter().enumerate() {
        assert!(!acceptor.conn.is_joined(), "joined early at byte {n}");
        assert_eq!(acceptor.input(std::slice::from_ref(byte)), 1);
    }
    assert!(acceptor.conn.is_joined());
    assert!(matches!(&acceptor.events[..], [Event::Joined(p)] if p.node_id == "node-a"));

    let mut solo = Solo::acceptor(plain("node-b"));
    let v2 = b"PALISADE\x00\x02";
    for byte in &v2[..9] {
        assert_eq!(solo.input(std::slice::from_ref(byte)), 1);
        assert!(solo.events.is_empty() && !solo.conn.is_closed());
    }
    solo.input(&v2[9..]);
    assert_eq!(
        solo.error(),
        &ConnectionError::Preface(PrefaceError::UnsupportedVersion { ours: 1, theirs: 2 })
    );
}

#[test]
fn a_stranger_is_refused_on_the_first_byte_that_cannot_start_a_preface() {
    // TLS is recognised from its first byte.
    let mut solo = Solo::acceptor(plain("node-b"));
    assert_eq!(solo.input(&[0x16]), 1);
    assert_eq!(
        solo.error(),
        &ConnectionError::Preface(PrefaceError::PeerSpeaksTls)
    );
    // "PALISADE" shares its first byte with POST/PUT/PATCH/PRI; the second byte decides.
    let mut solo = Solo::acceptor(plain("node-b"));
    assert_eq!(solo.input(b"P"), 1);
    assert!(!solo.conn.is_closed());
    solo.input(b"O");
    assert_eq!(
        solo.error(),
        &ConnectionError::Preface(PrefaceError::NotPalisade {
            first_bytes: b"PO".to_vec()
        })
    );
    // An HTTP request line split after its first byte is reported by that byte alone
    // (PROTOCOL.md §2: the receiver stops at the first byte that cannot be a preface).
    let mut solo = Solo::acceptor(plain("node-b"));
    solo.input(b"G");
    assert_eq!(
        solo.error(),
        &ConnectionError::Preface(PrefaceError::NotPalisade {
            first_bytes: b"G".to_vec()
        })
    );
    assert_eq!(
        solo.input(b"ET / HTTP/1.1\r\n"),
        15,
        "later input is discarded"
    );
    assert_eq!(solo.events.len(), 1);
}

// ----- 9. end of stream -----

#[test]
fn eof_before_the_join_is_unexpected_and_nothing_is_sent() {
    // Nothing received; a partial preface; a whole preface.
    for received in [&b""[..], b"PALI", &PREFACE[..]] {
        let mut solo = Solo::acceptor(plain("node-b"));
        solo.input(received);
        solo.conn.handle_eof();
        solo.pump();
        let err = ConnectionError::UnexpectedEof { joined: false };
        assert_eq!(solo.events, [Event::Closed(CloseCause::Error(err.clone()))]);
        assert_eq!(solo.out, PREFACE, "no CLOSE: the peer is gone");
        assert!(solo.conn.is_drained());
        assert!(err
            .to_string()
            .starts_with("the peer closed the connection during the handshake"));
    }
    // The initiator, after its HELLO.
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    pair.run_until(|p| !p.sent(I).is_empty());
    pair.deliver_eof(I);
    assert_eq!(
        error_of(pair.close_cause(I)),
        &ConnectionError::UnexpectedEof { joined: false }
    );
    assert!(pair.transmit(I).is_empty());
    assert_eq!(
        kinds(&parse_stream(&concat(pair.sent(I)))),
        [FrameKind::Hello]
    );
}

#[test]
fn eof_after_the_join_without_a_close_is_unexpected() {
    for side in [I, A] {
        let mut pair = joined_pair(plain("node-a"), plain("node-b"));
        pair.deliver_eof(side);
        let err = ConnectionError::UnexpectedEof { joined: true };
        assert_eq!(error_of(pair.close_cause(side)), &err);
        assert_eq!(
            err.to_string(),
            "the peer closed the connection without a CLOSE frame"
        );
        assert!(pair.transmit(side).is_empty());
        assert!(pair.conn(side).is_drained());
    }
}

#[test]
fn eof_after_a_close_is_the_clean_end_of_the_link() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    pair.conn(I)
        .close(CloseReason::new(CloseCode::ShuttingDown, "restart"));
    pair.run();
    let peer_cause = CloseCause::Peer(CloseReason::new(CloseCode::ShuttingDown, "restart"));
    assert_eq!(pair.close_cause(A), Some(&peer_cause));
    pair.deliver_eof(A);
    pair.deliver_eof(I);
    assert_eq!(pair.close_cause(A), Some(&peer_cause));
    assert_eq!(pair.conn(A).close_cause(), Some(&peer_cause));
    assert_eq!(
        pair.conn(I).close_cause(),
        Some(&CloseCause::Local(CloseReason::new(
            CloseCode::ShuttingDown,
            "restart"
        )))
    );
    for side in [I, A] {
        assert_eq!(
            pair.events(side).len(),
            2,
            "Joined, Closed and nothing after"
        );
        assert!(pair.transmit(side).is_empty());
        assert!(pair.conn(side).is_drained());
    }
}

#[test]
fn eof_inside_a_frame_is_a_truncation_error_with_close_2() {
    let cases: [(&[u8], FrameError); 3] = [
        (
            &[0x10, 0, 0, 0, 10, 1, 2, 3],
            FrameError::Truncated {
                have: 8,
                need: Some(15),
            },
        ),
        (
            &[0x10, 0, 0],
            FrameError::Truncated {
                have: 3,
                need: None,
            },
        ),
        (
            &[0x11],
            FrameError::Truncated {
                have: 1,
                need: None,
            },
        ),
    ];
    for (bytes, expected) in cases {
        let mut pair = joined_pair(plain("node-a"), plain("node-b"));
        pair.deliver(A, bytes);
        assert!(pair.conn(A).is_joined());
        pair.deliver_eof(A);
        let err = ConnectionError::Frame(expected);
        assert_eq!(error_of(pair.close_cause(A)), &err);
        let out = concat(&pair.transmit(A));
        assert_eq!(
            as_close(&parse_frames(&out)[0]),
            CloseReason::new(CloseCode::ProtocolError, err.to_string())
        );
    }
    assert_eq!(
        FrameError::Truncated {
            have: 8,
            need: Some(15)
        }
        .to_string(),
        "the stream ended inside a frame (8 of 15 bytes arrived)"
    );
}

#[test]
fn eof_inside_the_hello_is_a_truncation_error() {
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    let flight = concat(&pair.transmit(I));
    let mut solo = Solo::acceptor(keyed("node-b", 7));
    solo.input(&flight[..60]);
    solo.conn.handle_eof();
    solo.pump();
    let err = ConnectionError::Frame(FrameError::Truncated {
        have: 50,
        need: Some(106),
    });
    assert_eq!(solo.error(), &err);
    assert_owes_close(&solo, &err, CloseCode::ProtocolError);
}
