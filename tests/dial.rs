//! `Dial`: the name TLS checks may differ from the host dialed, and the TCP connect can be
//! bounded by `connect_timeout`, in every adapter. Loopback only; every wait is bounded.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use palisade::tls::Authorization;
use palisade::{Config, Dial, Endpoint, LinkError};
use palisade_testkit::certs::TestCa;

/// A listener socket whose accept queue is full and never drained: the kernel drops
/// further SYNs, so a connect to it hangs. `None` when this machine's kernel answers
/// anyway (then the timeout cannot be shown here).
fn unanswered_listener() -> Option<(socket2::Socket, Vec<TcpStream>, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .ok()?;
    socket.listen(0).ok()?;
    let addr = socket.local_addr().ok()?.as_socket()?;
    let mut held = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => return Some((socket, held, addr)),
        }
    }
    None
}

fn timed_out_in_bounds(result: Result<(), LinkError>, started: Instant, what: &str) {
    let elapsed = started.elapsed();
    let err = result.expect_err("the dial must fail");
    let shown = err.to_string();
    assert!(
        shown.contains("connect_timeout (300 ms)"),
        "{what}: {shown}"
    );
    assert!(!err.is_permanent(), "{what}: a timeout is worth a retry");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{what}: failed after {elapsed:?}"
    );
}

#[test]
fn connect_timeout_bounds_the_tcp_connect_in_every_adapter() {
    let Some((_listener, _held, addr)) = unanswered_listener() else {
        eprintln!("skipped: this kernel answers connects to a full accept queue");
        return;
    };
    let endpoint = Endpoint::new(Config::new("c", "dialer")).expect("config");
    let dial = Dial::new(addr.to_string()).connect_timeout(Duration::from_millis(300));

    let started = Instant::now();
    let r = palisade::blocking::dial(&endpoint, &dial).map(drop);
    timed_out_in_bounds(r, started, "blocking");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let r = rt
        .block_on(palisade::tokio::dial(&endpoint, &dial))
        .map(drop);
    timed_out_in_bounds(r, started, "tokio");

    let started = Instant::now();
    let r = async_std::task::block_on(palisade::async_std::dial(&endpoint, &dial)).map(drop);
    timed_out_in_bounds(r, started, "async-std");

    let started = Instant::now();
    let r = smol::block_on(palisade::smol::dial(&endpoint, &dial)).map(drop);
    timed_out_in_bounds(r, started, "smol");
}

#[test]
fn a_dialer_can_reach_an_address_and_check_another_name() {
    // Dial 127.0.0.1, expect the certificate (and node id) of node-2.
    let ca = TestCa::new("dial CA");
    let node = |id: &str| {
        let mut tls = ca.tls(&ca.node(id));
        tls.authorization = Authorization {
            verify_hostname: true,
            ..Authorization::default()
        };
        Config::new("c", id).with_tls(tls)
    };
    let listener = palisade::blocking::Listener::bind("127.0.0.1:0", node("node-2")).expect("bind");
    let addr = listener.local_addr().to_string();
    let accept =
        std::thread::spawn(move || listener.accept().map(|(c, _)| c.peer().node_id.clone()));
    let endpoint = Endpoint::new(node("node-1")).expect("config");

    // The host dialed is not a name in node-2's certificate.
    let refused = palisade::blocking::dial(&endpoint, &Dial::new(addr.clone()));
    let shown = refused
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(refused.is_err() && shown.contains("127.0.0.1"), "{shown}");
    assert!(refused.err().is_some_and(|e| e.is_permanent()));

    let joined = palisade::blocking::dial(
        &endpoint,
        &Dial::new(addr).server_name("node-2").expect_peer("node-2"),
    )
    .expect("joins when told which name to check");
    assert_eq!(joined.peer().node_id, "node-2");
    assert_eq!(
        accept.join().expect("accept thread").expect("accepted"),
        "node-1"
    );
}
