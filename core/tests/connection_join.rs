//! The join through whole connections: every REJECT code the core can reach, reported on
//! both sides (`RefusedPeer` / `RefusedByPeer`) and on the wire, and the replay cache.

mod conn_support;

use std::time::Duration;

use conn_support::*;
use palisade_core::frame::FrameKind;
use palisade_core::join::{initiator_proof, Auth, JoinHello, JoinWelcome, MessageError};
use palisade_core::preface::PREFACE_LEN;
use palisade_core::{
    CloseCause, Config, ConnectionError, Event, FieldError, JoinError, PeerInfo, RejectCode,
    Rejection, Side,
};
use palisade_testkit::{Pair, PairBuilder};

const MIB8: usize = 8 * 1024 * 1024;

fn refused_by_acceptor(initiator: Config, acceptor: Config) -> Pair {
    let mut pair = PairBuilder::new(initiator, acceptor).build();
    pair.run();
    assert_eq!(
        pair.elapsed(),
        Duration::from_millis(20),
        "one round trip at 10 ms latency"
    );
    pair
}

// ----- 1. every reject code, both sides -----

#[test]
fn code_1_secret_required_when_only_the_acceptor_holds_a_secret() {
    let mut pair = refused_by_acceptor(plain("node-a"), keyed("node-b", 7));
    let hello = &parse_stream(&concat(pair.sent(I)))[0];
    assert_eq!(JoinHello::decode(&hello.payload).unwrap().auth, None);
    let r = assert_acceptor_refused(&mut pair, RejectCode::SecretRequired);
    assert_eq!(
        r.message,
        "this node requires a join proof made with the cluster's shared secret, and the HELLO carried none"
    );
}

#[test]
fn code_2_no_secret_when_only_the_initiator_holds_one() {
    let mut pair = refused_by_acceptor(keyed("node-a", 7), plain("node-b"));
    let r = assert_acceptor_refused(&mut pair, RejectCode::NoSecret);
    assert!(
        r.message
            .starts_with("this node has no shared secret configured"),
        "{}",
        r.message
    );
    let shown = error_of(pair.close_cause(I)).to_string();
    assert!(
        shown.contains("configure the same shared_secret on every node"),
        "{shown}"
    );
}

#[test]
fn code_3_a_tampered_hello_proof_fails_authentication() {
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    exchange_with_tampered_hello(&mut pair, |flight| {
        let last = flight.len() - 1;
        flight[last] ^= 0x01;
    });
    let r = assert_acceptor_refused(&mut pair, RejectCode::AuthenticationFailed);
    assert_eq!(r.message, auth_failed_message());
}

/// What an acceptor says of a HELLO whose proof fails although it holds the key id named.
fn auth_failed_message() -> String {
    format!(
        "the HELLO names key id {}, which this node holds, but its proof does not verify: the \
         HELLO was forged (key ids are not secret), altered in transit or relayed from another \
         connection, or the peer binds it to the TLS session differently",
        secret(7).key_id()
    )
}

/// Each field of a signed HELLO, changed by one bit in transit, and what the acceptor
/// answers: the checks run in the order of PROTOCOL.md §5.5 and the proof covers every
/// byte the earlier checks let through.
#[test]
fn one_flipped_bit_anywhere_in_a_hello_is_refused_with_the_code_of_the_first_failed_check() {
    // HELLO payload offsets: version 0, cluster lp16 2 ("prod" 4..8), node lp16 8
    // ("node-a" 10..16), timestamp 16, nonce 24, max_frame 56, auth 60, key id 61, proof 69.
    let cases: [(&str, usize, RejectCode); 9] = [
        ("version", 1, RejectCode::UnsupportedVersion),
        ("cluster name", 4, RejectCode::ClusterMismatch),
        ("node id", 15, RejectCode::AuthenticationFailed),
        ("timestamp", 23, RejectCode::AuthenticationFailed),
        ("nonce first byte", 24, RejectCode::AuthenticationFailed),
        ("nonce last byte", 55, RejectCode::AuthenticationFailed),
        ("max frame", 59, RejectCode::AuthenticationFailed),
        ("key id", 61, RejectCode::UnknownKey),
        ("proof", 100, RejectCode::AuthenticationFailed),
    ];
    for (field, offset, code) in cases {
        let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
        exchange_with_tampered_hello(&mut pair, |flight| {
            assert_eq!(flight.len(), HELLO_AT + 101);
            flight[HELLO_AT + offset] ^= 0x01;
        });
        let r = assert_acceptor_refused(&mut pair, code);
        eprintln!("{field}: {r}");
        match code {
            RejectCode::UnsupportedVersion => assert!(
                r.message.starts_with("HELLO version 0 is not supported"),
                "{r}"
            ),
            RejectCode::ClusterMismatch => {
                assert_eq!(r.message, "this node is not in cluster 'qrod'")
            }
            _ => {}
        }
    }
}

#[test]
fn code_4_unknown_key_when_the_secrets_differ() {
    let mut pair = refused_by_acceptor(keyed("node-a", 7), keyed("node-b", 8));
    let r = assert_acceptor_refused(&mut pair, RejectCode::UnknownKey);
    assert_eq!(
        r.message,
        format!(
            "no shared secret with key id {} is configured here",
            secret(7).key_id(),
        )
    );
    // The key id the acceptor holds stays in its own report, never on the wire.
    let held = secret(8).key_id().to_string();
    assert!(!concat(pair.sent(A))
        .windows(held.len())
        .any(|w| w == held.as_bytes()));
    let local = error_of(pair.close_cause(A)).to_string();
    assert!(
        local.contains(&format!(
            "not sent to the peer: this node holds key ids {held}"
        )),
        "{local}"
    );
}

#[test]
fn code_5_clock_skew_beyond_the_tolerance_reports_the_measured_skew() {
    // The HELLO is stamped at the initiator's start; it arrives 10 ms later by the
    // acceptor's clock, so the measured skew is the offset minus 10 ms.
    for (offset, words) in [
        (400_000, "399990 ms ahead of"),
        (-400_000, "400010 ms behind"),
    ] {
        for keyed_nodes in [true, false] {
            let (i, a) = if keyed_nodes {
                (keyed("node-a", 7), keyed("node-b", 7))
            } else {
                (plain("node-a"), plain("node-b"))
            };
            let mut pair = PairBuilder::new(i, a)
                .initiator_clock_offset_ms(offset)
                .build();
            pair.run();
            let r = assert_acceptor_refused(&mut pair, RejectCode::ClockSkew);
            // A plaintext HELLO with a secret may be dated at most clock_ahead_tolerance
            // ahead, since its nonce is remembered until its timestamp plus the tolerance.
            let bound = if keyed_nodes && offset > 0 {
                "30000 ms (clock_ahead_tolerance, for plaintext joins with a secret)"
            } else {
                "300000 ms (clock_skew_tolerance)"
            };
            assert_eq!(
                r.message,
                format!("the HELLO's clock is {words} this node's clock; the tolerance is {bound}")
            );
            for side in [I, A] {
                let shown = error_of(pair.close_cause(side)).to_string();
                assert!(shown.contains(words), "{side:?}: {shown}");
                assert!(shown.contains("synchronise the nodes' clocks"), "{shown}");
            }
        }
    }
}

#[test]
fn clock_skew_of_exactly_the_tolerance_joins_and_one_ms_more_is_refused() {
    // The acceptor lets a HELLO be as far ahead as behind, to test the tolerance alone.
    let acceptor = || {
        let mut c = keyed("node-b", 7);
        c.clock_ahead_tolerance = c.clock_skew_tolerance;
        c
    };
    for (offset, skew) in [(300_010i64, 300_000i64), (-299_990, -300_000)] {
        let mut pair = PairBuilder::new(keyed("node-a", 7), acceptor())
            .initiator_clock_offset_ms(offset)
            .build();
        pair.run();
        assert!(pair.joined(I) && pair.joined(A), "offset {offset} joins");
        assert_eq!(pair.conn(A).peer().unwrap().clock_skew_ms, skew);
        // WELCOME stamped at acceptor time +10 ms, read at initiator time offset + 20 ms.
        assert_eq!(
            pair.conn(I).peer().unwrap().clock_skew_ms,
            10 - (offset + 20)
        );

        let beyond = offset + offset.signum();
        let mut pair = PairBuilder::new(keyed("node-a", 7), acceptor())
            .initiator_clock_offset_ms(beyond)
            .build();
        pair.run();
        let r = assert_acceptor_refused(&mut pair, RejectCode::ClockSkew);
        assert!(r.message.contains("is 300001 ms "), "{r}");
    }
}

#[test]
fn a_plaintext_hello_with_a_secret_may_be_dated_at_most_clock_ahead_tolerance_ahead() {
    // Default 30 s. The HELLO arrives 10 ms after it was stamped.
    for (offset, joins) in [(30_010i64, true), (30_011, false)] {
        let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7))
            .initiator_clock_offset_ms(offset)
            .build();
        pair.run();
        if joins {
            assert!(pair.joined(I) && pair.joined(A), "offset {offset}");
        } else {
            let r = assert_acceptor_refused(&mut pair, RejectCode::ClockSkew);
            assert!(r.message.contains("30001 ms ahead"), "{r}");
            assert!(r.message.contains("clock_ahead_tolerance"), "{r}");
        }
    }
    // Without a secret no nonce is remembered, so only clock_skew_tolerance applies.
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b"))
        .initiator_clock_offset_ms(200_000)
        .build();
    pair.run();
    assert!(pair.joined(I) && pair.joined(A));
}

#[test]
fn one_node_in_a_reconnect_loop_uses_up_only_its_own_share_of_the_replay_cache() {
    let mut config = keyed("node-b", 7);
    config.replay_cache_per_source = 3;
    let acceptor = endpoint(config, 100);
    // Without a socket address, the budget is the node id's.
    for seed in 1..=3 {
        let mut pair =
            PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), seed), acceptor.clone())
                .build();
        pair.run();
        assert!(pair.joined(A), "join {seed} of node-a");
    }
    let mut looping =
        PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 4), acceptor.clone()).build();
    looping.run();
    let r = assert_acceptor_refused(&mut looping, RejectCode::Busy);
    assert!(r.message.contains("replay_cache_per_source"), "{r}");
    let mut other = PairBuilder::from_endpoints(endpoint(keyed("node-c", 7), 5), acceptor).build();
    other.run();
    assert!(
        other.joined(I) && other.joined(A),
        "another node still joins"
    );
}

#[test]
fn code_6_replay_a_second_hello_with_the_same_nonce_and_timestamp() {
    // Two initiators seeded alike send byte-identical HELLOs (same nonce, same
    // timestamp) to one acceptor endpoint.
    let acceptor = endpoint(keyed("node-b", 7), 100);
    let mut first =
        PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 1), acceptor.clone()).build();
    first.run();
    assert!(first.joined(I) && first.joined(A));
    let mut second =
        PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 1), acceptor.clone()).build();
    second.run();
    assert_eq!(
        concat(second.sent(I)),
        concat(&first.sent(I)[..1]),
        "the second HELLO repeats the first byte for byte"
    );
    let r = assert_acceptor_refused(&mut second, RejectCode::Replay);
    assert_eq!(
        r.message,
        "this HELLO's nonce was already used: it is a recorded join sent again"
    );
    assert!(error_of(second.close_cause(I))
        .to_string()
        .contains("look for a man in the middle"));

    // Another seed, another nonce: the same endpoint accepts it.
    let mut third = PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 2), acceptor).build();
    third.run();
    assert!(third.joined(I) && third.joined(A));
}

#[test]
fn code_6_replay_of_captured_hello_bytes_and_an_unverified_hello_is_not_remembered() {
    let acceptor = endpoint(keyed("node-b", 7), 100);
    let mut pair =
        PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 1), acceptor.clone()).build();
    let genuine = concat(&pair.transmit(I));
    // A forged copy is refused first, and must not poison the nonce.
    pair.deliver(A, &{
        let mut forged = genuine.clone();
        forged[HELLO_AT + 15] ^= 0x01;
        forged
    });
    assert_eq!(
        error_of(pair.close_cause(A)),
        &ConnectionError::Join(JoinError::RefusedPeer(Rejection::new(
            RejectCode::AuthenticationFailed,
            auth_failed_message()
        )))
    );

    let mut fresh = Solo::new(acceptor.accept(pair.now(), wall()).unwrap(), pair.now());
    fresh.input_all(&genuine);
    assert_eq!(
        fresh.events,
        [Event::Joined(PeerInfo {
            node_id: "node-a".into(),
            key_id: Some(secret(7).key_id()),
            max_frame: MIB8,
            clock_skew_ms: 0,
            tls: None,
            below_strict: Default::default(),
        })]
    );
    assert_eq!(kinds(&fresh.frames()), [FrameKind::Welcome]);

    let mut replayed = Solo::new(acceptor.accept(pair.now(), wall()).unwrap(), pair.now());
    replayed.input_all(&genuine);
    let err = replayed.error().clone();
    assert_eq!(
        err.clone(),
        ConnectionError::Join(JoinError::RefusedPeer(Rejection::new(
            RejectCode::Replay,
            "this HELLO's nonce was already used: it is a recorded join sent again"
        )))
    );
    let frames = replayed.frames();
    assert_eq!(kinds(&frames), [FrameKind::Reject]);
    assert_eq!(&as_reject(&frames[0]), err_rejection(&err));
    assert_eq!(replayed.events, [Event::Closed(CloseCause::Error(err))]);
}

#[test]
fn without_a_secret_a_repeated_hello_is_not_checked_for_replay() {
    // PROTOCOL.md §5.5 step 7 applies "with a secret" only.
    let acceptor = endpoint(plain("node-b"), 100);
    for _ in 0..2 {
        let mut pair =
            PairBuilder::from_endpoints(endpoint(plain("node-a"), 1), acceptor.clone()).build();
        pair.run();
        assert!(pair.joined(I) && pair.joined(A));
        assert_eq!(pair.conn(A).peer().unwrap().key_id, None);
    }
}

#[test]
fn code_7_cluster_name_mismatch() {
    let mut pair = refused_by_acceptor(keyed("node-a", 7), {
        let mut c = keyed("node-b", 7);
        c.cluster_name = "staging".into();
        c
    });
    let r = assert_acceptor_refused(&mut pair, RejectCode::ClusterMismatch);
    assert_eq!(r.message, "this node is not in cluster 'prod'");
}

#[test]
fn code_8_a_hello_of_another_version_is_refused_before_its_proof_is_checked() {
    for version in [0u16, 2, 0xffff] {
        let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
        exchange_with_tampered_hello(&mut pair, |flight| {
            let mut hello = JoinHello::decode(&flight[HELLO_AT..]).unwrap();
            hello.version = version;
            // A correct proof over the new bytes: only the version is wrong.
            let proof = initiator_proof(&secret(7), b"", &hello);
            hello.auth = Some(Auth {
                key_id: secret(7).key_id(),
                proof,
            });
            *flight = after_preface(&hello_frame(&hello));
        });
        let r = assert_acceptor_refused(&mut pair, RejectCode::UnsupportedVersion);
        assert_eq!(
            r.message,
            format!("HELLO version {version} is not supported; this node speaks version 1")
        );
    }
}

#[test]
fn code_8_an_initiator_refuses_a_welcome_of_another_version() {
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    exchange_with_tampered_welcome(&mut pair, |answer| {
        rewrite_welcome(answer, |w| w.version = 2)
    });
    let r = assert_refused(&mut pair, I, RejectCode::UnsupportedVersion);
    assert_eq!(
        r.message,
        "WELCOME version 2 is not supported; this node speaks version 1"
    );
    assert_acceptor_joined_then_refused(&pair);
}

/// A malformed join message is answered with REJECT 10 whose message is the parse error.
fn assert_malformed(pair: &mut Pair, refuser: Side, expected: ConnectionError) {
    let (r, err) = assert_reject_exchange(pair, refuser);
    assert_eq!(err, expected);
    assert_eq!(
        r,
        Rejection::new(RejectCode::Malformed, expected.to_string())
    );
}

#[test]
fn code_10_malformed_hellos_are_refused_with_the_parse_error() {
    let hello = |edit: &dyn Fn(&mut JoinHello)| {
        let mut h = JoinHello {
            version: 1,
            cluster_name: "prod".into(),
            node_id: "node-a".into(),
            timestamp_ms: WALL_MS,
            nonce: [5; 32],
            max_frame: 1024,
            auth: None,
        };
        edit(&mut h);
        h.encode().to_vec()
    };
    let with_trailing = {
        let mut b = hello(&|_| {});
        b.push(0);
        b
    };
    let with_bad_auth_flag = {
        let mut b = hello(&|_| {});
        *b.last_mut().unwrap() = 7;
        b
    };
    let non_utf8_cluster = {
        let mut b = hello(&|_| {});
        b[4] = 0xff;
        b
    };
    let cases: Vec<(&str, Vec<u8>, FieldError)> = vec![
        ("trailing byte", with_trailing, FieldError::Trailing(1)),
        (
            "empty node id",
            hello(&|h| h.node_id.clear()),
            FieldError::BadValue("node id"),
        ),
        (
            "auth flag 7",
            with_bad_auth_flag,
            FieldError::BadValue("auth"),
        ),
        (
            "cluster name not UTF-8",
            non_utf8_cluster,
            FieldError::NotUtf8("cluster name"),
        ),
        (
            "cut inside the timestamp",
            hello(&|_| {})[..20].to_vec(),
            FieldError::Truncated("timestamp"),
        ),
        (
            "node id of 256 bytes",
            hello(&|h| h.node_id = "n".repeat(256)),
            FieldError::TooLong {
                field: "node id",
                len: 256,
                max: 255,
            },
        ),
    ];
    for (what, body, problem) in cases {
        let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
        exchange_with_tampered_hello(&mut pair, |flight| {
            *flight = after_preface(&frame(FrameKind::Hello, &body));
        });
        eprintln!("{what}");
        assert_malformed(
            &mut pair,
            A,
            ConnectionError::Message(MessageError {
                message: FrameKind::Hello,
                problem,
            }),
        );
        assert_no_join(&pair);
        assert_eq!(
            error_of(pair.close_cause(I)).to_string(),
            format!(
                "the peer refused to join: malformed join message: {} (the peer has a bug or is not a palisade node)",
                error_of(pair.close_cause(A))
            )
        );
    }
}

#[test]
fn code_10_a_signed_hello_with_its_auth_flag_cleared_is_malformed() {
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    exchange_with_tampered_hello(&mut pair, |flight| flight[HELLO_AT + 60] = 0);
    assert_malformed(
        &mut pair,
        A,
        ConnectionError::Message(MessageError {
            message: FrameKind::Hello,
            problem: FieldError::Trailing(40),
        }),
    );
    assert_no_join(&pair);
}

#[test]
fn code_10_join_messages_out_of_order_are_refused_as_unexpected() {
    // A WELCOME to an acceptor that waits for HELLO.
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    let welcome = JoinWelcome {
        version: 1,
        node_id: "node-x".into(),
        timestamp_ms: WALL_MS,
        nonce: [1; 32],
        max_frame: 1024,
        auth: None,
    };
    exchange_with_tampered_hello(&mut pair, |flight| {
        *flight = after_preface(&frame(FrameKind::Welcome, &welcome.encode()));
    });
    assert_malformed(
        &mut pair,
        A,
        ConnectionError::UnexpectedFrame {
            kind: FrameKind::Welcome,
            during: "while waiting for HELLO",
        },
    );
    assert_eq!(
        error_of(pair.close_cause(A)).to_string(),
        "the peer sent a WELCOME frame while waiting for HELLO, which the protocol does not allow"
    );
    assert_no_join(&pair);

    // A HELLO to an initiator that waits for WELCOME.
    let mut pair = PairBuilder::new(plain("node-a"), plain("node-b")).build();
    exchange_with_tampered_welcome(&mut pair, |answer| {
        // The acceptor answers with a HELLO of its own instead.
        let hello = JoinHello {
            version: 1,
            cluster_name: "prod".into(),
            node_id: "node-b".into(),
            timestamp_ms: WALL_MS,
            nonce: [3; 32],
            max_frame: 1024,
            auth: None,
        };
        *answer = after_preface(&hello_frame(&hello));
    });
    assert_malformed(
        &mut pair,
        I,
        ConnectionError::UnexpectedFrame {
            kind: FrameKind::Hello,
            during: "while waiting for WELCOME",
        },
    );
    assert_acceptor_joined_then_refused(&pair);
}

#[test]
fn code_10_a_malformed_welcome_is_refused_by_the_initiator() {
    let mut pair = PairBuilder::new(keyed("node-a", 7), keyed("node-b", 7)).build();
    exchange_with_tampered_welcome(&mut pair, |answer| {
        answer.push(0);
        let len = u32::from_be_bytes(answer[PREFACE_LEN + 1..WELCOME_AT].try_into().unwrap());
        answer[PREFACE_LEN + 1..WELCOME_AT].copy_from_slice(&(len + 1).to_be_bytes());
    });
    assert_malformed(
        &mut pair,
        I,
        ConnectionError::Message(MessageError {
            message: FrameKind::Welcome,
            problem: FieldError::Trailing(1),
        }),
    );
    assert_acceptor_joined_then_refused(&pair);
}

#[test]
fn code_11_busy_when_the_replay_cache_is_full_of_live_nonces() {
    let mut config = keyed("node-b", 7);
    config.replay_cache_capacity = 1;
    let acceptor = endpoint(config, 100);
    let mut first =
        PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 1), acceptor.clone()).build();
    first.run();
    assert!(first.joined(A));
    let mut second = PairBuilder::from_endpoints(endpoint(keyed("node-a", 7), 2), acceptor).build();
    second.run();
    let r = assert_acceptor_refused(&mut second, RejectCode::Busy);
    assert!(
        r.message.starts_with(
            "the replay cache is full (1 plaintext joins inside the clock-skew window)"
        ),
        "{r}"
    );
}
