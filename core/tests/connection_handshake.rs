//! The join beyond the acceptor's checks: mutual authentication (the initiator checks the
//! WELCOME), the handshake deadline, key rotation and `Endpoint::reconfigure`, and the
//! round trips a join takes.

mod conn_support;

use std::time::Duration;

use bytes::Bytes;
use conn_support::*;
use palisade_core::frame::FrameKind;
use palisade_core::join::Auth;
use palisade_core::preface::PREFACE;
use palisade_core::{
    CloseCause, CloseCode, CloseReason, Config, ConnectionError, Event, JoinError, KeyId, Keyring,
    RejectCode, Rejection,
};
use palisade_testkit::PairBuilder;

// ----- 2. mutual authentication -----

#[test]
fn an_initiator_refuses_a_welcome_whose_proof_does_not_verify() {
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    exchange_with_tampered_welcome(&mut pair, |answer| {
        let last = answer.len() - 1;
        answer[last] ^= 0x80;
    });
    let r = assert_refused(&mut pair, I, RejectCode::AuthenticationFailed);
    assert!(
        r.message
            .starts_with("the WELCOME's proof does not verify with the secret of key id ")
            && r.message.contains("altered or relayed"),
        "{}",
        r.message
    );
    assert_acceptor_joined_then_refused(&pair);
    assert_eq!(
        kinds(&parse_stream(&concat(pair.sent(I)))),
        [FrameKind::Hello, FrameKind::Reject]
    );
    assert_eq!(
        kinds(&parse_stream(&concat(pair.sent(A)))),
        [FrameKind::Welcome]
    );
}

#[test]
fn one_flipped_bit_anywhere_in_a_welcome_is_refused_by_the_initiator() {
    // WELCOME payload offsets: version 0, node lp16 2 ("node-b" 4..10), timestamp 10,
    // nonce 18, max_frame 50, auth 54, key id 55, proof 63.
    let cases: [(&str, usize, RejectCode); 7] = [
        ("version", 1, RejectCode::UnsupportedVersion),
        ("node id", 9, RejectCode::AuthenticationFailed),
        ("timestamp", 17, RejectCode::AuthenticationFailed),
        ("nonce", 18, RejectCode::AuthenticationFailed),
        ("max frame", 53, RejectCode::AuthenticationFailed),
        ("key id", 55, RejectCode::AuthenticationFailed),
        ("proof", 94, RejectCode::AuthenticationFailed),
    ];
    for (field, offset, code) in cases {
        let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
        exchange_with_tampered_welcome(&mut pair, |answer| {
            assert_eq!(answer.len(), WELCOME_AT + 95);
            answer[WELCOME_AT + offset] ^= 0x01;
        });
        let r = assert_refused(&mut pair, I, code);
        eprintln!("{field}: {r}");
        if field == "key id" {
            assert!(
                r.message.starts_with("the WELCOME names key id ")
                    && r.message.contains("does not answer this HELLO"),
                "{r}"
            );
        }
        assert_acceptor_joined_then_refused(&pair);
    }
}

#[test]
fn an_initiator_with_a_secret_refuses_a_welcome_without_a_proof() {
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    exchange_with_tampered_welcome(&mut pair, |answer| {
        rewrite_welcome(answer, |w| w.auth = None)
    });
    let r = assert_refused(&mut pair, I, RejectCode::SecretRequired);
    assert!(
        r.message
            .starts_with("the acceptor answered without a join proof"),
        "{r}"
    );
    assert_acceptor_joined_then_refused(&pair);
}

#[test]
fn an_initiator_without_a_secret_refuses_a_welcome_with_a_proof() {
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    exchange_with_tampered_welcome(&mut pair, |answer| {
        rewrite_welcome(answer, |w| {
            w.auth = Some(Auth {
                key_id: KeyId([1; 8]),
                proof: [2; 32],
            })
        })
    });
    let r = assert_refused(&mut pair, I, RejectCode::Malformed);
    assert_eq!(
        r.message,
        "the WELCOME carries a proof although the HELLO carried none"
    );
    assert_acceptor_joined_then_refused(&pair);
}

#[test]
fn a_genuine_welcome_answering_another_hello_is_refused() {
    // Two joins with the same secret; the acceptor's answer to the first is shown to the
    // second initiator. proof_R covers the whole HELLO, so it does not verify there.
    let mut first = PairBuilder::with_seed(keyed("node-a", 7), keyed("node-b", 7), 1).build();
    let flight = concat(&first.transmit(I));
    first.deliver(A, &flight);
    let answer = concat(&first.transmit(A));

    let mut second = Solo::initiator(keyed("node-a", 7));
    second.input_all(&answer);
    let key_id = keyed("node-a", 7).keyring.unwrap().primary().key_id();
    let expected = Rejection::new(
        RejectCode::AuthenticationFailed,
        format!(
            "the WELCOME's proof does not verify with the secret of key id {key_id}: the \
             acceptor does not hold that secret (a key id is not secret and can be copied), \
             or the WELCOME was altered or relayed from another connection"
        ),
    );
    assert_eq!(
        second.error(),
        &ConnectionError::Join(JoinError::RefusedPeer(expected.clone()))
    );
    let frames = second.frames();
    assert_eq!(kinds(&frames), [FrameKind::Hello, FrameKind::Reject]);
    assert_eq!(as_reject(&frames[1]), expected);
    assert_eq!(joined_count(&second.events), 0);
}

// ----- 3. handshake timeout -----

fn with_timeout(mut c: Config, ms: u64) -> Config {
    c.handshake_timeout = Duration::from_millis(ms);
    c
}

/// Drives a lone connection to its handshake deadline and checks the CLOSE 4 it owes.
fn assert_times_out(mut solo: Solo, frames_before: &[FrameKind]) {
    let start = solo.now;
    let deadline = start + Duration::from_millis(2_000);
    assert_eq!(solo.conn.poll_timeout(), Some(deadline));
    solo.conn
        .handle_timeout(deadline - Duration::from_millis(1));
    solo.pump();
    assert!(!solo.conn.is_closed(), "one ms early does nothing");
    assert!(solo.events.is_empty());
    assert_eq!(solo.conn.poll_timeout(), Some(deadline));

    solo.conn.handle_timeout(deadline);
    solo.pump();
    let err = ConnectionError::HandshakeTimeout {
        after: Duration::from_millis(2_000),
    };
    assert_eq!(solo.events, [Event::Closed(CloseCause::Error(err.clone()))]);
    assert!(err
        .to_string()
        .contains("within 2000 ms (handshake_timeout)"));
    let frames = solo.frames();
    let (close, before) = frames.split_last().unwrap();
    assert_eq!(kinds(before), frames_before);
    assert_eq!(
        as_close(close),
        CloseReason::new(CloseCode::HandshakeTimeout, err.to_string())
    );
    assert_eq!(close.payload[..2], [0, 4], "code 4 on the wire");
    assert!(solo.conn.is_drained());
    assert_eq!(solo.conn.poll_timeout(), None);

    // A second call, and later ones, change nothing.
    let out = solo.out.len();
    solo.conn.handle_timeout(deadline + Duration::from_secs(60));
    solo.pump();
    assert_eq!((solo.events.len(), solo.out.len()), (1, out));
}

#[test]
fn an_acceptor_that_never_hears_from_its_peer_closes_with_code_4() {
    let solo = Solo::acceptor(with_timeout(keyed("node-b", 7), 2_000));
    assert_eq!(solo.out, PREFACE, "only its preface so far");
    assert_times_out(solo, &[]);
}

#[test]
fn an_initiator_that_never_hears_back_closes_with_code_4() {
    let solo = Solo::initiator(with_timeout(keyed("node-a", 7), 2_000));
    assert_times_out(solo, &[FrameKind::Hello]);
}

#[test]
fn a_peer_that_stalls_inside_the_preface_or_the_hello_still_times_out() {
    let mut solo = Solo::acceptor(with_timeout(plain("node-b"), 2_000));
    assert_eq!(solo.input(b"PALIS"), 5);
    assert_times_out(solo, &[]);

    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    let flight = concat(&pair.transmit(I));
    let mut solo = Solo::acceptor(with_timeout(plain("node-b"), 2_000));
    assert_eq!(solo.input(&flight[..flight.len() - 1]), flight.len() - 1);
    assert_times_out(solo, &[]);
}

#[test]
fn the_deadline_counts_from_the_start_not_from_the_last_byte() {
    let mut solo = Solo::acceptor(with_timeout(plain("node-b"), 2_000));
    let deadline = solo.now + Duration::from_millis(2_000);
    solo.now += Duration::from_millis(1_900);
    solo.input(&PREFACE);
    assert_eq!(solo.conn.poll_timeout(), Some(deadline));
    solo.conn.handle_timeout(deadline);
    solo.pump();
    assert!(matches!(
        solo.error(),
        ConnectionError::HandshakeTimeout { .. }
    ));
}

#[test]
fn a_lost_welcome_times_the_initiator_out_and_the_acceptor_is_told_code_4() {
    let mut pair = PairBuilder::new(
        with_timeout(plain("node-a"), 2_000),
        with_timeout(plain("node-b"), 2_000),
    )
    .build();
    let flight = concat(&pair.transmit(I));
    pair.deliver(A, &flight);
    assert!(pair.joined(A));
    drop(pair.transmit(A)); // the WELCOME is lost
    assert_eq!(
        pair.conn(A).poll_timeout(),
        None,
        "a joined link has no deadline"
    );
    pair.run();
    assert_eq!(pair.elapsed(), Duration::from_millis(2_010));
    let err = ConnectionError::HandshakeTimeout {
        after: Duration::from_millis(2_000),
    };
    assert_eq!(error_of(pair.close_cause(I)), &err);
    assert_eq!(
        pair.close_cause(A),
        Some(&CloseCause::Peer(CloseReason::new(
            CloseCode::HandshakeTimeout,
            err.to_string()
        )))
    );
    assert!(pair.conn(I).is_drained() && pair.conn(A).is_drained());
}

#[test]
fn a_joined_link_ignores_the_handshake_deadline() {
    let mut pair = joined_pair(plain("node-a"), plain("node-b"));
    for side in [I, A] {
        assert_eq!(pair.conn(side).poll_timeout(), None);
        let later = pair.now() + Duration::from_secs(3_600);
        pair.conn(side).handle_timeout(later);
        assert!(pair.conn(side).is_joined());
        assert!(pair.conn(side).poll_event().is_none());
        assert!(pair.conn(side).poll_transmit().is_none());
    }
}

// ----- 11. secret rotation -----

fn ring(primary: u8, accepted: &[u8]) -> Keyring {
    accepted
        .iter()
        .fold(Keyring::new(secret(primary)), |k, &b| {
            k.with_accepted(secret(b)).unwrap()
        })
}

fn node(name: &str, keyring: Keyring) -> Config {
    plain(name).with_keyring(keyring)
}

#[test]
fn rotation_joins_at_every_step_in_both_directions_with_the_initiators_primary() {
    const OLD: u8 = 7;
    const NEW: u8 = 9;
    // The documented rotation: old → old+new accepted → new+old accepted → new.
    let stages = [
        ring(OLD, &[]),
        ring(OLD, &[NEW]),
        ring(NEW, &[OLD]),
        ring(NEW, &[]),
    ];
    for step in 0..stages.len() - 1 {
        let (behind, ahead) = (&stages[step], &stages[step + 1]);
        for (i, a) in [(behind, ahead), (ahead, behind)] {
            let mut pair =
                PairBuilder::new(node("node-a", i.clone()), node("node-b", a.clone())).build();
            pair.run();
            assert!(
                pair.joined(I) && pair.joined(A),
                "step {step}: {:?} → {:?}: {:?}",
                i.primary(),
                a.primary(),
                pair.close_cause(I)
            );
            let used = Some(i.primary().key_id());
            assert_eq!(pair.conn(I).peer().unwrap().key_id, used);
            assert_eq!(pair.conn(A).peer().unwrap().key_id, used);
        }
    }
}

#[test]
fn a_node_with_the_new_primary_cannot_join_a_node_that_never_accepted_it() {
    // Skipping the "add as accepted everywhere" step: the new-primary node's HELLO names
    // a key the old-only node does not hold. The other direction still works.
    let new_first = ring(9, &[7]);
    let old_only = ring(7, &[]);
    let mut pair = PairBuilder::new(
        node("node-a", new_first.clone()),
        node("node-b", old_only.clone()),
    )
    .build();
    pair.run();
    let r = assert_acceptor_refused(&mut pair, RejectCode::UnknownKey);
    assert!(r.message.contains(&secret(9).key_id().to_string()), "{r}");
    // The key ids the acceptor holds would let anyone check guesses of a weak secret
    // offline: they stay in the acceptor's own error, never in the REJECT.
    let held = secret(7).key_id().to_string();
    assert!(!r.message.contains(&held), "sent to the peer: {r}");
    match pair.conn(A).close_cause() {
        Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedPeer(local)))) => {
            assert_eq!(
                local.local_detail.as_deref(),
                Some(&*format!("this node holds key ids {held}"))
            );
            assert!(local.to_string().contains(&held));
        }
        other => panic!("{other:?}"),
    }

    let mut pair = PairBuilder::new(node("node-a", old_only), node("node-b", new_first)).build();
    pair.run();
    assert!(pair.joined(I) && pair.joined(A));
    assert_eq!(
        pair.conn(A).peer().unwrap().key_id,
        Some(secret(7).key_id())
    );
}

#[test]
fn reconfigure_keeps_the_replay_cache_and_open_links_keep_their_settings() {
    let acceptor = endpoint(keyed("node-b", 7), 100);
    let mut first =
        PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 1), acceptor.clone()).build();
    let hello = concat(&first.transmit(I));
    first.deliver(A, &hello);
    assert!(first.joined(A));
    let now = first.now();

    // A link accepted before the change.
    let mut opened_before = Solo::new(acceptor.accept(now, wall()).unwrap(), now);

    let rotated = acceptor.reconfigure(node("node-b", ring(9, &[7]))).unwrap();
    assert_eq!(
        rotated
            .config()
            .keyring
            .as_ref()
            .unwrap()
            .primary()
            .key_id(),
        secret(9).key_id()
    );

    // The recorded HELLO is still a replay after the rotation...
    let mut replayed = Solo::new(rotated.accept(now, wall()).unwrap(), now);
    replayed.input_all(&hello);
    assert_eq!(
        err_rejection(replayed.error()),
        &Rejection::new(
            RejectCode::Replay,
            "this HELLO's nonce was already used: it is a recorded join sent again"
        )
    );
    assert_eq!(as_reject(&replayed.frames()[0]).code, RejectCode::Replay);
    // ...because of the kept cache: a new endpoint with the same settings accepts it.
    let mut forgetful = Solo::new(
        endpoint(node("node-b", ring(9, &[7])), 5)
            .accept(now, wall())
            .unwrap(),
        now,
    );
    forgetful.input_all(&hello);
    assert!(forgetful.conn.is_joined(), "{:?}", forgetful.events);

    // Fresh joins with the old key still work on the reconfigured endpoint.
    let mut again =
        PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 2), rotated.clone()).build();
    again.run();
    assert!(again.joined(I) && again.joined(A));

    // Drop the old key: new links refuse it, the link opened before still accepts it.
    let new_only = acceptor.reconfigure(keyed("node-b", 9)).unwrap();
    let mut old_key_hello = Solo::initiator(keyed("node-a", 7));
    let mut hello_3 = Vec::new();
    std::mem::swap(&mut hello_3, &mut old_key_hello.out);
    let mut refused = Solo::new(new_only.accept(now, wall()).unwrap(), now);
    refused.input_all(&hello_3);
    assert_eq!(err_rejection(refused.error()).code, RejectCode::UnknownKey);
    opened_before.input_all(&hello_3);
    assert!(opened_before.conn.is_joined(), "{:?}", opened_before.events);
    assert_eq!(
        opened_before.conn.peer().unwrap().key_id,
        Some(secret(7).key_id())
    );
}

// ----- 12. round trips -----

#[test]
fn plaintext_join_takes_half_a_round_trip_for_the_acceptor_and_one_for_the_initiator() {
    for latency_ms in [10, 37] {
        for keyed_nodes in [false, true] {
            let (i, a) = if keyed_nodes {
                (keyed("node-a", 7), keyed("node-b", 7))
            } else {
                (plain("node-a"), plain("node-b"))
            };
            let mut pair = PairBuilder::new(i, a)
                .latency(Duration::from_millis(latency_ms))
                .build();
            pair.run();
            let rt = |side| pair.round_trips_to_joined(side).unwrap();
            assert!((rt(A) - 0.5).abs() < 1e-9, "{latency_ms} ms: {}", rt(A));
            assert!((rt(I) - 1.0).abs() < 1e-9, "{latency_ms} ms: {}", rt(I));
            assert_eq!(pair.elapsed(), Duration::from_millis(2 * latency_ms));
            // The initiator's first flight is one write, PREFACE ‖ HELLO; the acceptor
            // writes its preface at once and its WELCOME when the HELLO is in.
            assert_eq!(pair.sent(I).len(), 1);
            assert_eq!(kinds(&parse_stream(&pair.sent(I)[0])), [FrameKind::Hello]);
            assert_eq!(pair.sent(A).len(), 2);
            assert_eq!(pair.sent(A)[0], PREFACE[..]);
            assert_eq!(kinds(&parse_frames(&pair.sent(A)[1])), [FrameKind::Welcome]);
            let events = pair.events(I);
            assert!(matches!(events, [Event::Joined(p)] if p.node_id == "node-b"));
        }
    }
}

#[test]
fn the_acceptor_can_send_data_right_after_its_welcome_and_the_initiator_gets_both_in_order() {
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    let flight = concat(&pair.transmit(I));
    pair.deliver(A, &flight);
    pair.send(A, &b"early"[..]).unwrap();
    let answer = pair.transmit(A);
    assert_eq!(answer.len(), 1, "WELCOME and DATA leave in one write");
    pair.deliver(I, &answer[0]);
    let events = pair.events(I);
    assert_eq!(events.len(), 2);
    assert!(matches!(&events[0], Event::Joined(_)));
    assert_eq!(events[1], Event::Frame(Bytes::from_static(b"early")));
}
