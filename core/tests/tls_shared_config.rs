//! One endpoint's rustls configs are built once and shared by all its connections; each
//! connection still checks certificates against its own clock and keeps its own verdict.
//! Several handshakes of one acceptor endpoint are interleaved message by message, so
//! every certificate check of one runs between the checks of the others.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_core::tls::{CertRefusal, TlsError};
use palisade_core::{CloseCause, Config, Connection, ConnectionError, Endpoint, SharedSecret};
use palisade_testkit::certs::{CertSpec, TestCa};
use palisade_testkit::EPOCH_MS;

/// 2026-07-01, inside every certificate's validity here.
const JULY_MS: u64 = EPOCH_MS + 181 * 86_400_000;

fn node(name: &str, tls: palisade_core::tls::TlsConfig) -> Config {
    Config::new("prod", name)
        .with_secret(SharedSecret::new(vec![0x42; 32]).unwrap())
        .with_tls(tls)
}

fn wall(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Moves bytes both ways for every pair, one flight at a time, in `order`, until
/// nothing moves (bounded).
fn interleave(pairs: &mut [(Connection, Connection)], start: Instant, order: &[usize]) {
    let mut now = start;
    for _ in 0..64 {
        let mut moved = false;
        for &k in order {
            let (init, acc) = &mut pairs[k];
            now += Duration::from_millis(1);
            while let Some(bytes) = init.poll_transmit() {
                acc.handle_input(&bytes, now);
                moved = true;
            }
            while let Some(bytes) = acc.poll_transmit() {
                init.handle_input(&bytes, now);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
    panic!("the handshakes did not settle in 64 rounds");
}

fn refusal(conn: &Connection) -> CertRefusal {
    match conn.close_cause() {
        Some(CloseCause::Error(ConnectionError::Tls(TlsError::CertificateRefused(r)))) => {
            (**r).clone()
        }
        other => panic!("expected a certificate refusal, got {other:?}"),
    }
}

fn run(order: &[usize]) {
    let ca = TestCa::new("cluster CA");
    let stranger_ca = TestCa::new("other CA");
    // The dialer's certificate starts on 2026-06-01.
    let late = ca.issue(&CertSpec::new("node-a", &["node-a"]).valid((2026, 6, 1), (2030, 1, 1)));
    let dialer = Endpoint::new(node("node-a", ca.tls(&late))).unwrap();
    // Its certificate comes from another CA, but it trusts the cluster CA, so the
    // refusal is the acceptor's.
    let mut stranger_tls = stranger_ca.tls(&stranger_ca.node("node-c"));
    stranger_tls.trust = ca.tls(&late).trust;
    let stranger = Endpoint::new(node("node-c", stranger_tls)).unwrap();
    let acceptor = Endpoint::new(node("node-b", ca.tls(&ca.node("node-b")))).unwrap();

    let start = Instant::now();
    let mut pairs = vec![
        // 0: the acceptor's clock (2026-01-01) is before the dialer's notBefore.
        (
            dialer.connect("node-b", start, wall(JULY_MS)).unwrap(),
            acceptor.accept(start, wall(EPOCH_MS)).unwrap(),
        ),
        // 1: same dialer, same acceptor endpoint, a clock inside validity.
        (
            dialer.connect("node-b", start, wall(JULY_MS)).unwrap(),
            acceptor.accept(start, wall(JULY_MS)).unwrap(),
        ),
        // 2: a dialer from another CA.
        (
            stranger.connect("node-b", start, wall(JULY_MS)).unwrap(),
            acceptor.accept(start, wall(JULY_MS)).unwrap(),
        ),
    ];
    interleave(&mut pairs, start, order);

    match refusal(&pairs[0].1) {
        CertRefusal::NotYetValid { not_before, now } => {
            assert_eq!(not_before, "2026-06-01T00:00:00Z");
            assert_eq!(now, "2026-01-01T00:00:00Z");
        }
        other => panic!("connection 0: {other:?}"),
    }
    assert!(!pairs[0].0.is_joined());

    let (init, acc) = &pairs[1];
    assert!(acc.is_joined(), "connection 1: {:?}", acc.close_cause());
    assert!(init.is_joined(), "connection 1: {:?}", init.close_cause());
    assert_eq!(acc.peer().map(|p| p.node_id.as_str()), Some("node-a"));

    match refusal(&pairs[2].1) {
        CertRefusal::UnknownIssuer { issuer, .. } => assert!(issuer.contains("other CA")),
        other => panic!("connection 2: {other:?}"),
    }
    assert!(!pairs[2].0.is_joined());
}

#[test]
fn each_connection_of_a_shared_config_checks_with_its_own_clock_and_keeps_its_own_verdict() {
    run(&[0, 1, 2]);
}

#[test]
fn a_refusal_checked_just_before_or_after_an_acceptance_stays_with_its_connection() {
    run(&[2, 1, 0]);
    run(&[1, 0, 2]);
}
