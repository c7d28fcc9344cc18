//! Refusals reach the peer before the caller hears of them (issue 10, item 8).
//!
//! A program that exits on a failed join (a CLI, a test harness, a crash-only service)
//! must still leave the peer the reason: the REJECT or CLOSE (inside TLS, then
//! close_notify) and the end of the stream are with the peer's kernel by the time
//! `connect` returns the error, or the listener's failure hook fires. Each check reads
//! the peer's socket without blocking at that very moment: whatever arrives later does
//! not count.
//!
//! The race this guards against is lost only now and then, when the driver's thread is
//! slower than the caller's, so every scenario runs several rounds with every core kept
//! busy. Every wait is bounded; loopback only.

mod refusal_support;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use palisade::{Config, Endpoint, LinkError, RejectCode};
use palisade_driver::{FailureHook, HandshakeFailure};
use refusal_support::*;

/// Dials `addr` with adapter `kind`; at the moment `connect` returns, takes what the
/// foreign acceptor holds, then drops everything (the runtime too) as an exiting program
/// would.
fn dial(
    kind: Kind,
    addr: String,
    config: Config,
    handover: Receiver<Recording>,
) -> (Result<(), LinkError>, Seen) {
    let observe = move |result: Result<(), LinkError>| {
        let mut rec = handover
            .try_recv()
            .expect("connect returned before the acceptor wrote its WELCOME");
        (result, rec.seen())
    };
    match kind {
        Kind::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let result = rt.block_on(palisade::tokio::connect(&addr, config));
            let out = observe(result.map(drop));
            drop(rt);
            out
        }
        Kind::AsyncStd => {
            let result = async_std::task::block_on(palisade::async_std::connect(&addr, config));
            observe(result.map(drop))
        }
        Kind::Smol => {
            let result = smol::block_on(palisade::smol::connect(&addr, config));
            observe(result.map(drop))
        }
        Kind::Blocking => {
            let result = palisade::blocking::connect(&addr, config);
            observe(result.map(drop))
        }
    }
}

/// The dialer refuses a bad WELCOME: by the time `connect` returns the error, the foreign
/// acceptor has the REJECT (TLS: inside TLS, then close_notify) and EOF.
fn dialer_refusal_arrives_first(kind: Kind, tls: bool) {
    let _alone = alone();
    let cluster = Cluster::new();
    let server = tls.then(|| cluster.rustls_server());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let _load = Load::start();
    for round in 0..ROUNDS {
        let bad = Bad::ALL[round % Bad::ALL.len()];
        let (tx, rx) = mpsc::channel();
        let l = listener.try_clone().expect("clone listener");
        let s = server.clone();
        let acceptor = thread::spawn(move || answer_badly(&l, s, bad, tx));
        let (addr, mut config) = (addr.clone(), cluster.dialer(tls));
        if matches!(bad, Bad::Silent) {
            config.handshake_timeout = SILENT_TIMEOUT;
        }
        let (result, seen) = bounded("connect", BOUND, move || dial(kind, addr, config, rx));
        acceptor.join().expect("the foreign acceptor failed");
        let err = result.expect_err("the dialer joined a foreign acceptor");
        let what = format!("{kind:?}, TLS {tls}, round {round}, {bad:?}");
        let told = err.to_string();
        match (bad, bad.owed()) {
            (Bad::WrongProof | Bad::NoProof, Owed::Reject(code)) => {
                assert_eq!(err.reject_code(), Some(code), "{what}: {err}")
            }
            (Bad::Data, _) => assert!(told.contains("DATA frame"), "{what}: {err}"),
            _ => assert!(told.contains("handshake"), "{what}: {err}"),
        }
        seen.assert_owed(bad.owed(), tls, &what);
    }
}

#[test]
fn tokio_dialer_refusal_reaches_the_acceptor_before_connect_returns() {
    dialer_refusal_arrives_first(Kind::Tokio, false);
}

#[test]
fn tokio_dialer_refusal_over_tls_reaches_the_acceptor_before_connect_returns() {
    dialer_refusal_arrives_first(Kind::Tokio, true);
}

#[test]
fn async_std_dialer_refusal_reaches_the_acceptor_before_connect_returns() {
    dialer_refusal_arrives_first(Kind::AsyncStd, false);
}

#[test]
fn async_std_dialer_refusal_over_tls_reaches_the_acceptor_before_connect_returns() {
    dialer_refusal_arrives_first(Kind::AsyncStd, true);
}

#[test]
fn smol_dialer_refusal_reaches_the_acceptor_before_connect_returns() {
    dialer_refusal_arrives_first(Kind::Smol, false);
}

#[test]
fn smol_dialer_refusal_over_tls_reaches_the_acceptor_before_connect_returns() {
    dialer_refusal_arrives_first(Kind::Smol, true);
}

#[test]
fn blocking_dialer_refusal_reaches_the_acceptor_before_connect_returns() {
    dialer_refusal_arrives_first(Kind::Blocking, false);
}

#[test]
fn blocking_dialer_refusal_over_tls_reaches_the_acceptor_before_connect_returns() {
    dialer_refusal_arrives_first(Kind::Blocking, true);
}

/// A listener refuses a forged HELLO: by the time its failure hook fires, the raw peer
/// has the REJECT (3) and EOF (TLS: the REJECT inside TLS, close_notify, EOF).
fn listener_refusal_arrives_first(kind: Kind, tls: bool) {
    let _alone = alone();
    let cluster = Cluster::new();
    let client = cluster.rustls_client();
    // The raw peers' ends by address, for the hook to look at.
    let peers: Arc<Mutex<HashMap<SocketAddr, Recording>>> = Arc::default();
    let (tx, rx) = mpsc::channel::<(SocketAddr, Seen)>();
    let tx = Mutex::new(tx);
    let hook: FailureHook = {
        let peers = Arc::clone(&peers);
        Arc::new(move |f: &HandshakeFailure| {
            let peer = peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&f.peer_addr);
            if let Some(mut peer) = peer {
                let seen = peer.seen();
                let _ = tx
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .send((f.peer_addr, seen));
            }
        })
    };
    let endpoint = Endpoint::new(cluster.listener(tls)).expect("listener config");
    let listening = Listening::bind(kind, endpoint, hook);
    let addr = listening.local_addr();
    let _load = Load::start();
    // The listener's side of the race is narrower (its hook runs right where the driver
    // would go on to write): more rounds.
    for round in 0..4 * ROUNDS {
        let hello = forged_hello(&cluster, round);
        let (mut raw, session, wire) = if tls {
            let (raw, session, wire) = tls_peer(addr, &client, &hello);
            (raw, Some(rustls::Connection::Client(session)), wire)
        } else {
            let raw = TcpStream::connect_timeout(&addr, BOUND).expect("raw connect");
            (raw, None, hello)
        };
        let local = raw.local_addr().expect("local addr");
        let recording = Recording {
            stream: raw.try_clone().expect("clone"),
            tls: session,
        };
        peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(local, recording);
        raw.write_all(&wire).expect("send HELLO");
        let (peer, seen) = rx
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("{kind:?}: the hook reported no failure within {BOUND:?}"));
        assert_eq!(peer, local, "{kind:?}: the hook reported another peer");
        seen.assert_owed(
            Owed::Reject(RejectCode::AuthenticationFailed),
            tls,
            &format!("{kind:?} listener, TLS {tls}, round {round}"),
        );
    }
    drop(listening);
}

#[test]
fn tokio_listener_refusal_reaches_the_peer_before_the_hook_fires() {
    listener_refusal_arrives_first(Kind::Tokio, false);
}

#[test]
fn tokio_listener_refusal_over_tls_reaches_the_peer_before_the_hook_fires() {
    listener_refusal_arrives_first(Kind::Tokio, true);
}

#[test]
fn async_std_listener_refusal_reaches_the_peer_before_the_hook_fires() {
    listener_refusal_arrives_first(Kind::AsyncStd, false);
}

#[test]
fn async_std_listener_refusal_over_tls_reaches_the_peer_before_the_hook_fires() {
    listener_refusal_arrives_first(Kind::AsyncStd, true);
}

#[test]
fn smol_listener_refusal_reaches_the_peer_before_the_hook_fires() {
    listener_refusal_arrives_first(Kind::Smol, false);
}

#[test]
fn smol_listener_refusal_over_tls_reaches_the_peer_before_the_hook_fires() {
    listener_refusal_arrives_first(Kind::Smol, true);
}

#[test]
fn blocking_listener_refusal_reaches_the_peer_before_the_hook_fires() {
    listener_refusal_arrives_first(Kind::Blocking, false);
}

#[test]
fn blocking_listener_refusal_over_tls_reaches_the_peer_before_the_hook_fires() {
    listener_refusal_arrives_first(Kind::Blocking, true);
}

// ----- a peer that never reads -----

/// The join times out (its HELLO cannot be written) and the CLOSE it owes cannot be
/// written either: the error still comes about a second after the timeout
/// (`palisade_driver::REFUSAL_FLUSH`).
fn stuck_peer_does_not_hold_connect(kind: Kind) {
    let _alone = alone();
    let cluster = Cluster::new();
    let mut config = cluster.dialer(false);
    let timeout = Duration::from_millis(300);
    config.handshake_timeout = timeout;
    let endpoint = Endpoint::new(config).expect("config");
    let (dialer, peer) = clogged_socket();
    let conn = endpoint
        .connect("127.0.0.1", Instant::now(), SystemTime::now())
        .expect("connect");
    let start = Instant::now();
    let result = bounded("establish", BOUND, move || match kind {
        Kind::Blocking => palisade_driver::establish_blocking(dialer, conn).map(drop),
        Kind::AsyncStd => async_std::task::block_on(palisade_driver::establish(
            &palisade::async_std::AsyncStd,
            async_std::net::TcpStream::from(dialer),
            conn,
        ))
        .map(drop),
        Kind::Smol => smol::block_on(async {
            let socket = smol::net::TcpStream::try_from(dialer).expect("smol socket");
            palisade_driver::establish(&palisade::smol::Smol, socket, conn).await
        })
        .map(drop),
        Kind::Tokio => {
            unreachable!("the tokio adapter's socket type is its own; it shares this driver")
        }
    });
    let took = start.elapsed();
    let err = result.expect_err("joined a peer that never answered");
    assert!(
        matches!(&err, LinkError::Link(e) if e.to_string().contains("handshake")),
        "{kind:?}: expected the handshake timeout, got {err}"
    );
    assert!(
        took >= timeout,
        "{kind:?}: failed after {took:?}, before the handshake timeout"
    );
    // A caller waits at most ~1 s (REFUSAL_FLUSH) past the failure for a peer that does
    // not read, never the driver's whole flush deadline (5 s).
    let limit = timeout + Duration::from_secs(2);
    assert!(
        took < limit,
        "{kind:?}: a peer that does not read held the failed join for {took:?} (limit {limit:?})"
    );
    drop(peer);
}

#[test]
fn blocking_connect_is_not_held_by_a_peer_that_never_reads() {
    stuck_peer_does_not_hold_connect(Kind::Blocking);
}

#[test]
fn async_std_connect_is_not_held_by_a_peer_that_never_reads() {
    stuck_peer_does_not_hold_connect(Kind::AsyncStd);
}

#[test]
fn smol_connect_is_not_held_by_a_peer_that_never_reads() {
    stuck_peer_does_not_hold_connect(Kind::Smol);
}
