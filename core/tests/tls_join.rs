//! TLS under the join, palisade against palisade on the simulated Pair: mutual TLS,
//! trust failures, expiry on a moved clock, every authorization rule, pinned mode,
//! versions and suites, plaintext/TLS mix-ups, record coalescing and the close.

use bytes::Bytes;
use palisade_core::tls::{
    Authorization, CertRefusal, NamePattern, NodeIdNames, TlsConfig, TlsConfigError, TlsError,
    TlsVersion,
};
use palisade_core::{
    CloseCause, CloseReason, Config, ConfigError, ConnectionError, Endpoint, JoinError,
    PrefaceError, RejectCode, SharedSecret, Side,
};
use palisade_testkit::certs::{pinned_tls, self_signed, CertSpec, TestCa, TestIdentity};
use palisade_testkit::{Pair, PairBuilder};

const DAY_MS: u64 = 86_400_000;

fn secret() -> SharedSecret {
    SharedSecret::new(vec![0x42; 32]).unwrap()
}

fn node(name: &str, tls: TlsConfig) -> Config {
    Config::new("prod", name)
        .with_secret(secret())
        .with_tls(tls)
}

fn run(i: Config, a: Config, build: impl FnOnce(PairBuilder) -> PairBuilder) -> Pair {
    let mut pair = build(PairBuilder::new(i, a)).build();
    pair.run();
    pair
}

fn tls_error(pair: &Pair, side: Side) -> TlsError {
    match pair.close_cause(side) {
        Some(CloseCause::Error(ConnectionError::Tls(e))) => e.clone(),
        other => panic!("{side:?}: expected a TLS error, got {other:?}"),
    }
}

fn refusal(pair: &Pair, side: Side) -> CertRefusal {
    match tls_error(pair, side) {
        TlsError::CertificateRefused(r) => *r,
        other => panic!("{side:?}: expected a certificate refusal, got {other:?}"),
    }
}

fn peer_alert(pair: &Pair, side: Side) -> String {
    match tls_error(pair, side) {
        TlsError::RefusedByPeer { alert } => alert,
        other => panic!("{side:?}: expected the peer's alert, got {other:?}"),
    }
}

fn assert_neither_joined(pair: &Pair) {
    assert!(!pair.joined(Side::Initiator), "initiator joined");
    assert!(!pair.joined(Side::Acceptor), "acceptor joined");
}

/// Both nodes' certificates from one CA, named after the nodes.
fn ca_pair(ca: &TestCa) -> (Config, Config) {
    (
        node("node-a", ca.tls(&ca.node("node-a"))),
        node("node-b", ca.tls(&ca.node("node-b"))),
    )
}

#[test]
fn mutual_tls_joins_in_two_round_trips_and_carries_frames_both_ways() {
    let ca = TestCa::new("cluster CA");
    let (i, a) = ca_pair(&ca);
    let mut pair = run(i, a, |b| b.server_name("node-b"));
    assert_eq!(pair.round_trips_to_joined(Side::Initiator), Some(2.0));
    assert_eq!(pair.round_trips_to_joined(Side::Acceptor), Some(1.5));

    let small: Vec<Bytes> = (0..100u8).map(|n| Bytes::from(vec![n; 64])).collect();
    let big = Bytes::from(vec![7u8; 200_000]);
    for f in &small {
        pair.send(Side::Initiator, f.clone()).unwrap();
    }
    pair.send(Side::Acceptor, big.clone()).unwrap();
    pair.run();
    assert_eq!(pair.frames(Side::Acceptor), small);
    assert_eq!(pair.frames(Side::Initiator), vec![big]);

    for (side, other) in [("node-a", Side::Acceptor), ("node-b", Side::Initiator)] {
        let peer = pair.conn(other).peer().cloned().unwrap();
        assert_eq!(peer.node_id, side);
        assert_eq!(peer.key_id, Some(secret().key_id()));
        let tls = peer.tls.expect("TLS details in PeerInfo");
        assert_eq!(tls.version, "TLSv1_3");
        assert!(
            tls.cipher_suite.starts_with("TLS13_"),
            "{}",
            tls.cipher_suite
        );
        assert!(tls.names.contains(side), "{:?}", tls.names);
    }
}

#[test]
fn a_round_trip_stays_two_at_other_latencies() {
    let ca = TestCa::new("cluster CA");
    let (i, a) = ca_pair(&ca);
    let pair = run(i, a, |b| b.latency(std::time::Duration::from_millis(37)));
    assert_eq!(pair.round_trips_to_joined(Side::Initiator), Some(2.0));
    assert_eq!(pair.round_trips_to_joined(Side::Acceptor), Some(1.5));
}

#[test]
fn a_certificate_from_another_ca_is_refused_naming_the_issuer_on_both_sides() {
    let ca = TestCa::new("cluster CA");
    let rogue = TestCa::new("rogue CA");
    // The initiator's certificate comes from the rogue CA but it trusts the cluster CA.
    let mut tls = ca.tls(&rogue.node("node-a"));
    tls.trust = palisade_core::tls::TrustAnchors::CaBundle(vec![ca.cert.clone()]);
    let i = node("node-a", tls);
    let a = node("node-b", ca.tls(&ca.node("node-b")));
    let pair = run(i, a, |b| b);
    assert_neither_joined(&pair);
    match refusal(&pair, Side::Acceptor) {
        CertRefusal::UnknownIssuer { issuer, subject } => {
            assert!(issuer.contains("rogue CA"), "{issuer}");
            assert!(subject.contains("node-a"), "{subject}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(peer_alert(&pair, Side::Initiator), "unknown_ca");
    let msg = tls_error(&pair, Side::Acceptor).to_string();
    assert!(
        msg.contains("rogue CA") && msg.contains("CA bundle"),
        "{msg}"
    );
}

#[test]
fn the_initiator_refuses_an_acceptor_from_another_ca() {
    let ca = TestCa::new("cluster CA");
    let rogue = TestCa::new("rogue CA");
    let i = node("node-a", ca.tls(&ca.node("node-a")));
    let mut tls = ca.tls(&rogue.node("node-b"));
    tls.trust = palisade_core::tls::TrustAnchors::CaBundle(vec![ca.cert.clone()]);
    let pair = run(i, node("node-b", tls), |b| b);
    assert_neither_joined(&pair);
    assert!(matches!(
        refusal(&pair, Side::Initiator),
        CertRefusal::UnknownIssuer { issuer, .. } if issuer.contains("rogue CA")
    ));
    assert_eq!(peer_alert(&pair, Side::Acceptor), "unknown_ca");
}

#[test]
fn a_bundle_with_two_cas_trusts_both_during_a_ca_rotation() {
    let old = TestCa::new("old CA");
    let new = TestCa::new("new CA");
    let bundle =
        palisade_core::tls::TrustAnchors::CaBundle(vec![old.cert.clone(), new.cert.clone()]);
    let mut ti = old.tls(&old.node("node-a"));
    ti.trust = bundle.clone();
    let mut ta = new.tls(&new.node("node-b"));
    ta.trust = bundle;
    let pair = run(node("node-a", ti), node("node-b", ta), |b| b);
    assert!(pair.joined(Side::Initiator) && pair.joined(Side::Acceptor));
}

#[test]
fn an_expired_certificate_is_refused_once_the_clock_moves_past_it() {
    let ca = TestCa::new("cluster CA");
    // Valid until 2026-02-01; the Pair's clock starts at 2026-01-01.
    let short = ca.issue(&CertSpec::new("node-a", &["node-a"]).valid((2025, 1, 1), (2026, 2, 1)));
    let make = || {
        (
            node("node-a", ca.tls(&short)),
            node("node-b", ca.tls(&ca.node("node-b"))),
        )
    };
    let (i, a) = make();
    let before = run(i, a, |b| b);
    assert!(before.joined(Side::Acceptor), "valid before expiry");

    let (i, a) = make();
    let after = run(i, a, |b| {
        b.wall_clock_ms(palisade_testkit::EPOCH_MS + 45 * DAY_MS)
    });
    assert_neither_joined(&after);
    match refusal(&after, Side::Acceptor) {
        CertRefusal::Expired { not_after, now } => {
            assert_eq!(not_after, "2026-02-01T00:00:00Z");
            assert_eq!(now, "2026-02-15T00:00:00Z");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(peer_alert(&after, Side::Initiator), "certificate_expired");
}

#[test]
fn a_certificate_not_yet_valid_is_refused_with_its_start_date() {
    let ca = TestCa::new("cluster CA");
    let future = ca.issue(&CertSpec::new("node-b", &["node-b"]).valid((2027, 1, 1), (2028, 1, 1)));
    let pair = run(
        node("node-a", ca.tls(&ca.node("node-a"))),
        node("node-b", ca.tls(&future)),
        |b| b,
    );
    assert_neither_joined(&pair);
    assert!(matches!(
        refusal(&pair, Side::Initiator),
        CertRefusal::NotYetValid { not_before, .. } if not_before == "2027-01-01T00:00:00Z"
    ));
}

fn with_rules(mut tls: TlsConfig, rules: Authorization) -> TlsConfig {
    tls.authorization = rules;
    tls
}

/// Every rule off, as the base of a test of one rule alone (`Authorization::default()`
/// turns `verify_hostname` and `node_id_in_cert` on).
fn no_rules() -> Authorization {
    Authorization {
        verify_hostname: false,
        node_id_in_cert: false,
        ..Authorization::default()
    }
}

#[test]
fn verify_hostname_accepts_the_dialed_name_or_ip_and_refuses_another() {
    let ca = TestCa::new("cluster CA");
    // The certificate names the node id too, for node_id_in_cert (on by default, and
    // CA mode needs some name rule besides verify_hostname).
    let b = ca.issue(&CertSpec::new(
        "node-b",
        &["node-b", "node-b.prod.svc", "127.0.0.1"],
    ));
    let rules = Authorization {
        verify_hostname: true,
        ..Authorization::default()
    };
    let make = || {
        (
            node(
                "node-a",
                with_rules(ca.tls(&ca.node("node-a")), rules.clone()),
            ),
            node("node-b", ca.tls(&b)),
        )
    };
    for good in ["node-b.prod.svc", "NODE-B.prod.svc", "127.0.0.1"] {
        let (i, a) = make();
        let pair = run(i, a, |p| p.server_name(good));
        assert!(
            pair.joined(Side::Initiator),
            "dialing {good}: {:?}",
            pair.close_cause(Side::Initiator)
        );
    }
    let (i, a) = make();
    let pair = run(i, a, |p| p.server_name("node-c.prod.svc"));
    assert_neither_joined(&pair);
    match refusal(&pair, Side::Initiator) {
        CertRefusal::HostnameMismatch {
            expected,
            presented,
        } => {
            assert_eq!(expected, "node-c.prod.svc");
            assert!(presented.contains("node-b.prod.svc"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(peer_alert(&pair, Side::Acceptor), "bad_certificate");
}

#[test]
fn share_name_with_own_cert_accepts_a_shared_dns_name_and_refuses_a_stranger() {
    let ca = TestCa::new("cluster CA");
    let rules = Authorization {
        share_name_with_own_cert: true,
        ..no_rules()
    };
    let a = ca.issue(&CertSpec::new("node-a", &["node-a", "cluster.prod"]));
    let b = ca.issue(&CertSpec::new("node-b", &["node-b", "cluster.prod"]));
    let stranger = ca.issue(&CertSpec::new("node-x", &["node-x", "cluster.staging"]));

    let pair = run(
        node("node-a", with_rules(ca.tls(&a), rules.clone())),
        node("node-b", with_rules(ca.tls(&b), rules.clone())),
        |p| p,
    );
    assert!(pair.joined(Side::Initiator) && pair.joined(Side::Acceptor));

    let pair = run(
        node("node-x", ca.tls(&stranger)),
        node("node-b", with_rules(ca.tls(&b), rules)),
        |p| p,
    );
    assert_neither_joined(&pair);
    match refusal(&pair, Side::Acceptor) {
        CertRefusal::NoSharedName { ours, presented } => {
            assert!(ours.contains(&"cluster.prod".to_string()));
            assert!(presented.contains("cluster.staging"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(peer_alert(&pair, Side::Initiator), "access_denied");
}

#[test]
fn allowed_names_match_dns_and_uri_names_and_refuse_the_rest() {
    let ca = TestCa::new("cluster CA");
    let allow = |patterns: &[&str]| Authorization {
        allowed_names: patterns
            .iter()
            .map(|p| NamePattern::new(*p).unwrap())
            .collect(),
        ..no_rules()
    };
    let acceptor =
        |rules: Authorization| node("node-b", with_rules(ca.tls(&ca.node("node-b")), rules));
    let dns = ca.issue(&CertSpec::new("node-a", &["node-a.cluster.svc.local"]));
    let spiffe = ca
        .issue(&CertSpec::new("workload", &[]).uris(&["spiffe://cluster.local/ns/prod/sa/node-a"]));

    let cases: [(&TestIdentity, &[&str], bool); 5] = [
        (&dns, &["*.cluster.svc.local"], true),
        (&dns, &["*.other.svc.local", "node-*"], false),
        (&spiffe, &["spiffe://cluster.local/ns/prod/sa/*"], true),
        (&spiffe, &["spiffe://cluster.local/ns/dev/sa/*"], false),
        // With a SAN present the CN does not count.
        (&spiffe, &["workload"], false),
    ];
    for (cert, patterns, accepted) in cases {
        let pair = run(
            node("node-a", ca.tls(cert)),
            acceptor(allow(patterns)),
            |p| p,
        );
        assert_eq!(pair.joined(Side::Acceptor), accepted, "{patterns:?}");
        if !accepted {
            match refusal(&pair, Side::Acceptor) {
                CertRefusal::NameNotAllowed { allowed, .. } => {
                    assert_eq!(allowed.len(), patterns.len())
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(peer_alert(&pair, Side::Initiator), "access_denied");
        }
    }
}

#[test]
fn allowed_names_fall_back_to_the_cn_of_a_certificate_without_sans() {
    let ca = TestCa::new("cluster CA");
    let cn_only = ca.issue(&CertSpec::new("node-7", &[]));
    let rules = Authorization {
        allowed_names: vec![NamePattern::new("node-*").unwrap()],
        ..no_rules()
    };
    let pair = run(
        node("node-7", ca.tls(&cn_only)),
        node("node-b", with_rules(ca.tls(&ca.node("node-b")), rules)),
        |p| p,
    );
    assert!(
        pair.joined(Side::Acceptor),
        "{:?}",
        pair.close_cause(Side::Acceptor)
    );
}

#[test]
fn node_id_in_cert_refuses_a_node_id_the_certificate_does_not_name() {
    let ca = TestCa::new("cluster CA");
    let rules = Authorization {
        node_id_in_cert: true,
        ..no_rules()
    };
    let acceptor = || {
        node(
            "node-b",
            with_rules(ca.tls(&ca.node("node-b")), rules.clone()),
        )
    };
    // node-a's certificate, node-a's id: accepted.
    let pair = run(
        node("node-a", ca.tls(&ca.node("node-a"))),
        acceptor(),
        |p| p,
    );
    assert!(pair.joined(Side::Acceptor));

    // node-a's certificate, claiming to be node-z: TLS passes, the join is refused.
    let pair = run(
        node("node-z", ca.tls(&ca.node("node-a"))),
        acceptor(),
        |p| p,
    );
    assert_neither_joined(&pair);
    match pair.close_cause(Side::Acceptor) {
        Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedPeer(r)))) => {
            assert_eq!(r.code, RejectCode::IdentityNotAllowed);
            assert!(
                r.message.contains("node-z") && r.message.contains("node-a"),
                "{}",
                r.message
            );
        }
        other => panic!("{other:?}"),
    }
    match pair.close_cause(Side::Initiator) {
        Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedByPeer(r)))) => {
            assert_eq!(r.code, RejectCode::IdentityNotAllowed)
        }
        other => panic!("{other:?}"),
    }

    // The initiator checks the acceptor's WELCOME too.
    let i = node(
        "node-a",
        with_rules(ca.tls(&ca.node("node-a")), rules.clone()),
    );
    let a = node("node-q", ca.tls(&ca.node("node-b")));
    let pair = run(i, a, |p| p.server_name("node-b"));
    assert!(!pair.joined(Side::Initiator));
    assert!(matches!(
        pair.close_cause(Side::Initiator),
        Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedPeer(r))))
            if r.code == RejectCode::IdentityNotAllowed
    ));
}

#[test]
fn node_id_in_cert_matches_dns_names_exactly_never_case_folded_or_ip_names() {
    let ca = TestCa::new("cluster CA");
    let rules = Authorization {
        node_id_in_cert: true,
        ..no_rules()
    };
    let acceptor = || {
        node(
            "node-b",
            with_rules(ca.tls(&ca.node("node-b")), rules.clone()),
        )
    };
    let cert = ca.issue(&CertSpec::new("node-cn", &["node-1", "127.0.0.1"]));
    for (claimed, joins) in [
        ("node-1", true),
        ("NODE-1", false),
        ("127.0.0.1", false),
        ("node-cn", false),
    ] {
        let pair = run(node(claimed, ca.tls(&cert)), acceptor(), |p| p);
        assert_eq!(pair.joined(Side::Acceptor), joins, "node id {claimed:?}");
        if !joins {
            match pair.close_cause(Side::Acceptor) {
                Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedPeer(r)))) => {
                    assert_eq!(r.code, RejectCode::IdentityNotAllowed);
                    assert!(r.message.contains("byte for byte"), "{}", r.message);
                }
                other => panic!("{claimed}: {other:?}"),
            }
        }
    }
    // SPIFFE-style URI names count only when asked for.
    let spiffe = ca.issue(&CertSpec::new("x", &["node-2"]).uris(&["spiffe://prod/node-9"]));
    for (names, joins) in [(NodeIdNames::Dns, false), (NodeIdNames::DnsAndUri, true)] {
        let rules = Authorization {
            node_id_names: names,
            ..rules.clone()
        };
        let a = node("node-b", with_rules(ca.tls(&ca.node("node-b")), rules));
        let pair = run(node("spiffe://prod/node-9", ca.tls(&spiffe)), a, |p| p);
        assert_eq!(pair.joined(Side::Acceptor), joins, "{names:?}");
    }
}

#[test]
fn tls_joins_take_no_replay_cache_space_so_a_reconnect_storm_never_makes_the_node_busy() {
    // The proofs are bound to each session's exporter value, so a recorded HELLO fails
    // on any other session: the cache is not consulted, and a capacity of one is plenty.
    let ca = TestCa::new("cluster CA");
    let (i, mut a) = ca_pair(&ca);
    a.replay_cache_capacity = 1;
    a.replay_cache_per_source = 1;
    let acceptor = Endpoint::new(a).unwrap();
    let initiator = Endpoint::new(i).unwrap();
    for n in 0..5 {
        let mut pair = PairBuilder::from_endpoints(initiator.clone(), acceptor.clone()).build();
        pair.run();
        assert!(
            pair.joined(Side::Acceptor) && pair.joined(Side::Initiator),
            "join {n}: {:?}",
            pair.close_cause(Side::Acceptor)
        );
    }
}

#[test]
fn pinned_mode_joins_nodes_sharing_one_self_signed_certificate() {
    // The development setup: one certificate and key on every node, no SAN.
    let shared = self_signed(&CertSpec::new("palisade-dev", &[]));
    let pair = run(
        node("node-a", pinned_tls(&shared, &[&shared])),
        node("node-b", pinned_tls(&shared, &[&shared])),
        |p| p,
    );
    assert!(pair.joined(Side::Initiator) && pair.joined(Side::Acceptor));
    assert_eq!(pair.round_trips_to_joined(Side::Initiator), Some(2.0));
}

#[test]
fn pinned_mode_refuses_any_other_certificate_even_with_the_same_name() {
    let shared = self_signed(&CertSpec::new("palisade-dev", &[]));
    let impostor = self_signed(&CertSpec::new("palisade-dev", &[]));
    let pair = run(
        node("node-a", pinned_tls(&impostor, &[&shared])),
        node("node-b", pinned_tls(&shared, &[&shared])),
        |p| p,
    );
    assert_neither_joined(&pair);
    match refusal(&pair, Side::Acceptor) {
        CertRefusal::NotPinned { subject, sha256 } => {
            assert!(subject.contains("palisade-dev"));
            assert_eq!(sha256.len(), 64);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(peer_alert(&pair, Side::Initiator), "unknown_ca");
}

#[test]
fn pinned_mode_still_applies_validity_dates() {
    let old = self_signed(&CertSpec::new("palisade-dev", &[]).valid((2024, 1, 1), (2025, 1, 1)));
    let pair = run(
        node("node-a", pinned_tls(&old, &[&old])),
        node("node-b", pinned_tls(&old, &[&old])),
        |p| p,
    );
    assert_neither_joined(&pair);
    assert!(matches!(
        refusal(&pair, Side::Initiator),
        CertRefusal::Expired { .. }
    ));
}

#[test]
fn a_tls12_only_peer_is_refused_by_a_tls13_minimum_node_with_a_clear_error() {
    let ca = TestCa::new("cluster CA");
    let mut old = ca.tls(&ca.node("node-a"));
    old.cipher_suites = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()];
    let mut strict = ca.tls(&ca.node("node-b"));
    strict.min_version = TlsVersion::Tls13;
    let pair = run(node("node-a", old), node("node-b", strict), |p| p);
    assert_neither_joined(&pair);
    match tls_error(&pair, Side::Acceptor) {
        TlsError::Incompatible { detail } => assert!(detail.contains("only TLS 1.2"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(peer_alert(&pair, Side::Initiator), "protocol_version");
    let msg = tls_error(&pair, Side::Initiator).to_string();
    assert!(msg.contains("min_tls"), "{msg}");
}

#[test]
fn tls12_with_a_chosen_suite_joins_and_reports_the_suite() {
    let ca = TestCa::new("cluster CA");
    let mut i = ca.tls(&ca.node("node-a"));
    i.cipher_suites = vec!["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".into()];
    let mut pair = run(
        node("node-a", i),
        node("node-b", ca.tls(&ca.node("node-b"))),
        |p| p,
    );
    assert!(pair.joined(Side::Initiator) && pair.joined(Side::Acceptor));
    let tls = pair
        .conn(Side::Acceptor)
        .peer()
        .unwrap()
        .tls
        .clone()
        .unwrap();
    assert_eq!(tls.version, "TLSv1_2");
    assert_eq!(
        tls.cipher_suite,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
    );
    // TLS 1.2 has one more round trip before the join can start.
    assert_eq!(pair.round_trips_to_joined(Side::Initiator), Some(3.0));
}

#[test]
fn unknown_suite_names_and_unusable_settings_are_config_errors() {
    let ca = TestCa::new("cluster CA");
    let mut tls = ca.tls(&ca.node("node-a"));
    tls.cipher_suites = vec!["TLS_RSA_WITH_RC4_128_MD5".into()];
    match Endpoint::new(node("node-a", tls.clone())) {
        Err(ConfigError::Tls(TlsConfigError::UnknownCipherSuite { name, known })) => {
            assert_eq!(name, "TLS_RSA_WITH_RC4_128_MD5");
            assert!(known.contains(&"TLS13_AES_128_GCM_SHA256"));
        }
        other => panic!("{other:?}"),
    }
    tls.cipher_suites = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()];
    tls.min_version = TlsVersion::Tls13;
    assert!(matches!(
        Endpoint::new(node("node-a", tls)),
        Err(ConfigError::Tls(TlsConfigError::NoUsableSuite {
            min_version: TlsVersion::Tls13
        }))
    ));

    let mut mismatched = ca.tls(&ca.node("node-a"));
    mismatched.identity.key = ca.node("node-b").identity().key;
    match Endpoint::new(node("node-a", mismatched)) {
        Err(ConfigError::Tls(TlsConfigError::BadKey(detail))) => {
            assert!(!detail.is_empty())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_plaintext_peer_and_a_tls_peer_tell_each_other_what_is_wrong() {
    let ca = TestCa::new("cluster CA");
    let plain = |name: &str| Config::new("prod", name).with_secret(secret());
    let preface_err = |pair: &Pair, side| match pair.close_cause(side) {
        Some(CloseCause::Error(ConnectionError::Preface(e))) => e.clone(),
        other => panic!("{side:?}: {other:?}"),
    };

    // Plaintext initiator, TLS acceptor.
    let pair = run(
        plain("node-a"),
        node("node-b", ca.tls(&ca.node("node-b"))),
        |p| p,
    );
    assert_neither_joined(&pair);
    assert_eq!(
        preface_err(&pair, Side::Acceptor),
        PrefaceError::PeerSpeaksPlaintext
    );
    assert_eq!(
        preface_err(&pair, Side::Initiator),
        PrefaceError::PeerSpeaksTls
    );

    // TLS initiator, plaintext acceptor.
    let pair = run(
        node("node-a", ca.tls(&ca.node("node-a"))),
        plain("node-b"),
        |p| p,
    );
    assert_neither_joined(&pair);
    assert_eq!(
        preface_err(&pair, Side::Acceptor),
        PrefaceError::PeerSpeaksTls
    );
    assert_eq!(
        preface_err(&pair, Side::Initiator),
        PrefaceError::PeerSpeaksPlaintext
    );
}

#[test]
fn small_frames_are_coalesced_into_full_records() {
    let ca = TestCa::new("cluster CA");
    let (i, a) = ca_pair(&ca);
    let mut pair = run(i, a, |p| p);
    let frames = 2_000;
    for n in 0..frames {
        pair.send(Side::Initiator, Bytes::from(vec![n as u8; 64]))
            .unwrap();
    }
    let wire: usize = pair.transmit(Side::Initiator).iter().map(Bytes::len).sum();
    let plaintext = frames * (64 + 5);
    // One record per frame would add 22 bytes (header, tag, type) to each: +32 %.
    // Full 16 KiB records add 22 bytes per 16 KiB: well under 1 %.
    assert!(wire > plaintext);
    assert!(
        wire < plaintext + plaintext / 100,
        "{wire} wire bytes for {plaintext} plaintext bytes: frames were not coalesced"
    );
}

/// TLS records in `wire`, by their 5-byte headers.
fn record_count(wire: &[u8]) -> usize {
    let mut at = 0;
    let mut count = 0;
    while at + 5 <= wire.len() {
        let len = u16::from_be_bytes([wire[at + 3], wire[at + 4]]) as usize;
        at += 5 + len;
        count += 1;
    }
    assert_eq!(at, wire.len(), "records do not tile the output");
    count
}

#[test]
fn mid_sized_frames_queued_by_reference_still_fill_whole_records() {
    let ca = TestCa::new("cluster CA");
    let (i, a) = ca_pair(&ca);
    let mut pair = run(i, a, |p| p);
    // 1 KiB payloads are queued by reference once joined over TLS: two slices a frame,
    // more than one vectored write takes. Each write still ends on a record boundary,
    // so only the last record is short.
    let frames: usize = 200;
    for n in 0..frames {
        pair.send(Side::Initiator, Bytes::from(vec![n as u8; 1024]))
            .unwrap();
    }
    let chunks = pair.transmit(Side::Initiator);
    let wire: Vec<u8> = chunks.iter().flat_map(|b| b.iter().copied()).collect();
    let plaintext = frames * (1024 + 5);
    assert_eq!(
        record_count(&wire),
        plaintext.div_ceil(16 * 1024),
        "{} wire bytes in {} writes",
        wire.len(),
        chunks.len()
    );
    for chunk in &chunks {
        pair.deliver(Side::Acceptor, chunk);
    }
    let got = pair.frames(Side::Acceptor);
    assert_eq!(got.len(), frames);
    assert!(got
        .iter()
        .enumerate()
        .all(|(n, f)| f.len() == 1024 && f.iter().all(|&b| b == n as u8)));
}

#[test]
fn a_large_frame_header_shares_a_record_with_the_payload() {
    let ca = TestCa::new("cluster CA");
    let (i, a) = ca_pair(&ca);
    let mut pair = run(i, a, |p| p);
    // Large payloads are queued without a copy, apart from their 5-byte headers; one
    // record per header would make 8 records of 27 bytes beside the payloads' own.
    let frames: usize = 8;
    for n in 0..frames {
        pair.send(Side::Initiator, Bytes::from(vec![n as u8; 16 * 1024]))
            .unwrap();
    }
    let chunks = pair.transmit(Side::Initiator);
    let wire: Vec<u8> = chunks.iter().flat_map(|b| b.iter().copied()).collect();
    let plaintext = frames * (16 * 1024 + 5);
    let full_records = plaintext.div_ceil(16 * 1024);
    assert_eq!(
        record_count(&wire),
        full_records,
        "{} wire bytes",
        wire.len()
    );
    pair.deliver(Side::Acceptor, &wire);
    let got = pair.frames(Side::Acceptor);
    assert_eq!(got.len(), frames);
    assert!(got
        .iter()
        .enumerate()
        .all(|(n, f)| f.len() == 16 * 1024 && f[0] == n as u8));
}

#[test]
fn up_to_256_kib_of_frames_leave_in_one_write() {
    let ca = TestCa::new("cluster CA");
    let (i, a) = ca_pair(&ca);
    let mut pair = run(i, a, |p| p);
    // Three 64 KiB frames: one chunk of records, not one per 64 KiB of rustls's
    // default buffer (which split every frame's last record into a second write).
    for n in 0..3u8 {
        pair.send(Side::Initiator, Bytes::from(vec![n; 64 * 1024]))
            .unwrap();
    }
    let chunks = pair.transmit(Side::Initiator);
    assert_eq!(
        chunks.len(),
        1,
        "{:?}",
        chunks.iter().map(Bytes::len).collect::<Vec<_>>()
    );
    pair.deliver(Side::Acceptor, &chunks[0]);
    assert_eq!(pair.frames(Side::Acceptor).len(), 3);
}

#[test]
fn a_graceful_close_reaches_the_peer_and_both_sides_drain() {
    let ca = TestCa::new("cluster CA");
    let (i, a) = ca_pair(&ca);
    let mut pair = run(i, a, |p| p);
    pair.send(Side::Initiator, &b"last words"[..]).unwrap();
    pair.conn(Side::Initiator).close(CloseReason::default());
    pair.run();
    assert_eq!(
        pair.frames(Side::Acceptor),
        vec![Bytes::from_static(b"last words")]
    );
    assert!(matches!(
        pair.close_cause(Side::Acceptor),
        Some(CloseCause::Peer(_))
    ));
    assert!(pair.conn(Side::Initiator).is_drained());
    // The acceptor sends nothing after the peer's CLOSE, then is drained as well.
    assert!(pair.conn(Side::Acceptor).is_closed());
    pair.transmit(Side::Acceptor);
    assert!(pair.conn(Side::Acceptor).is_drained());
}

#[test]
fn the_handshake_deadline_covers_the_tls_handshake() {
    let ca = TestCa::new("cluster CA");
    let (i, _) = ca_pair(&ca);
    let endpoint = Endpoint::new(i).unwrap();
    let now = std::time::Instant::now();
    let mut conn = endpoint
        .connect("node-b", now, std::time::SystemTime::now())
        .unwrap();
    let client_hello = conn.poll_transmit().expect("a ClientHello");
    assert_eq!(client_hello.first(), Some(&0x16));
    let deadline = conn.poll_timeout().unwrap();
    conn.handle_timeout(deadline);
    assert!(matches!(
        conn.close_cause(),
        Some(CloseCause::Error(ConnectionError::HandshakeTimeout { .. }))
    ));
    // Nothing can be encrypted before the TLS handshake ends, so nothing is owed.
    while conn.poll_transmit().is_some() {}
    assert!(conn.is_drained());
}

#[test]
fn no_cipher_suite_in_common_is_named_on_both_sides() {
    let ca = TestCa::new("cluster CA");
    let mut i = ca.tls(&ca.node("node-a"));
    i.cipher_suites = vec!["TLS13_AES_128_GCM_SHA256".into()];
    let mut a = ca.tls(&ca.node("node-b"));
    a.cipher_suites = vec!["TLS13_CHACHA20_POLY1305_SHA256".into()];
    let pair = run(node("node-a", i), node("node-b", a), |p| p);
    assert_neither_joined(&pair);
    match tls_error(&pair, Side::Acceptor) {
        TlsError::Incompatible { detail } => assert_eq!(detail, "no cipher suite in common"),
        other => panic!("{other:?}"),
    }
    assert_eq!(peer_alert(&pair, Side::Initiator), "handshake_failure");
    let msg = tls_error(&pair, Side::Initiator).to_string();
    assert!(
        msg.contains("no cipher suite or TLS version in common"),
        "{msg}"
    );
}

#[test]
fn each_side_sees_the_certificate_the_other_presented_and_its_serial() {
    let ca = TestCa::new("cluster CA");
    let (a_id, b_id) = (ca.node("node-a"), ca.node("node-b"));
    let (i, a) = (node("node-a", ca.tls(&a_id)), node("node-b", ca.tls(&b_id)));
    let mut pair = run(i, a, |b| b.server_name("node-b"));
    for (side, presented) in [(Side::Initiator, &b_id), (Side::Acceptor, &a_id)] {
        let tls = pair.conn(side).peer().and_then(|p| p.tls.clone()).unwrap();
        assert_eq!(tls.certificate, presented.chain[0]);
        let serial = tls.serial().expect("a serial");
        assert!(!serial.is_empty());
        // Debug names the serial, not the DER.
        let shown = format!("{tls:?}");
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        assert!(shown.contains(&hex) && shown.len() < 400, "{shown}");
    }
}

/// Each side's writes during the join, flight by flight: (writes, TLS records) per
/// flight, the initiator's flights at even positions.
fn join_flights(
    i: &mut palisade_core::Connection,
    a: &mut palisade_core::Connection,
) -> Vec<(usize, usize)> {
    let now = std::time::Instant::now();
    let mut flights = Vec::new();
    for turn in 0..8 {
        let (from, to) = if turn % 2 == 0 {
            (&mut *i, &mut *a)
        } else {
            (&mut *a, &mut *i)
        };
        let mut writes = Vec::new();
        while let Some(out) = from.poll_transmit() {
            writes.push(out);
        }
        if writes.is_empty() {
            break;
        }
        let records = writes.iter().map(|w| record_count(w)).sum();
        flights.push((writes.len(), records));
        for w in &writes {
            assert_eq!(to.handle_input(w, now), w.len());
        }
    }
    flights
}

#[test]
fn every_join_flight_is_one_write_and_the_frame_stream_opens_in_one_record() {
    let ca = TestCa::new("flight CA");
    let (i, a) = ca_pair(&ca);
    let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
    let mut i = Endpoint::new(i)
        .unwrap()
        .connect_expecting("node-b", Some("node-b"), now, wall)
        .unwrap();
    let mut a = Endpoint::new(a).unwrap().accept(now, wall).unwrap();
    let flights = join_flights(&mut i, &mut a);
    // ClientHello; the server's flight; Certificate, CertificateVerify, Finished with
    // PREFACE ‖ HELLO behind them; PREFACE ‖ WELCOME. One write each, and each side's
    // frame stream opens in a single record (the preface does not get one of its own).
    assert_eq!(flights.len(), 4, "{flights:?}");
    assert!(
        flights.iter().all(|&(writes, _)| writes == 1),
        "{flights:?}"
    );
    // Records: the ClientHello; ServerHello, ChangeCipherSpec (TLS 1.3's middlebox
    // compatibility) and the encrypted server flight; ChangeCipherSpec, the encrypted
    // client flight and one record of PREFACE ‖ HELLO; one record of PREFACE ‖ WELCOME.
    assert_eq!(flights, [(1, 1), (1, 3), (1, 3), (1, 1)]);
    assert!(i.is_joined() && a.is_joined());
}
