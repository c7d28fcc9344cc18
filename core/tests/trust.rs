//! Joined links under changing trust (PROTOCOL.md §5.8): revocation and authorization at
//! the join and on every settings change, the re-join that carries a secret rotation
//! through without dropping a link, and the close at peer-certificate expiry.

use std::time::Duration;

use bytes::Bytes;
use palisade_core::revocation::CertFacts;
use palisade_core::tls::{CertRefusal, TlsError};
use palisade_core::{
    CloseCause, CloseCode, Config, ConnectionError, Endpoint, Event, JoinError, Keyring,
    NodePattern, RejectCode, Revocations, Revoked, SharedSecret, Side,
};
use palisade_testkit::certs::{CertSpec, TestCa, TestIdentity};
use palisade_testkit::{Pair, PairBuilder};

fn secret(byte: u8) -> SharedSecret {
    SharedSecret::new(vec![byte; 32]).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// Plaintext with the secret: frames carry tags, so a re-join switches their keys.
    Plain,
    /// TLS in CA mode with the default (safe) authorization.
    Tls,
}

struct Cluster {
    ca: TestCa,
    a: TestIdentity,
    b: TestIdentity,
}

impl Cluster {
    fn new() -> Self {
        let ca = TestCa::new("trust CA");
        Self {
            a: ca.node("node-a"),
            b: ca.node("node-b"),
            ca,
        }
    }

    fn config(&self, side: Side, transport: Transport, keyring: Keyring) -> Config {
        let (name, id) = match side {
            Side::Initiator => ("node-a", &self.a),
            Side::Acceptor => ("node-b", &self.b),
        };
        let mut c = Config::new("trust", name).with_keyring(keyring);
        // The simulated clock would jump to the certificates' end whenever the link is
        // idle; expiry has a test of its own.
        c.close_on_peer_expiry = false;
        match transport {
            Transport::Plain => c,
            Transport::Tls => c.with_tls(self.ca.tls(id)),
        }
    }

    fn pair(&self, transport: Transport, i: Config, a: Config) -> Pair {
        let _ = transport;
        let mut pair = PairBuilder::new(i, a).server_name("node-b").build();
        pair.run_until(|p| p.joined(Side::Initiator) && p.joined(Side::Acceptor));
        assert!(
            pair.joined(Side::Initiator) && pair.joined(Side::Acceptor),
            "{:?} / {:?}",
            pair.close_cause(Side::Initiator),
            pair.close_cause(Side::Acceptor)
        );
        pair
    }
}

fn update(pair: &mut Pair, side: Side, config: Config) {
    let endpoint = Endpoint::new(config).unwrap();
    let now = pair.now();
    pair.conn(side).update_settings(&endpoint, now);
}

fn key_ids(pair: &mut Pair) -> [Option<palisade_core::KeyId>; 2] {
    [Side::Initiator, Side::Acceptor].map(|s| pair.conn(s).peer().and_then(|p| p.key_id))
}

fn rejoins(pair: &Pair, side: Side) -> usize {
    pair.events(side)
        .iter()
        .filter(|e| matches!(e, Event::Rejoined(_)))
        .count()
}

fn close_code(pair: &Pair, side: Side) -> Option<CloseCode> {
    match pair.close_cause(side)? {
        CloseCause::Local(r) | CloseCause::Peer(r) => Some(r.code),
        CloseCause::Error(_) => None,
    }
}

fn payloads(n: u64, tag: u8) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(vec![tag, i as u8, (i >> 8) as u8]))
        .collect()
}

/// The three-step rotation (add B everywhere, make B primary everywhere, remove A
/// everywhere) with frames flowing both ways the whole time: the links re-join under B
/// when A goes, and every frame arrives, in order, once.
#[test]
fn a_three_step_rotation_rejoins_in_place_and_loses_no_frame() {
    for transport in [Transport::Plain, Transport::Tls] {
        let c = Cluster::new();
        let (a, b) = (secret(1), secret(2));
        let ring_a = Keyring::new(a.clone());
        let mut pair = c.pair(
            transport,
            c.config(Side::Initiator, transport, ring_a.clone()),
            c.config(Side::Acceptor, transport, ring_a),
        );
        let mut sent = [Vec::new(), Vec::new()];
        let mut send = |pair: &mut Pair, round: u8| {
            for (i, side) in [Side::Initiator, Side::Acceptor].into_iter().enumerate() {
                for p in payloads(20, round * 2 + i as u8) {
                    if let Err(e) = pair.send(side, p.clone()) {
                        panic!(
                            "{e}: {:?} / {:?}",
                            pair.close_cause(Side::Initiator),
                            pair.close_cause(Side::Acceptor)
                        );
                    }
                    sent[i].push(p);
                }
            }
        };
        let steps = [
            Keyring::new(a.clone()).with_accepted(b.clone()).unwrap(),
            Keyring::new(b.clone()).with_accepted(a.clone()).unwrap(),
            Keyring::new(b.clone()),
        ];
        for (round, ring) in steps.into_iter().enumerate() {
            for side in [Side::Acceptor, Side::Initiator] {
                send(&mut pair, round as u8 * 2 + idx(side) as u8);
                update(&mut pair, side, c.config(side, transport, ring.clone()));
                // A few steps only: frames are still in flight around the re-join.
                for _ in 0..2 {
                    pair.step();
                }
            }
        }
        send(&mut pair, 9);
        pair.run();
        for side in [Side::Initiator, Side::Acceptor] {
            assert!(
                pair.joined(side),
                "{transport:?} {side:?}: {:?}",
                pair.close_cause(side)
            );
            assert!(pair.close_cause(side).is_none());
        }
        assert_eq!(
            key_ids(&mut pair),
            [Some(b.key_id()), Some(b.key_id())],
            "{transport:?}"
        );
        assert_eq!(
            rejoins(&pair, Side::Initiator) + rejoins(&pair, Side::Acceptor),
            2,
            "{transport:?}: one re-join, seen by both sides"
        );
        assert_eq!(pair.frames(Side::Acceptor), sent[0], "{transport:?}");
        assert_eq!(pair.frames(Side::Initiator), sent[1], "{transport:?}");
    }
}

fn idx(side: Side) -> usize {
    match side {
        Side::Initiator => 0,
        Side::Acceptor => 1,
    }
}

/// The node that never got the new secret is cut at the other's first reload without A:
/// the re-join fails and both ends learn why (close code 9).
#[test]
fn a_node_without_the_current_secret_is_cut_by_the_rejoin() {
    for transport in [Transport::Plain, Transport::Tls] {
        let c = Cluster::new();
        let (a, b) = (secret(1), secret(2));
        let mut pair = c.pair(
            transport,
            c.config(Side::Initiator, transport, Keyring::new(a.clone())),
            c.config(Side::Acceptor, transport, Keyring::new(a.clone())),
        );
        update(
            &mut pair,
            Side::Acceptor,
            c.config(Side::Acceptor, transport, Keyring::new(b)),
        );
        pair.run();
        for side in [Side::Initiator, Side::Acceptor] {
            assert_eq!(
                close_code(&pair, side),
                Some(CloseCode::RejoinFailed),
                "{transport:?} {side:?}"
            );
        }
        let Some(CloseCause::Peer(reason)) = pair.close_cause(Side::Acceptor) else {
            panic!(
                "the acceptor is told by the peer: {:?}",
                pair.close_cause(Side::Acceptor)
            );
        };
        assert!(reason.message.contains("unknown key"), "{reason}");
        assert!(
            !reason.message.contains("holds key ids"),
            "the key ids held stay local: {reason}"
        );
    }
}

/// Both sides reload at the same moment: the link's initiator's re-join goes on and the
/// acceptor's is dropped, so there is exactly one.
#[test]
fn simultaneous_rejoins_settle_on_one() {
    let c = Cluster::new();
    let (a, b) = (secret(1), secret(2));
    let mut pair = c.pair(
        Transport::Plain,
        c.config(Side::Initiator, Transport::Plain, Keyring::new(a.clone())),
        c.config(Side::Acceptor, Transport::Plain, Keyring::new(a)),
    );
    for side in [Side::Initiator, Side::Acceptor] {
        update(
            &mut pair,
            side,
            c.config(side, Transport::Plain, Keyring::new(b.clone())),
        );
    }
    pair.send(Side::Initiator, Bytes::from_static(b"after"))
        .unwrap();
    pair.run();
    assert!(
        pair.close_cause(Side::Initiator).is_none() && pair.close_cause(Side::Acceptor).is_none()
    );
    assert_eq!(key_ids(&mut pair), [Some(b.key_id()), Some(b.key_id())]);
    assert_eq!(
        pair.frames(Side::Acceptor),
        vec![Bytes::from_static(b"after")]
    );
}

/// Revoking a node id closes its joined link at once (close code 6) and refuses its next
/// join with reject code 13, naming the entry on both ends.
#[test]
fn a_revoked_node_id_is_closed_and_refused() {
    for transport in [Transport::Plain, Transport::Tls] {
        let c = Cluster::new();
        let ring = Keyring::new(secret(1));
        let mut acceptor = c.config(Side::Acceptor, transport, ring.clone());
        let mut pair = c.pair(
            transport,
            c.config(Side::Initiator, transport, ring.clone()),
            acceptor.clone(),
        );
        acceptor.revoked = Revocations::parse("node-id node-a # stolen disk\n", "rev.txt").unwrap();
        update(&mut pair, Side::Acceptor, acceptor.clone());
        pair.run();
        let Some(CloseCause::Peer(reason)) = pair.close_cause(Side::Initiator) else {
            panic!("{:?}", pair.close_cause(Side::Initiator));
        };
        assert_eq!(reason.code, CloseCode::Revoked, "{transport:?}");
        assert!(
            reason.message.contains("rev.txt:1") && reason.message.contains("stolen disk"),
            "{reason}"
        );

        let mut again = PairBuilder::new(c.config(Side::Initiator, transport, ring), acceptor)
            .server_name("node-b")
            .build();
        again.run();
        let Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedByPeer(r)))) =
            again.close_cause(Side::Initiator)
        else {
            panic!("{:?}", again.close_cause(Side::Initiator));
        };
        assert_eq!(r.code, RejectCode::Revoked);
        assert!(r.message.contains("node-id node-a in rev.txt:1"), "{r}");
    }
}

/// A certificate revoked by serial is refused by TLS with the alert
/// `certificate_revoked`, and a joined link with it closes at the reload.
#[test]
fn a_revoked_certificate_is_refused_by_tls_and_closed_when_joined() {
    let c = Cluster::new();
    let ring = Keyring::new(secret(1));
    let mut acceptor = c.config(Side::Acceptor, Transport::Tls, ring.clone());
    let mut pair = c.pair(
        Transport::Tls,
        c.config(Side::Initiator, Transport::Tls, ring.clone()),
        acceptor.clone(),
    );
    let facts = CertFacts::parse(&c.a.chain[0]).unwrap();
    acceptor.revoked = Revocations::new().with(facts.serial_entry(), "rev.txt:7");
    update(&mut pair, Side::Acceptor, acceptor.clone());
    pair.run();
    assert_eq!(close_code(&pair, Side::Initiator), Some(CloseCode::Revoked));

    let mut again = PairBuilder::new(
        c.config(Side::Initiator, Transport::Tls, ring.clone()),
        acceptor,
    )
    .server_name("node-b")
    .build();
    again.run();
    match again.close_cause(Side::Acceptor) {
        Some(CloseCause::Error(ConnectionError::Tls(TlsError::CertificateRefused(r)))) => {
            assert!(matches!(r.as_ref(), CertRefusal::Revoked { .. }), "{r}");
            assert!(r.to_string().contains("rev.txt:7"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    match again.close_cause(Side::Initiator) {
        Some(CloseCause::Error(ConnectionError::Tls(TlsError::RefusedByPeer { alert }))) => {
            assert_eq!(alert, "certificate_revoked");
        }
        other => panic!("{other:?}"),
    }

    // A key revoked by its SPKI pin, on the initiator's side this time.
    let mut initiator = c.config(Side::Initiator, Transport::Tls, ring.clone());
    let b = CertFacts::parse(&c.b.chain[0]).unwrap();
    initiator.revoked = Revocations::new().with(Revoked::Spki(b.spki_sha256), "pins");
    let mut pinned = PairBuilder::new(initiator, c.config(Side::Acceptor, Transport::Tls, ring))
        .server_name("node-b")
        .build();
    pinned.run();
    assert!(
        matches!(
            pinned.close_cause(Side::Initiator),
            Some(CloseCause::Error(ConnectionError::Tls(TlsError::CertificateRefused(r)))) if matches!(r.as_ref(), CertRefusal::Revoked { .. })
        ),
        "{:?}",
        pinned.close_cause(Side::Initiator)
    );
}

/// `allowed_peers` is checked at the join on both sides, and a reload that no longer
/// allows a joined peer closes it (close code 7).
#[test]
fn allowed_peers_refuse_at_the_join_on_both_sides_and_close_on_reload() {
    let c = Cluster::new();
    let ring = Keyring::new(secret(1));
    let mut acceptor = c.config(Side::Acceptor, Transport::Tls, ring.clone());
    acceptor.allowed_peers = vec![NodePattern::new("db-*").unwrap()];
    let mut pair = PairBuilder::new(
        c.config(Side::Initiator, Transport::Tls, ring.clone()),
        acceptor,
    )
    .server_name("node-b")
    .build();
    pair.run();
    let Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedByPeer(r)))) =
        pair.close_cause(Side::Initiator)
    else {
        panic!("{:?}", pair.close_cause(Side::Initiator));
    };
    assert_eq!(r.code, RejectCode::IdentityNotAllowed);
    assert!(r.message.contains("allowed_peers [db-*]"), "{r}");

    let mut initiator = c.config(Side::Initiator, Transport::Tls, ring.clone());
    initiator.allowed_peers = vec![NodePattern::new("node-c").unwrap()];
    let mut pair = PairBuilder::new(
        initiator,
        c.config(Side::Acceptor, Transport::Tls, ring.clone()),
    )
    .server_name("node-b")
    .build();
    pair.run();
    assert!(matches!(
        pair.close_cause(Side::Acceptor),
        Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedByPeer(r)))) if r.code == RejectCode::IdentityNotAllowed
    ));

    let mut pair = c.pair(
        Transport::Tls,
        c.config(Side::Initiator, Transport::Tls, ring.clone()),
        c.config(Side::Acceptor, Transport::Tls, ring.clone()),
    );
    let mut narrowed = c.config(Side::Acceptor, Transport::Tls, ring);
    narrowed.allowed_peers = vec![NodePattern::new("node-z*").unwrap()];
    update(&mut pair, Side::Acceptor, narrowed);
    pair.run();
    assert_eq!(
        close_code(&pair, Side::Initiator),
        Some(CloseCode::NotAuthorized)
    );
}

/// Built in code, CA mode binds the node id to the certificate: a member of the cluster
/// cannot join as another node.
#[test]
fn built_in_code_a_node_id_not_in_the_certificate_is_refused() {
    let c = Cluster::new();
    let ring = Keyring::new(secret(1));
    let mut impostor = c.config(Side::Initiator, Transport::Tls, ring.clone());
    impostor.node_id = "node-c".into();
    let mut pair = PairBuilder::new(impostor, c.config(Side::Acceptor, Transport::Tls, ring))
        .server_name("node-b")
        .build();
    pair.run();
    assert!(
        matches!(
            pair.close_cause(Side::Initiator),
            Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedByPeer(r)))) if r.code == RejectCode::IdentityNotAllowed
        ),
        "{:?}",
        pair.close_cause(Side::Initiator)
    );
}

/// A peer certificate that ends while the link is joined closes it at its end (close
/// code 8); with `close_on_peer_expiry = false` the link stays.
#[test]
fn a_peer_certificate_expiring_closes_the_link_unless_told_otherwise() {
    for close in [true, false] {
        let ca = TestCa::new("trust CA");
        // The simulated clock starts 2026-01-01; this certificate ends a day later.
        let short =
            ca.issue(&CertSpec::new("node-a", &["node-a"]).valid((2025, 1, 1), (2026, 1, 2)));
        let b = ca.node("node-b");
        let ring = Keyring::new(secret(1));
        let mut acceptor = Config::new("trust", "node-b")
            .with_keyring(ring.clone())
            .with_tls(ca.tls(&b));
        acceptor.close_on_peer_expiry = close;
        let initiator = Config::new("trust", "node-a")
            .with_keyring(ring)
            .with_tls(ca.tls(&short));
        let mut pair = PairBuilder::new(initiator, acceptor)
            .server_name("node-b")
            // The simulation must reach a deadline a day away.
            .horizon(Duration::from_secs(10 * 365 * 86_400))
            .build();
        pair.run_until(|p| p.joined(Side::Acceptor) && p.joined(Side::Initiator));
        let joined_at = pair.now();
        let horizon = joined_at + Duration::from_secs(3 * 86_400);
        if close {
            pair.run_until(|p| p.close_cause(Side::Acceptor).is_some() || p.now() > horizon);
            let closed_at = pair.now();
            pair.run();
            assert_eq!(
                close_code(&pair, Side::Initiator),
                Some(CloseCode::CertificateExpired)
            );
            let lived = closed_at - joined_at;
            assert!(
                lived > Duration::from_secs(86_000) && lived < Duration::from_secs(86_500),
                "{lived:?}"
            );
        } else {
            // No timer at the peer certificate's end: the next one is years away (the
            // acceptor's own certificate, which the initiator watches).
            let next = pair.conn(Side::Acceptor).poll_timeout();
            assert!(next.is_none_or(|t| t > horizon), "{next:?}");
            let next = pair.conn(Side::Initiator).poll_timeout();
            assert!(next.is_some_and(|t| t > horizon), "{next:?}");
        }
    }
}

/// Settings that change while a link is still joining: the join finishes with the
/// settings it began with (a new primary secret does not break the proof already
/// signed), and the peer is decided under the new ones the moment it joins.
#[test]
fn settings_changed_during_the_handshake_apply_at_the_join() {
    let c = Cluster::new();
    let (a, b) = (secret(1), secret(2));
    let ring = Keyring::new(a.clone());
    let mut pair = PairBuilder::new(
        c.config(Side::Initiator, Transport::Tls, ring.clone()),
        c.config(Side::Acceptor, Transport::Tls, ring.clone()),
    )
    .server_name("node-b")
    .build();
    pair.step();
    assert!(!pair.joined(Side::Initiator));
    // The initiator's HELLO is signed with A; B becomes its primary meanwhile.
    let rotated = Keyring::new(b).with_accepted(a).unwrap();
    update(
        &mut pair,
        Side::Initiator,
        c.config(Side::Initiator, Transport::Tls, rotated),
    );
    let mut revoked = c.config(Side::Acceptor, Transport::Tls, ring);
    revoked.revoked = Revocations::parse("node-id node-a\n", "rev.txt").unwrap();
    update(&mut pair, Side::Acceptor, revoked);
    pair.run();
    assert!(
        pair.events(Side::Initiator)
            .iter()
            .any(|e| matches!(e, Event::Joined(_))),
        "the join completed: {:?}",
        pair.close_cause(Side::Initiator)
    );
    assert_eq!(close_code(&pair, Side::Initiator), Some(CloseCode::Revoked));
}
