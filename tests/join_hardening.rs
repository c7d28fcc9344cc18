//! The join's defences over real sockets (127.0.0.1), against a tokio and a blocking
//! listener: a HELLO reflected back to its sender by a relay, a dialer that reaches the
//! wrong node, key ids kept from unauthenticated peers, `node_id_in_cert` matched exactly,
//! refusal messages that fit matching key ids, and TLS joins that never fill the replay
//! cache. Each wait is bounded.

#[macro_use]
mod hostile_support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use hostile_support::*;
use palisade::tls::Authorization;
use palisade::{Config, Endpoint, LinkError, RejectCode, SharedSecret};

const NOT_REACHED: Duration = Duration::from_secs(5);

/// A relay with no secret: accepts one dialer and pipes its bytes to `target` and back.
/// Returns the relay's address and, once connected, the address the target sees.
fn relay_to(
    target: std::net::SocketAddr,
) -> (String, std::sync::mpsc::Receiver<std::net::SocketAddr>) {
    let front = TcpListener::bind("127.0.0.1:0").expect("relay bind");
    let addr = front.local_addr().expect("relay addr").to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let Ok((dialer, _)) = front.accept() else {
            return;
        };
        let Ok(back) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            return;
        };
        let _ = tx.send(back.local_addr().expect("relay local addr"));
        let pipe = |mut from: TcpStream, mut to: TcpStream| {
            thread::spawn(move || {
                let _ = from.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(Shutdown::Write);
            })
        };
        let a = pipe(
            dialer.try_clone().expect("clone"),
            back.try_clone().expect("clone"),
        );
        let b = pipe(back, dialer);
        let _ = (a.join(), b.join());
    });
    (addr, rx)
}

/// Dials `addr` with adapter `kind`, expecting node `expected` when given.
fn dial_expecting(
    kind: Kind,
    addr: &str,
    config: Config,
    expected: Option<&str>,
) -> Result<Conn, LinkError> {
    let endpoint = Endpoint::new(config).expect("member config");
    let addr = addr.to_owned();
    let expected = expected.map(str::to_owned);
    bounded("a member's join", JOIN_BOUND, move || match kind {
        Kind::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(palisade::tokio::connect_expecting(
                &endpoint,
                &addr,
                expected.as_deref(),
            ))
            .map(Conn::Tokio),
        Kind::Blocking => {
            palisade::blocking::connect_expecting(&endpoint, &addr, expected.as_deref())
                .map(Conn::Blocking)
        }
    })
}

fn reject_code(result: &Result<Conn, LinkError>) -> Option<RejectCode> {
    match result {
        Ok(_) => None,
        Err(e) => e.reject_code(),
    }
}

// ----- a HELLO reflected to its sender -----

fn a_hello_relayed_back_to_its_sender_is_refused(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(false, NOT_REACHED));
    let (relay, seen_as) = relay_to(server.local);
    // The node behind the listener dials what it takes for a peer; the relay (holding no
    // secret) hands its HELLO to the node's own listener and the answer back.
    let result = dial_expecting(kind, &relay, cluster.member(false, LISTENER_ID), None);
    assert_eq!(
        reject_code(&result),
        Some(RejectCode::Reflected),
        "{:?}",
        result.err()
    );
    let relay_side = seen_as
        .recv_timeout(Duration::from_secs(5))
        .expect("the relay connected");
    let failure = server.failures.of(relay_side, FAST);
    assert_eq!(
        failure.code,
        Some(RejectCode::Reflected),
        "{}",
        failure.text
    );
    assert!(failure.text.contains("own node id"), "{}", failure.text);
    server.assert_serves(cluster.member(false, "member-after-reflection"));
    server.assert_no_handshake_left();
}

// ----- the dialer reaches the node it meant -----

fn a_dialer_expecting_one_node_refuses_another(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    for tls in [false, true] {
        let server = Server::start(kind, cluster.listener(tls, NOT_REACHED));
        let wrong = dial_expecting(
            kind,
            &server.addr(),
            cluster.member(tls, "m"),
            Some("node-b"),
        );
        assert_eq!(
            reject_code(&wrong),
            Some(RejectCode::IdentityNotAllowed),
            "tls {tls}"
        );
        // Retrying will not change who answers: a reconnect loop should stop here.
        assert!(wrong.as_ref().err().is_some_and(LinkError::is_permanent));
        let shown = wrong.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            shown.contains("dialed \"node-b\" but \"listener\" answered"),
            "{shown}"
        );
        // The listener joined when it sent its WELCOME, so the link reached accept(); the
        // dialer's REJECT then ends it, and says why.
        let (conn, _) = server.accept(1, FAST).pop().expect("one link");
        let ended = server.recv(conn, FAST);
        assert_eq!(
            ended.as_ref().err().and_then(LinkError::reject_code),
            Some(RejectCode::IdentityNotAllowed),
            "{ended:?}"
        );
        let right = dial_expecting(
            kind,
            &server.addr(),
            cluster.member(tls, "m"),
            Some(LISTENER_ID),
        );
        assert!(right.is_ok(), "tls {tls}: {:?}", right.err());
    }
}

// ----- no key ids to unauthenticated peers -----

fn an_unknown_key_reject_names_no_key_id_the_listener_holds(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(false, NOT_REACHED));
    let held = cluster.secret.key_id().to_string();
    let foreign = SharedSecret::new(vec![0x33; 32]).expect("secret");
    let mut intruder = cluster.member(false, "intruder");
    intruder.keyring = Some(palisade::Keyring::new(foreign.clone()));

    let mut raw = Raw::connect(&server);
    raw.send(&first_flight(intruder));
    let closed = raw.read_until_closed(FAST);
    let said = decode_plain_reply(&closed.reply);
    match &said[..] {
        [Said::Reject(r)] => {
            assert_eq!(r.code, RejectCode::UnknownKey);
            assert!(r.message.contains(&foreign.key_id().to_string()), "{r}");
            assert!(!r.message.contains(&held), "{r}");
        }
        other => panic!("the listener said {other:?}"),
    }
    let wire = String::from_utf8_lossy(&closed.reply).to_string();
    assert!(!wire.contains(&held), "a held key id went on the wire");
    // The listener's own report keeps it, for its operator.
    let failure = server.failures.of(raw.local, FAST);
    assert!(failure.text.contains(&held), "{}", failure.text);
}

// ----- authentication failed with matching key ids -----

fn a_forged_proof_under_a_held_key_id_is_called_forged_not_a_wrong_secret(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let server = Server::start(kind, cluster.listener(false, NOT_REACHED));
    let mut flight = first_flight(cluster.member(false, "forger"));
    let last = flight.len() - 1;
    flight[last] ^= 0x01; // the last byte of proof_I
    let mut raw = Raw::connect(&server);
    raw.send(&flight);
    let said = decode_plain_reply(&raw.read_until_closed(FAST).reply);
    match &said[..] {
        [Said::Reject(r)] => {
            assert_eq!(r.code, RejectCode::AuthenticationFailed);
            assert!(r.message.contains("which this node holds"), "{r}");
            assert!(r.message.contains("forged"), "{r}");
            assert!(!r.message.contains("different shared secrets"), "{r}");
        }
        other => panic!("the listener said {other:?}"),
    }
}

// ----- node_id_in_cert, exactly -----

fn node_id_in_cert_is_matched_exactly_over_tls(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let mut config = cluster.listener(true, NOT_REACHED);
    if let Some(tls) = config.tls.as_mut() {
        tls.authorization = Authorization {
            node_id_in_cert: true,
            ..Authorization::default()
        };
    }
    let server = Server::start(kind, config);
    // The member's certificate names "member.hostile".
    let member_id = cluster.ca.node("member.hostile");
    for (claimed, joins) in [("member.hostile", true), ("MEMBER.HOSTILE", false)] {
        let result = dial(
            kind,
            &server.addr(),
            cluster.member_holding(claimed, &member_id),
        );
        match joins {
            true => assert!(result.is_ok(), "{claimed}: {:?}", result.err()),
            false => assert_eq!(
                reject_code(&result),
                Some(RejectCode::IdentityNotAllowed),
                "{claimed}"
            ),
        }
    }
}

// ----- the replay cache and TLS -----

fn tls_joins_never_fill_the_replay_cache(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let mut config = cluster.listener(true, NOT_REACHED);
    config.replay_cache_capacity = 1;
    config.replay_cache_per_source = 1;
    let server = Server::start(kind, config);
    for n in 0..4 {
        let result = dial(kind, &server.addr(), cluster.member(true, &format!("m{n}")));
        assert!(result.is_ok(), "TLS join {n}: {:?}", result.err());
    }
    // A plaintext listener with the same settings remembers one nonce, and is busy after.
    let mut config = cluster.listener(false, NOT_REACHED);
    config.replay_cache_capacity = 1;
    let server = Server::start(kind, config);
    assert!(dial(kind, &server.addr(), cluster.member(false, "p0")).is_ok());
    let busy = dial(kind, &server.addr(), cluster.member(false, "p1"));
    assert_eq!(reject_code(&busy), Some(RejectCode::Busy));
}

fn one_source_in_a_plaintext_reconnect_loop_exhausts_only_its_own_share(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let mut config = cluster.listener(false, NOT_REACHED);
    config.replay_cache_per_source = 3;
    let server = Server::start(kind, config);
    let looping = std::net::Ipv4Addr::new(127, 0, 0, 2);
    for n in 0..3 {
        let (result, _) = server.join_from(looping, cluster.member(false, &format!("l{n}")));
        assert!(
            result.is_ok(),
            "join {n} from {looping}: {:?}",
            result.err()
        );
    }
    // Whatever node id it claims, the address has used its share of the replay cache.
    let (busy, _) = server.join_from(looping, cluster.member(false, "another-name"));
    assert_eq!(reject_code(&busy), Some(RejectCode::Busy));
    assert!(
        busy.as_ref().err().is_some_and(|e| !e.is_permanent()),
        "busy is worth a retry"
    );
    let shown = busy.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(shown.contains("replay_cache_per_source"), "{shown}");
    // Another address still joins.
    let (other, _) = server.join_from(
        std::net::Ipv4Addr::new(127, 0, 0, 3),
        cluster.member(false, "o"),
    );
    assert!(other.is_ok(), "{:?}", other.err());
}

for_both_listeners!(
    a_hello_relayed_back_to_its_sender_is_refused,
    a_dialer_expecting_one_node_refuses_another,
    an_unknown_key_reject_names_no_key_id_the_listener_holds,
    a_forged_proof_under_a_held_key_id_is_called_forged_not_a_wrong_secret,
    node_id_in_cert_is_matched_exactly_over_tls,
    tls_joins_never_fill_the_replay_cache,
    one_source_in_a_plaintext_reconnect_loop_exhausts_only_its_own_share,
);
