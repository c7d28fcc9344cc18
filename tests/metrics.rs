//! A node's metrics and its links' spans, over 127.0.0.1 with real sockets: the driver's
//! acceptor on smol's runtime (`palisade::smol::Smol`) counting into one `Metrics`, and
//! dials (async and blocking) counting into another. Exact counts after known traffic,
//! refusals and TLS failures counted on both nodes with their codes and causes, gauges
//! back to zero at rest, and the `palisade_link` span carrying what the join revealed
//! and never a secret. Every wait is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::metrics::Direction;
use palisade::smol::Smol;
use palisade::tls::{TlsConfig, TrustAnchors};
use palisade::{
    CloseReason, Config, Endpoint, LinkError, Metrics, MetricsSnapshot, RejectCode, SharedSecret,
};
use palisade_driver::{
    establish_blocking_dialed, establish_dialed, Acceptor, AdmissionLimits, Dial,
};
use palisade_testkit::bounded;
use palisade_testkit::certs::TestCa;

const LIMIT: Duration = Duration::from_secs(40);

fn secret(text: &str) -> SharedSecret {
    SharedSecret::new(text.as_bytes().to_vec()).expect("secret")
}

fn ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::new("metrics CA"))
}

/// A node of cluster `metrics` with TLS (the shared CA) and `secret`.
fn node(id: &str, secret_text: &str) -> Config {
    Config::new("metrics", id)
        .with_tls(ca().tls(&ca().node(id)))
        .with_secret(secret(secret_text))
}

const SECRET: &str = "metrics-test-secret-0123456789-abcdefghij";

/// A listener: the driver's acceptor fed by a smol accept loop.
struct Server {
    acceptor: Acceptor<Smol>,
    addr: SocketAddr,
    _accept_loop: smol::Task<()>,
}

impl Server {
    fn start(config: Config) -> Self {
        let metrics = Metrics::new(config.node_id.clone());
        let endpoint = Endpoint::new(config).expect("config");
        let acceptor = Acceptor::with_limits_and_metrics(
            endpoint,
            Smol,
            None,
            AdmissionLimits::default(),
            metrics,
        )
        .expect("limits");
        let socket = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = socket.local_addr().expect("addr");
        let handler = acceptor.clone();
        let accept_loop = smol::spawn(async move {
            while let Ok((stream, peer)) = socket.accept().await {
                handler.handle(stream, peer);
            }
        });
        Self {
            acceptor,
            addr,
            _accept_loop: accept_loop,
        }
    }

    fn metrics(&self) -> MetricsSnapshot {
        self.acceptor.metrics().snapshot()
    }

    /// Accepts one link and echoes `frames` frames back, then waits for the peer to
    /// close (in a task).
    fn echo_next(&self, frames: usize) -> smol::Task<Result<(), LinkError>> {
        let acceptor = self.acceptor.clone();
        smol::spawn(async move {
            let (mut conn, _) = acceptor.accept().await;
            let mut got = Vec::new();
            for _ in 0..frames {
                got.push(conn.recv().await?.expect("a frame"));
            }
            for f in got {
                conn.send(f).await?;
            }
            assert_eq!(conn.recv().await?, None, "the dialer closes");
            Ok(())
        })
    }
}

fn dial_to(addr: SocketAddr, peer: &str, metrics: &Metrics) -> Dial {
    Dial::new(addr.to_string())
        .server_name(peer)
        .metrics(metrics.clone())
}

async fn dial_async(
    endpoint: &Endpoint,
    dial: &Dial,
) -> Result<palisade_driver::Connection, LinkError> {
    let stream = smol::net::TcpStream::connect(dial.addr()).await?;
    establish_dialed(&Smol, stream, endpoint, dial).await
}

/// Frame `i` of a link: sizes differ so byte counts are checked, not just frames.
fn frame(i: usize) -> Bytes {
    Bytes::from(vec![u8::try_from(i).unwrap_or(0); 100 * i + 1])
}

/// Waits (bounded) until `check` holds for a fresh snapshot of `metrics`.
fn wait_for(
    what: &str,
    metrics: impl Fn() -> MetricsSnapshot,
    check: impl Fn(&MetricsSnapshot) -> bool,
) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let now = metrics();
        if check(&now) {
            return;
        }
        assert!(Instant::now() < until, "{what} never happened:\n{now}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn joins_frames_and_bytes_are_counted_exactly_on_both_nodes() {
    bounded("three links with traffic", LIMIT, || {
        const LINKS: usize = 3;
        const FRAMES: usize = 5;
        let server = Server::start(node("count-a", SECRET));
        let dialer = Metrics::new("count-b");
        let endpoint = Endpoint::new(node("count-b", SECRET)).expect("config");
        let dial = dial_to(server.addr, "count-a", &dialer);
        smol::block_on(async {
            let echoes: Vec<_> = (0..LINKS).map(|_| server.echo_next(FRAMES)).collect();
            // Two async links and one blocking one, all open at once.
            let mut conns = Vec::new();
            for _ in 0..LINKS - 1 {
                conns.push(dial_async(&endpoint, &dial).await.expect("joins"));
            }
            let stream = std::net::TcpStream::connect(server.addr).expect("connect");
            let blocking = establish_blocking_dialed(stream, &endpoint, &dial).expect("joins");

            // The acceptor's handshake tasks see their joins a moment after the dialer.
            wait_for(
                "the acceptor's joins",
                || server.metrics(),
                |m| m.joins_ok == 3,
            );
            let (a, b) = (server.metrics(), dialer.snapshot());
            assert_eq!((a.links_open, b.links_open), (3, 3), "\n{a}\n{b}");
            assert_eq!((a.links_accepted, a.links_dialed), (3, 0));
            assert_eq!((b.links_accepted, b.links_dialed), (0, 3));
            assert_eq!((a.joins_ok, b.joins_ok), (3, 3));
            assert_eq!((a.handshakes_in_progress, b.handshakes_in_progress), (0, 0));

            for conn in &mut conns {
                for i in 0..FRAMES {
                    conn.send(frame(i)).await.expect("send");
                }
                for i in 0..FRAMES {
                    assert_eq!(conn.recv().await.expect("recv"), Some(frame(i)));
                }
            }
            smol::unblock(move || {
                for i in 0..FRAMES {
                    blocking.send(frame(i)).expect("send");
                }
                for i in 0..FRAMES {
                    assert_eq!(blocking.recv().expect("recv"), Some(frame(i)));
                }
                blocking.close(CloseReason::default());
            })
            .await;
            for conn in conns {
                conn.close(CloseReason::default()).await;
            }
            for echo in echoes {
                echo.await.expect("echo");
            }
        });

        let bytes: u64 = (0..FRAMES).map(|i| frame(i).len() as u64).sum::<u64>() * LINKS as u64;
        let frames = (FRAMES * LINKS) as u64;
        for (name, metrics) in [("acceptor", server.acceptor.metrics()), ("dialer", &dialer)] {
            wait_for(
                &format!("{name}: links closed"),
                || metrics.snapshot(),
                |m| m.links_open == 0,
            );
            let m = metrics.snapshot();
            assert_eq!(
                (
                    m.frames_sent,
                    m.frames_received,
                    m.bytes_sent,
                    m.bytes_received
                ),
                (frames, frames, bytes, bytes),
                "{name}:\n{m}"
            );
            assert_eq!(m.handshakes_in_progress, 0, "{name}:\n{m}");
            assert_eq!(m.joins_ok, 3, "{name}:\n{m}");
            assert!(
                m.joins_refused.is_empty() && m.tls_failures.is_empty(),
                "{name}:\n{m}"
            );
        }
    });
}

#[test]
fn a_wrong_secret_is_counted_with_its_code_on_both_nodes() {
    bounded("a refused join", LIMIT, || {
        let server = Server::start(node("refuse-a", SECRET));
        let dialer = Metrics::new("refuse-b");
        let endpoint = Endpoint::new(node("refuse-b", "another-secret-of-32-bytes-or-more!!"))
            .expect("config");
        let err = smol::block_on(dial_async(
            &endpoint,
            &dial_to(server.addr, "refuse-a", &dialer),
        ))
        .expect_err("a wrong secret is refused");
        assert_eq!(err.reject_code(), Some(RejectCode::UnknownKey), "{err}");

        wait_for(
            "the acceptor counts its refusal",
            || server.metrics(),
            |m| m.refused(RejectCode::UnknownKey, Direction::Sent) == 1,
        );
        let (a, b) = (server.metrics(), dialer.snapshot());
        let refusals = |m: &MetricsSnapshot| {
            let mut v: Vec<_> = m
                .joins_refused
                .iter()
                .map(|((code, dir), n)| (code.to_u16(), *dir, *n))
                .collect();
            v.sort();
            v
        };
        assert_eq!(refusals(&a), [(4, Direction::Sent, 1)], "\n{a}");
        assert_eq!(refusals(&b), [(4, Direction::Received, 1)], "\n{b}");
        assert!(
            a.to_string()
                .contains("joins_refused{code=\"unknown_key\",side=\"sent\"} 1"),
            "{a}"
        );
        for (name, m) in [("acceptor", &a), ("dialer", &b)] {
            assert_eq!(
                (m.joins_ok, m.links_open, m.handshakes_in_progress),
                (0, 0, 0),
                "{name}:\n{m}"
            );
            assert!(m.tls_failures.is_empty(), "{name}:\n{m}");
        }
        wait_for(
            "the acceptor's handshake ends",
            || server.metrics(),
            |m| m.handshakes_in_progress == 0,
        );
    });
}

#[test]
fn a_certificate_from_a_foreign_ca_is_counted_as_a_tls_failure() {
    bounded("a refused certificate", LIMIT, || {
        let server = Server::start(node("tls-a", SECRET));
        let dialer = Metrics::new("tls-b");
        // The dialer trusts the cluster's CA, but its own certificate comes from another.
        let foreign = TestCa::new("foreign CA");
        let tls = TlsConfig::new(
            foreign.node("tls-b").identity(),
            TrustAnchors::CaBundle(vec![ca().cert.clone()]),
        );
        let config = Config::new("metrics", "tls-b")
            .with_tls(tls)
            .with_secret(secret(SECRET));
        let endpoint = Endpoint::new(config).expect("config");
        let err = smol::block_on(dial_async(
            &endpoint,
            &dial_to(server.addr, "tls-a", &dialer),
        ))
        .expect_err("an unknown CA is refused");
        assert!(err.reject_code().is_none(), "{err}");

        wait_for(
            "the acceptor counts the TLS failure",
            || server.metrics(),
            |m| !m.tls_failures.is_empty() && m.handshakes_in_progress == 0,
        );
        let (a, b) = (server.metrics(), dialer.snapshot());
        assert_eq!(
            a.tls_failures,
            BTreeMap::from([("unknown_ca", 1)]),
            "the acceptor refused the certificate:\n{a}"
        );
        assert!(
            a.to_string()
                .contains("tls_failures{cause=\"unknown_ca\"} 1"),
            "{a}"
        );
        // The dialer hears the acceptor's alert.
        assert_eq!(
            b.tls_failures,
            BTreeMap::from([("peer_unknown_ca", 1)]),
            "the dialer was refused ({err}):\n{b}"
        );
        for (name, m) in [("acceptor", &a), ("dialer", &b)] {
            assert_eq!(
                (m.joins_ok, m.links_open, m.handshakes_in_progress),
                (0, 0, 0),
                "{name}:\n{m}"
            );
            assert!(m.joins_refused.is_empty(), "{name}:\n{m}");
        }
    });
}

// ----- tracing -----

/// What the capturing subscriber saw: every span's name and fields, every event's
/// fields and the span it happened in.
#[derive(Debug, Default)]
struct Captured {
    spans: BTreeMap<u64, (String, BTreeMap<String, String>)>,
    /// (innermost palisade_link span, if any; fields)
    events: Vec<(Option<u64>, BTreeMap<String, String>)>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Capture(Arc<Mutex<Captured>>);

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut c = self.0.lock().unwrap();
        c.spans
            .insert(id.into_u64(), (attrs.metadata().name().to_owned(), fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut c = self.0.lock().unwrap();
        if let Some((_, fields)) = c.spans.get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let link = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find(|s| s.name() == "palisade_link")
                .map(|s| s.id().into_u64())
        });
        self.0.lock().unwrap().events.push((link, fields));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[test]
fn the_link_span_carries_what_the_join_revealed_and_never_a_secret() {
    // Spans are made on the runtime's threads: capture process-wide. Other tests' spans
    // are captured too; this test looks at its own node ids only.
    let captured = Arc::new(Mutex::new(Captured::default()));
    {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&captured)));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    }
    let secret_text = "trace-secret-never-logged-0123456789-XYZ";
    let wrong_text = "trace-wrong-secret-never-logged-98765432";
    let key_id = secret(secret_text).key_id().to_string();
    bounded("traced links", LIMIT, move || {
        let server = Server::start(node("trace-a", secret_text));
        let dialer = Metrics::new("trace-b");
        let dial = dial_to(server.addr, "trace-a", &dialer);
        smol::block_on(async {
            let echo = server.echo_next(1);
            let mut conn = dial_async(&Endpoint::new(node("trace-b", secret_text)).unwrap(), &dial)
                .await
                .expect("joins");
            conn.send(Bytes::from_static(b"hello")).await.expect("send");
            assert!(conn.recv().await.expect("recv").is_some());
            conn.close(CloseReason::default()).await;
            echo.await.expect("echo");
            let wrong = Endpoint::new(node("trace-wrong", wrong_text)).unwrap();
            let err = dial_async(&wrong, &dial).await.expect_err("refused");
            assert_eq!(err.reject_code(), Some(RejectCode::UnknownKey));
        });
        wait_for(
            "links closed",
            || server.metrics(),
            |m| m.links_open == 0 && m.refused(RejectCode::UnknownKey, Direction::Sent) == 1,
        );
        let addr = server.addr.to_string();
        // The acceptor logs the refusal once its handshake task ends: wait for it.
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let c = captured.lock().unwrap();
            let logged = c.events.iter().any(|(_, f)| {
                f.get("message")
                    .is_some_and(|m| m.contains("handshake with"))
                    && f.get("message").is_some_and(|m| m.contains("unknown key"))
            });
            if logged || Instant::now() > until {
                break;
            }
            drop(c);
            std::thread::sleep(Duration::from_millis(20));
        }

        let c = captured.lock().unwrap();
        let links: Vec<&BTreeMap<String, String>> = c
            .spans
            .values()
            .filter(|(name, _)| name == "palisade_link")
            .map(|(_, f)| f)
            .collect();
        let find = |side: &str, node_id: &str| {
            links
                .iter()
                .find(|f| {
                    f.get("side").map(String::as_str) == Some(side)
                        && f.get("node_id").map(String::as_str) == Some(node_id)
                })
                .copied()
                .unwrap_or_else(|| panic!("no {side} span for {node_id}: {links:#?}"))
        };
        // The acceptor's span: the peer's node id, key id, TLS, and how it closed.
        let accepted = find("acceptor", "trace-b");
        assert_eq!(accepted.get("key_id"), Some(&key_id), "{accepted:?}");
        assert_eq!(
            accepted.get("tls_version").map(String::as_str),
            Some("TLSv1_3")
        );
        assert!(accepted.contains_key("tls_suite"), "{accepted:?}");
        assert!(accepted.contains_key("peer"), "{accepted:?}");
        assert_eq!(
            accepted.get("close_code").map(String::as_str),
            Some("0"),
            "{accepted:?}"
        );
        // The dialer's span: the address dialed, the acceptor's node id and key id.
        let dialed = find("dialer", "trace-a");
        assert_eq!(dialed.get("peer"), Some(&addr), "{dialed:?}");
        assert_eq!(dialed.get("key_id"), Some(&key_id), "{dialed:?}");
        // The refused dial: the reject code on both spans, and the acceptor's warning
        // about it logged inside its link's span.
        let refused_here = links.iter().any(|f| {
            f.get("side").map(String::as_str) == Some("acceptor")
                && f.get("reject").map(String::as_str) == Some("unknown_key")
        });
        assert!(refused_here, "{links:#?}");
        let refused_there = links.iter().any(|f| {
            f.get("side").map(String::as_str) == Some("dialer")
                && f.get("peer") == Some(&addr)
                && f.get("reject").map(String::as_str) == Some("unknown_key")
        });
        assert!(refused_there, "{links:#?}");
        let warning = c
            .events
            .iter()
            .find(|(_, f)| {
                f.get("message")
                    .is_some_and(|m| m.contains("handshake with") && m.contains("unknown key"))
            })
            .unwrap_or_else(|| panic!("the refusal is logged: {:#?}", c.events));
        let span = warning.0.and_then(|id| c.spans.get(&id));
        assert!(
            span.is_some_and(|(_, f)| f.get("reject").map(String::as_str) == Some("unknown_key")),
            "the refusal is logged inside the refused link's span: {warning:?} in {span:?}"
        );

        // No secret anywhere: not as text, hex or base64, in any span field or event.
        let everything: Vec<&String> = c
            .spans
            .values()
            .flat_map(|(_, f)| f.values())
            .chain(c.events.iter().flat_map(|(_, f)| f.values()))
            .collect();
        assert!(everything.len() > 20, "captured too little: {everything:?}");
        for text in [secret_text, wrong_text] {
            let forms = [
                text.to_owned(),
                hex(text.as_bytes()),
                base64(text.as_bytes()),
            ];
            for form in &forms {
                // A 16-character piece of each form is enough to find it.
                let piece = &form[..16];
                for value in &everything {
                    assert!(!value.contains(piece), "a secret leaked: {value}");
                }
            }
        }
    });
}

/// One node, one snapshot: a tokio listener's metrics handed to the node's `Dialer`
/// count the links it accepts and the links it dials together, and a `Dial` naming
/// counters of its own is counted there instead.
#[test]
fn a_nodes_listener_and_dialer_count_in_one_snapshot() {
    bounded("one node's listener and dialer", LIMIT, || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let a = palisade::tokio::Listener::bind("127.0.0.1:0", node("node-a", SECRET))
                .await
                .expect("bind a");
            let b = palisade::tokio::Listener::bind("127.0.0.1:0", node("node-b", SECRET))
                .await
                .expect("bind b");
            let a_dialer = palisade::tokio::Dialer::with_metrics(
                Endpoint::new(node("node-a", SECRET)).expect("a"),
                a.metrics().clone(),
            );
            let b_dialer = palisade::tokio::Dialer::with_metrics(
                Endpoint::new(node("node-b", SECRET)).expect("b"),
                b.metrics().clone(),
            );
            // a dials b twice; b dials a once.
            let to_b = Dial::new(b.local_addr().to_string()).server_name("node-b");
            let to_a = Dial::new(a.local_addr().to_string()).server_name("node-a");
            let _ab1 = a_dialer.dial(&to_b).await.expect("a → b");
            let _ab2 = a_dialer.dial(&to_b).await.expect("a → b again");
            let _ba = b_dialer.dial(&to_a).await.expect("b → a");
            let (_in_b1, _) = b.accept().await;
            let (_in_b2, _) = b.accept().await;
            let (_in_a, _) = a.accept().await;
            // A dial with counters of its own is counted there, not in the node's.
            let elsewhere = Metrics::new("elsewhere");
            let _own = a_dialer
                .dial(&to_b.clone().metrics(elsewhere.clone()))
                .await
                .expect("a → b, counted elsewhere");
            let (_in_b3, _) = b.accept().await;

            let a_now = a.metrics().snapshot();
            assert_eq!(
                (a_now.links_dialed, a_now.links_accepted),
                (2, 1),
                "{a_now}"
            );
            assert_eq!(a_now.links_open, 3, "{a_now}");
            let b_now = b.metrics().snapshot();
            assert_eq!(
                (b_now.links_dialed, b_now.links_accepted),
                (1, 3),
                "{b_now}"
            );
            assert_eq!(elsewhere.snapshot().links_dialed, 1);
        });
    });
}
