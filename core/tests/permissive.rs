//! Migration mode (`mode = permissive`, PROTOCOL.md §8.1) on the simulated Pair: a
//! permissive acceptor with TLS and a secret joins TLS and plaintext peers, with and
//! without the secret, and says on each link how it fell short; it still refuses
//! everything a strict node refuses for any other reason; a strict node refuses the
//! sub-strict peers exactly as before; and no first bytes make it panic.

mod conn_support;

use std::sync::OnceLock;

use bytes::Bytes;
use conn_support::*;
use palisade_core::frame_auth::TAG_LEN;
use palisade_core::preface::PREFACE;
use palisade_core::tls::{CertRefusal, TlsConfig, TlsError, TrustAnchors};
use palisade_core::{
    BelowStrict, CloseCause, Config, ConfigError, ConnectionError, Endpoint, Event, JoinError,
    Mode, PeerInfo, PrefaceError, RejectCode, Side,
};
use palisade_testkit::certs::TestCa;
use palisade_testkit::{Pair, PairBuilder};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// One CA for the whole file (certificates are made once: proptest runs many cases).
fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::new("cluster CA"))
}

fn tls(name: &str) -> TlsConfig {
    static TLS: OnceLock<[TlsConfig; 2]> = OnceLock::new();
    let [a, b] = TLS.get_or_init(|| ["node-a", "node-b"].map(|n| ca().tls(&ca().node(n))));
    match name {
        "node-a" => a.clone(),
        _ => b.clone(),
    }
}

/// The acceptor every test is about: TLS, the secret, and `mode`.
fn acceptor(mode: Mode) -> Config {
    let mut c = keyed("node-b", 7).with_tls(tls("node-b"));
    c.mode = mode;
    c
}

/// An initiator with TLS or not, the secret or not.
fn initiator(with_tls: bool, secret: Option<u8>) -> Config {
    let mut c = plain("node-a");
    if let Some(byte) = secret {
        c = keyed("node-a", byte);
    }
    if with_tls {
        c = c.with_tls(tls("node-a"));
    }
    c
}

fn run(i: Config, a: Config) -> Pair {
    let mut pair = PairBuilder::new(i, a).server_name("node-b").build();
    pair.run();
    pair
}

fn peer_of(pair: &Pair, side: Side) -> PeerInfo {
    pair.events(side)
        .iter()
        .find_map(|e| match e {
            Event::Joined(peer) => Some(peer.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{side:?} did not join: {:?}", pair.close_cause(side)))
}

fn below(plaintext: bool, without_secret: bool) -> BelowStrict {
    BelowStrict {
        plaintext,
        without_secret,
    }
}

/// Frames cross both ways, in order.
fn assert_talks(pair: &mut Pair) {
    for n in 0..3u8 {
        pair.send(I, Bytes::from(vec![n; 100])).unwrap();
        pair.send(A, Bytes::from(vec![n + 10; 3000])).unwrap();
    }
    pair.run_until(|p| p.frames(A).len() == 3 && p.frames(I).len() == 3);
    let got: Vec<u8> = pair.frames(A).iter().map(|f| f[0]).collect();
    assert_eq!(got, [0, 1, 2]);
    let got: Vec<u8> = pair.frames(I).iter().map(|f| f[0]).collect();
    assert_eq!(got, [10, 11, 12]);
}

fn close_error(pair: &Pair, side: Side) -> ConnectionError {
    error_of(pair.close_cause(side)).clone()
}

fn reject_code(pair: &Pair, side: Side) -> RejectCode {
    match close_error(pair, side) {
        ConnectionError::Join(j) => j.rejection().code,
        other => panic!("{side:?}: expected a join error, got {other:?}"),
    }
}

#[test]
fn a_permissive_acceptor_joins_every_kind_of_peer_and_says_how_it_fell_short() {
    for (with_tls, secret, expected) in [
        (true, Some(7), below(false, false)),
        (false, Some(7), below(true, false)),
        (true, None, below(false, true)),
        (false, None, below(true, true)),
    ] {
        let what = format!("tls {with_tls}, secret {secret:?}");
        let mut pair = run(initiator(with_tls, secret), acceptor(Mode::Permissive));
        assert!(pair.joined(I) && pair.joined(A), "{what}: {pair:?}");
        let theirs = peer_of(&pair, A);
        assert_eq!(theirs.below_strict, expected, "{what}");
        assert_eq!(theirs.tls.is_some(), with_tls, "{what}");
        assert_eq!(theirs.key_id, secret.map(secret_key_id), "{what}");
        // The initiator's view: what it dialed with was met in full.
        let ours = peer_of(&pair, I);
        assert_eq!(ours.below_strict, BelowStrict::default(), "{what}");
        assert_eq!(ours.key_id, theirs.key_id, "{what}");
        assert_talks(&mut pair);
    }
}

fn secret_key_id(byte: u8) -> palisade_core::KeyId {
    secret(byte).key_id()
}

#[test]
fn a_plaintext_link_with_the_secret_still_authenticates_its_frames_and_one_without_cannot() {
    for (secret, tagged) in [(Some(7), true), (None, false)] {
        let mut pair = run(initiator(false, secret), acceptor(Mode::Permissive));
        let before = concat(pair.sent(I)).len();
        pair.send(I, Bytes::from_static(b"12345")).unwrap();
        pair.run_until(|p| p.frames(A).len() == 1);
        let data = concat(pair.sent(I)).len() - before;
        let tag = if tagged { TAG_LEN } else { 0 };
        assert_eq!(data, 5 + 5 + tag, "secret {secret:?}");
        // Plaintext on the wire: the acceptor's stream opens with the preface.
        assert_eq!(&concat(pair.sent(A))[..PREFACE.len()], &PREFACE);
    }
}

#[test]
fn a_permissive_acceptor_without_tls_takes_peers_without_the_secret_only() {
    let mut a = keyed("node-b", 7);
    a.mode = Mode::Permissive;
    let pair = run(initiator(false, None), a.clone());
    assert_eq!(peer_of(&pair, A).below_strict, below(false, true));
    let pair = run(initiator(false, Some(7)), a.clone());
    assert_eq!(peer_of(&pair, A).below_strict, BelowStrict::default());
    // A TLS peer is told what it always was: this node does not speak TLS.
    let pair = run(initiator(true, Some(7)), a);
    assert_eq!(
        close_error(&pair, A),
        ConnectionError::Preface(PrefaceError::PeerSpeaksTls)
    );
}

#[test]
fn permissive_without_tls_or_a_secret_is_refused() {
    let mut c = plain("node-b");
    c.mode = Mode::Permissive;
    assert_eq!(
        Endpoint::new(c).err(),
        Some(ConfigError::NothingToMigrateTo)
    );
}

#[test]
fn a_permissive_acceptor_still_refuses_a_wrong_secret_another_cluster_and_a_forged_proof() {
    for with_tls in [true, false] {
        let pair = run(initiator(with_tls, Some(8)), acceptor(Mode::Permissive));
        assert_eq!(
            reject_code(&pair, A),
            RejectCode::UnknownKey,
            "tls {with_tls}"
        );
        assert_eq!(
            reject_code(&pair, I),
            RejectCode::UnknownKey,
            "tls {with_tls}"
        );
        assert!(!pair.joined(A) && !pair.joined(I));

        for secret in [Some(7), None] {
            let mut other = initiator(with_tls, secret);
            other.cluster_name = "staging".into();
            let pair = run(other, acceptor(Mode::Permissive));
            assert_eq!(reject_code(&pair, A), RejectCode::ClusterMismatch);
            assert!(!pair.joined(A));
        }
    }
    // A plaintext HELLO whose proof was altered: the proof is checked as in strict mode.
    let mut pair = PairBuilder::new(initiator(false, Some(7)), acceptor(Mode::Permissive)).build();
    exchange_with_tampered_hello(&mut pair, |flight| {
        let last = flight.len() - 1;
        flight[last] ^= 1;
    });
    assert_acceptor_refused(&mut pair, RejectCode::AuthenticationFailed);
}

#[test]
fn a_permissive_acceptor_still_checks_certificates_on_tls_links() {
    let rogue_ca = TestCa::new("rogue CA");
    // It trusts the cluster's CA, but its own certificate is from another.
    let rogue_tls = TlsConfig::new(
        rogue_ca.node("node-a").identity(),
        TrustAnchors::CaBundle(vec![ca().cert.clone()]),
    );
    let rogue = keyed("node-a", 7).with_tls(rogue_tls);
    let pair = run(rogue, acceptor(Mode::Permissive));
    assert!(!pair.joined(A));
    match close_error(&pair, A) {
        ConnectionError::Tls(TlsError::CertificateRefused(r)) => {
            assert!(matches!(*r, CertRefusal::UnknownIssuer { .. }), "{r:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_permissive_acceptor_diagnoses_strangers_as_a_strict_one_does() {
    let cases: [(&str, &[u8], PrefaceError); 6] = [
        (
            "HTTP GET",
            b"GET / HTTP/1.1\r\n",
            PrefaceError::PeerSpeaksHttp,
        ),
        (
            "HTTP POST",
            b"POST /join HTTP/1.1\r\n",
            PrefaceError::PeerSpeaksHttp,
        ),
        (
            "HTTP PATCH",
            b"PATCH /x HTTP/1.1\r\n",
            PrefaceError::PeerSpeaksHttp,
        ),
        (
            "SSH",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            PrefaceError::NotPalisade {
                first_bytes: b"SSH-2.0-Op".to_vec(),
            },
        ),
        (
            "magic with a wrong byte",
            b"PALISADX\x00\x01",
            PrefaceError::NotPalisade {
                first_bytes: b"PALISADX\x00\x01".to_vec(),
            },
        ),
        (
            "another version",
            b"PALISADE\x00\x02",
            PrefaceError::UnsupportedVersion { ours: 1, theirs: 2 },
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut solo = Solo::acceptor(acceptor(Mode::Permissive));
        assert_eq!(solo.input(bytes), bytes.len(), "{what}");
        assert_eq!(
            solo.error(),
            &ConnectionError::Preface(expected.clone()),
            "{what}"
        );
        assert!(solo.conn.is_drained(), "{what}");
        // Where the strict TLS acceptor's diagnosis is as precise, it is the same one.
        let mut strict = Solo::acceptor(acceptor(Mode::Strict));
        strict.input(bytes);
        if !bytes.starts_with(b"PALISADE") {
            assert_eq!(strict.error(), solo.error(), "{what}");
        }
    }
}

#[test]
fn a_permissive_acceptor_writes_nothing_before_the_peers_first_byte() {
    let mut solo = Solo::acceptor(acceptor(Mode::Permissive));
    assert!(solo.out.is_empty(), "no preface before the peer spoke");
    let deadline = solo.conn.poll_timeout().expect("first-bytes deadline");
    solo.conn.handle_timeout(deadline);
    solo.pump();
    assert!(matches!(
        solo.error(),
        ConnectionError::FirstBytesTimeout { .. }
    ));
    assert!(solo.out.is_empty() && solo.conn.is_drained());
}

#[test]
fn a_strict_acceptor_refuses_every_sub_strict_peer_as_before() {
    // Plaintext to TLS: each side names what the other speaks.
    for secret in [Some(7), None] {
        let pair = run(initiator(false, secret), acceptor(Mode::Strict));
        assert!(!pair.joined(A) && !pair.joined(I));
        assert_eq!(
            close_error(&pair, A),
            ConnectionError::Preface(PrefaceError::PeerSpeaksPlaintext)
        );
        assert_eq!(
            close_error(&pair, I),
            ConnectionError::Preface(PrefaceError::PeerSpeaksTls)
        );
    }
    // TLS without the secret: REJECT 1 on both sides.
    let pair = run(initiator(true, None), acceptor(Mode::Strict));
    assert_eq!(reject_code(&pair, A), RejectCode::SecretRequired);
    assert!(matches!(
        close_error(&pair, I),
        ConnectionError::Join(JoinError::RefusedByPeer(_))
    ));
    // Plaintext without the secret at a plaintext node with one: REJECT 1, on the wire.
    let mut pair = PairBuilder::new(initiator(false, None), keyed("node-b", 7)).build();
    pair.run();
    assert_acceptor_refused(&mut pair, RejectCode::SecretRequired);
}

#[test]
fn the_initiator_ignores_its_mode() {
    // A permissive initiator with a secret still refuses an acceptor without one, and a
    // permissive initiator with TLS still dials TLS (a plaintext acceptor refuses it).
    let mut i = initiator(true, Some(7));
    i.mode = Mode::Permissive;
    let mut unkeyed = plain("node-b").with_tls(tls("node-b"));
    unkeyed.mode = Mode::Strict;
    let pair = run(i.clone(), unkeyed);
    assert!(!pair.joined(I));
    let pair = run(i, keyed("node-b", 7));
    assert_eq!(
        close_error(&pair, A),
        ConnectionError::Preface(PrefaceError::PeerSpeaksTls)
    );
}

#[test]
fn a_close_before_the_first_byte_ends_the_link_cleanly() {
    let mut solo = Solo::acceptor(acceptor(Mode::Permissive));
    solo.conn.close(palisade_core::CloseReason::normal());
    solo.pump();
    assert!(matches!(
        solo.conn.close_cause(),
        Some(CloseCause::Local(_))
    ));
    assert!(solo.out.is_empty() && solo.conn.is_drained());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/permissive.txt"
        )))),
        ..ProptestConfig::default()
    })]

    /// Whatever arrives, in whatever chunks, a permissive acceptor neither panics nor
    /// keeps the link open past the end of the stream, and it ends as the strict
    /// acceptor for the peer's language ends: a TLS one when the first byte is not the
    /// preface's, a plaintext one with the same secret when it is.
    #[test]
    fn any_first_bytes_end_as_the_strict_acceptor_for_that_language(
        lead in prop_oneof![Just(b'P'), Just(0x16u8), any::<u8>()],
        rest in prop::collection::vec(any::<u8>(), 0..64),
        cut in 1usize..8,
    ) {
        let mut bytes = vec![lead];
        bytes.extend_from_slice(&rest);
        let strict = if lead == b'P' { keyed("node-b", 7) } else { acceptor(Mode::Strict) };
        let [mut permissive, mut strict] =
            [acceptor(Mode::Permissive), strict].map(Solo::acceptor);
        for solo in [&mut permissive, &mut strict] {
            for chunk in bytes.chunks(cut) {
                solo.input(chunk);
            }
            solo.conn.handle_eof();
            solo.pump();
            prop_assert!(solo.conn.is_closed() && solo.conn.is_drained());
            prop_assert!(!solo.conn.is_joined());
        }
        prop_assert_eq!(permissive.conn.close_cause(), strict.conn.close_cause());
        if lead == b'P' {
            // Plaintext answers: the same bytes a plaintext node writes.
            prop_assert_eq!(&permissive.out, &strict.out);
        }
    }
}

#[test]
fn an_unkeyed_hello_on_tls_is_reported_without_secret_only() {
    // The HELLO frame a no-secret peer sends carries no proof; over TLS the link is
    // encrypted and the peer's certificate checked, so only the secret is missing.
    let pair = run(initiator(true, None), acceptor(Mode::Permissive));
    let peer = peer_of(&pair, A);
    assert_eq!(peer.below_strict.to_string(), "without a join secret");
    assert!(peer.below_strict.is_any());
    assert!(peer.tls.is_some());
}
