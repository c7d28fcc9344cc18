//! Heap bytes per link, counted by dhat's allocator: palisade with TLS beside bare rustls
//! connections with the same certificates, and palisade with TLS off.
//!
//! For each kind of link, `LINKS` (1000) links are made and taken to joined (rustls: the
//! handshake done); the heap grown since just before is divided by the number of links,
//! per side (the initiators are then dropped to tell the two sides apart). The same is
//! done on fresh links after 64 KiB went each way and every received byte was taken
//! (idle after traffic), once as one 64 KiB frame each way and once as 64 frames of 1 KiB.
//!
//! Bytes are what the program asked the allocator for (dhat counts requested sizes;
//! malloc's own per-block overhead, typically 8 to 16 bytes a block, comes on top, so the
//! blocks per link are shown too). Shared state is made before counting starts (the
//! endpoints' compiled settings, rustls's `Arc<ClientConfig>` / `Arc<ServerConfig>`),
//! except what grows per link: an acceptor endpoint's replay cache keeps every nonce
//! for the clock-skew window, which is counted with the acceptors.
//!
//! Run: `cargo bench --bench memory` (`PALISADE_MEMORY_LINKS=n` to change the count).
//! Where the bytes go: `PALISADE_MEMORY_PROFILE=join` (or `idle`) writes a dhat profile
//! of the heap live at that point for palisade TLS links (`dhat-memory-<point>.json` in
//! criterion's target directory; open it in dhat's viewer, or see the report printed).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use palisade_core::tls::TlsVersion;
use palisade_core::{Config, Connection, Endpoint, Event, SharedSecret};
use palisade_testkit::certs::{TestCa, TestIdentity};
use palisade_testkit::{SeededRandom, EPOCH_MS};
use rustls::client::Resumption;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Links per measurement.
const LINKS: usize = 1000;

/// Bytes sent each way before the idle measurement.
const TRAFFIC: usize = 64 * 1024;

/// Targets per side (the floors).
const TARGET_JOINED: f64 = 16.0 * 1024.0;
const TARGET_IDLE: f64 = 24.0 * 1024.0;

// ---------------------------------------------------------------------------------------
// Settings

/// Whether this process benchmarks (`cargo bench`) rather than smoke-tests
/// (`cargo test --benches`: a handful of links, nothing printed but a check).
fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test")
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(EPOCH_MS)
}

fn secret() -> SharedSecret {
    SharedSecret::new(vec![0x42; 32]).expect("a 32-byte secret")
}

/// Certificates for both nodes, from one CA (ECDSA P-256).
struct Certs {
    ca: TestCa,
    a: TestIdentity,
    b: TestIdentity,
}

impl Certs {
    fn new() -> Self {
        let ca = TestCa::new("bench cluster CA");
        let a = ca.node("node-a");
        let b = ca.node("node-b");
        Self { ca, a, b }
    }

    /// palisade endpoints (initiator node-a, acceptor node-b), TLS 1.3 under the join
    /// when `tls`.
    fn endpoints(&self, tls: bool, seed: u64) -> (Endpoint, Endpoint) {
        let node = |name: &str, id: &TestIdentity, seed: u64| {
            let mut config = Config::new("bench", name).with_secret(secret());
            if tls {
                let mut t = self.ca.tls(id);
                t.min_version = TlsVersion::Tls13;
                config = config.with_tls(t);
            }
            Endpoint::with_random(config, Arc::new(SeededRandom::new(seed))).expect("config")
        };
        (
            node("node-a", &self.a, seed),
            node("node-b", &self.b, seed ^ 0x5eed),
        )
    }

    /// Bare rustls settings with the same certificates, TLS 1.3, no resumption or
    /// tickets (as palisade's sessions).
    fn rustls(&self) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert.clone()).expect("CA certificate");
        let roots = Arc::new(roots);
        let key =
            |id: &TestIdentity| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone()));
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .expect("client verifier");
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.b.chain.clone(), key(&self.b))
            .expect("server certificate");
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_client_auth_cert(self.a.chain.clone(), key(&self.a))
            .expect("client certificate");
        client.resumption = Resumption::disabled();
        (Arc::new(client), Arc::new(server))
    }
}

// ---------------------------------------------------------------------------------------
// Driving links

/// Offers `bytes` to `conn` until it took all of them, dropping frames as they come.
fn feed(conn: &mut Connection, bytes: &[u8], now: Instant) -> usize {
    let mut off = 0;
    let mut got = 0;
    loop {
        let n = conn.handle_input(&bytes[off..], now);
        off += n;
        let mut events = 0;
        while let Some(event) = conn.poll_event() {
            events += 1;
            match event {
                Event::Frame(f) => got += f.len(),
                Event::Joined(_) => {}
                Event::Closed(cause) => panic!("link closed: {cause}"),
            }
        }
        if off == bytes.len() {
            return got;
        }
        assert!(n > 0 || events > 0, "the connection stopped taking input");
    }
}

/// Moves bytes both ways until neither side has anything to send; returns the payload
/// bytes each side received.
fn pump(a: &mut Connection, b: &mut Connection, now: Instant) -> (usize, usize) {
    let (mut to_a, mut to_b) = (0, 0);
    loop {
        let mut moved = false;
        while let Some(out) = a.poll_transmit() {
            to_b += feed(b, &out, now);
            moved = true;
        }
        while let Some(out) = b.poll_transmit() {
            to_a += feed(a, &out, now);
            moved = true;
        }
        if !moved {
            return (to_a, to_b);
        }
    }
}

/// How the traffic before the idle measurement is cut into frames.
#[derive(Clone, Copy)]
enum Traffic {
    None,
    /// 64 KiB each way as one frame.
    OneFrame,
    /// 64 KiB each way as 64 frames of 1 KiB.
    SmallFrames,
}

fn palisade_traffic(a: &mut Connection, b: &mut Connection, now: Instant, traffic: Traffic) {
    let frames: Vec<Bytes> = match traffic {
        Traffic::None => return,
        Traffic::OneFrame => vec![Bytes::from(vec![0xa5; TRAFFIC])],
        Traffic::SmallFrames => (0..TRAFFIC / 1024)
            .map(|_| Bytes::from(vec![0xa5; 1024]))
            .collect(),
    };
    for frame in frames {
        a.send(frame.clone()).expect("send");
        b.send(frame).expect("send");
    }
    assert_eq!(pump(a, b, now), (TRAFFIC, TRAFFIC));
}

/// Moves what `from` wants to write into `to` and reads `to`'s plaintext into `scratch`.
/// `wire` is allocated before counting starts and large enough never to grow.
fn rustls_transfer(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
    wire: &mut Vec<u8>,
    scratch: &mut [u8],
) -> (usize, usize) {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).expect("write_tls");
    }
    let mut rest = &wire[..];
    let mut plain = 0;
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls");
        to.process_new_packets().expect("TLS error");
        loop {
            match to.reader().read(scratch) {
                Ok(0) => break,
                Ok(n) => plain += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("rustls read: {e}"),
            }
        }
    }
    (wire.len(), plain)
}

fn rustls_pump(
    c: &mut rustls::Connection,
    s: &mut rustls::Connection,
    wire: &mut Vec<u8>,
    scratch: &mut [u8],
) -> (usize, usize) {
    let (mut to_c, mut to_s) = (0, 0);
    loop {
        let (sent_c, got_s) = rustls_transfer(c, s, wire, scratch);
        let (sent_s, got_c) = rustls_transfer(s, c, wire, scratch);
        to_s += got_s;
        to_c += got_c;
        if sent_c == 0 && sent_s == 0 {
            return (to_c, to_s);
        }
    }
}

/// Writes `data` from `from` to `to`, as much per `write` call as rustls takes.
fn rustls_send(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
    wire: &mut Vec<u8>,
    scratch: &mut [u8],
    data: &[u8],
) -> usize {
    let mut rest = data;
    let mut got = 0;
    while !rest.is_empty() {
        let n = from.writer().write(rest).expect("rustls write");
        rest = &rest[n..];
        got += rustls_transfer(from, to, wire, scratch).1;
    }
    got
}

// ---------------------------------------------------------------------------------------
// Counting

fn heap() -> (usize, usize) {
    let stats = dhat::HeapStats::get();
    (stats.curr_bytes, stats.curr_blocks)
}

/// Heap per link of each side: (initiator bytes, acceptor bytes, initiator blocks,
/// acceptor blocks).
#[derive(Clone, Copy, Debug, Default)]
struct PerSide {
    init_bytes: f64,
    acc_bytes: f64,
    init_blocks: f64,
    acc_blocks: f64,
}

/// Counts what `make` grows the heap by for `n` links, then what dropping the
/// initiators gives back (the initiators' share); the rest is the acceptors'.
fn measure<I, A>(n: usize, mut make: impl FnMut(usize) -> (I, A)) -> PerSide {
    let (bytes0, blocks0) = heap();
    let mut inits = Vec::with_capacity(n);
    let mut accs = Vec::with_capacity(n);
    for i in 0..n {
        let (a, b) = make(i);
        inits.push(a);
        accs.push(b);
    }
    let (bytes1, blocks1) = heap();
    drop(inits);
    let (bytes2, blocks2) = heap();
    drop(accs);
    let per = |x: usize, y: usize| x.saturating_sub(y) as f64 / n as f64;
    PerSide {
        init_bytes: per(bytes1, bytes2),
        acc_bytes: per(bytes2, bytes0),
        init_blocks: per(blocks1, blocks2),
        acc_blocks: per(blocks2, blocks0),
    }
}

fn palisade_links(certs: &Certs, tls: bool, n: usize, traffic: Traffic, seed: u64) -> PerSide {
    // New endpoints per measurement (made before counting), so each starts with an
    // empty replay cache.
    let (ea, eb) = certs.endpoints(tls, seed);
    let now = Instant::now();
    measure(n, |_| {
        let mut a = ea.connect("node-b", now, wall()).expect("connect");
        let mut b = eb.accept(now, wall()).expect("accept");
        pump(&mut a, &mut b, now);
        assert!(a.is_joined() && b.is_joined(), "the link did not join");
        palisade_traffic(&mut a, &mut b, now, traffic);
        (a, b)
    })
}

fn rustls_links(certs: &Certs, n: usize, traffic: bool) -> PerSide {
    let (client, server) = certs.rustls();
    let name = ServerName::try_from("node-b").expect("server name");
    let mut wire = Vec::with_capacity(4 * TRAFFIC);
    let mut scratch = vec![0u8; 64 * 1024];
    let data = vec![0xa5u8; TRAFFIC];
    measure(n, |_| {
        let mut c: rustls::Connection = ClientConnection::new(client.clone(), name.clone())
            .expect("client")
            .into();
        let mut s: rustls::Connection = ServerConnection::new(server.clone())
            .expect("server")
            .into();
        rustls_pump(&mut c, &mut s, &mut wire, &mut scratch);
        assert!(!c.is_handshaking() && !s.is_handshaking());
        if traffic {
            let to_s = rustls_send(&mut c, &mut s, &mut wire, &mut scratch, &data);
            let to_c = rustls_send(&mut s, &mut c, &mut wire, &mut scratch, &data);
            let (more_c, more_s) = rustls_pump(&mut c, &mut s, &mut wire, &mut scratch);
            assert_eq!((to_c + more_c, to_s + more_s), (TRAFFIC, TRAFFIC));
        }
        (c, s)
    })
}

// ---------------------------------------------------------------------------------------
// Report

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn mark(bytes: f64, target: f64) -> &'static str {
    if bytes <= target {
        "ok"
    } else {
        "OVER"
    }
}

/// Where the live heap goes at one point, as a dhat profile of 100 links: `join`,
/// `idle` (after one 64 KiB frame each way), `idle-small` (64 frames of 1 KiB) for
/// palisade TLS links; `plain-idle-small` with TLS off; `rustls-join`, `rustls-idle` for
/// bare rustls.
fn profile(certs: &Certs, point: &str) {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let file = dir.join(format!("dhat-memory-{point}.json"));
    let (ea, eb) = certs.endpoints(!point.starts_with("plain"), 7);
    let (client, server) = certs.rustls();
    let name = ServerName::try_from("node-b").expect("server name");
    let mut wire = Vec::with_capacity(4 * TRAFFIC);
    let mut scratch = vec![0u8; 64 * 1024];
    let data = vec![0xa5u8; TRAFFIC];
    let now = Instant::now();
    let traffic = match point {
        "idle" => Traffic::OneFrame,
        "idle-small" | "plain-idle-small" => Traffic::SmallFrames,
        _ => Traffic::None,
    };
    let profiler = dhat::Profiler::builder()
        .file_name(&file)
        .trim_backtraces(Some(24))
        .build();
    let mut links = Vec::new();
    let mut rustls_links = Vec::new();
    for _ in 0..100 {
        if point.starts_with("rustls") {
            let mut c: rustls::Connection = ClientConnection::new(client.clone(), name.clone())
                .expect("client")
                .into();
            let mut s: rustls::Connection = ServerConnection::new(server.clone())
                .expect("server")
                .into();
            rustls_pump(&mut c, &mut s, &mut wire, &mut scratch);
            if point == "rustls-idle" {
                rustls_send(&mut c, &mut s, &mut wire, &mut scratch, &data);
                rustls_send(&mut s, &mut c, &mut wire, &mut scratch, &data);
                rustls_pump(&mut c, &mut s, &mut wire, &mut scratch);
            }
            rustls_links.push((c, s));
        } else {
            let mut a = ea.connect("node-b", now, wall()).expect("connect");
            let mut b = eb.accept(now, wall()).expect("accept");
            pump(&mut a, &mut b, now);
            palisade_traffic(&mut a, &mut b, now, traffic);
            links.push((a, b));
        }
    }
    // The profile's "at t-end" figures are the heap live now, with the links alive.
    drop(profiler);
    drop(links);
    drop(rustls_links);
    println!("wrote {}", file.display());
}

fn main() {
    let certs = Certs::new();
    if let Some(point) = std::env::var_os("PALISADE_MEMORY_PROFILE") {
        profile(&certs, &point.to_string_lossy());
        return;
    }
    let n = if benchmarking() {
        std::env::var("PALISADE_MEMORY_LINKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(LINKS)
    } else {
        10
    };
    let _profiler = dhat::Profiler::builder().testing().build();
    let started = Instant::now();

    let rows: Vec<(&str, PerSide, PerSide)> = vec![
        (
            "palisade, TLS 1.3 (64 KiB as 1 frame)",
            palisade_links(&certs, true, n, Traffic::None, 1),
            palisade_links(&certs, true, n, Traffic::OneFrame, 2),
        ),
        (
            "palisade, TLS 1.3 (64 KiB as 64 x 1 KiB)",
            palisade_links(&certs, true, n, Traffic::None, 3),
            palisade_links(&certs, true, n, Traffic::SmallFrames, 4),
        ),
        (
            "bare rustls TLS 1.3",
            rustls_links(&certs, n, false),
            rustls_links(&certs, n, true),
        ),
        (
            "palisade, TLS off (64 KiB as 1 frame)",
            palisade_links(&certs, false, n, Traffic::None, 5),
            palisade_links(&certs, false, n, Traffic::OneFrame, 6),
        ),
        (
            "palisade, TLS off (64 KiB as 64 x 1 KiB)",
            palisade_links(&certs, false, n, Traffic::None, 7),
            palisade_links(&certs, false, n, Traffic::SmallFrames, 8),
        ),
    ];
    if !benchmarking() {
        for (name, joined, idle) in &rows {
            assert!(
                joined.init_bytes > 0.0 && idle.acc_bytes > 0.0,
                "{name}: nothing counted"
            );
        }
        return;
    }

    println!(
        "heap per link and side, {n} links each (dhat, bytes requested; blocks in brackets); \
         targets per side: <= 16 KiB joined, <= 24 KiB idle after 64 KiB each way"
    );
    println!();
    println!(
        "| {:<40} | {:<9} | {:>20} | {:>20} |",
        "link", "side", "right after the join", "idle after traffic"
    );
    println!("|{:-<42}|{:-<11}|{:->22}|{:->22}|", "", "", "", "");
    for (name, joined, idle) in &rows {
        for (side, j, jb, i, ib) in [
            (
                "initiator",
                joined.init_bytes,
                joined.init_blocks,
                idle.init_bytes,
                idle.init_blocks,
            ),
            (
                "acceptor",
                joined.acc_bytes,
                joined.acc_blocks,
                idle.acc_bytes,
                idle.acc_blocks,
            ),
        ] {
            println!(
                "| {name:<40} | {side:<9} | {:>20} | {:>20} |",
                format!("{} [{jb:.0}]", kib(j)),
                format!("{} [{ib:.0}]", kib(i)),
            );
        }
    }
    println!();
    let palisade = &rows[0];
    let small = &rows[1];
    let rustls = &rows[2];
    println!("palisade TLS vs bare rustls (ratio = palisade / rustls; lower is better):");
    println!(
        "| {:<9} | {:>10} | {:>10} | {:>6} | {:>14} | {:>14} | {:>10} | {:>6} |",
        "side", "joined", "rustls", "ratio", "idle (1 frame)", "idle (64 fr.)", "rustls", "ratio"
    );
    println!(
        "|{:-<11}|{:->12}|{:->12}|{:->8}|{:->16}|{:->16}|{:->12}|{:->8}|",
        "", "", "", "", "", "", "", ""
    );
    for (side, p_join, r_join, p_idle, s_idle, r_idle) in [
        (
            "initiator",
            palisade.1.init_bytes,
            rustls.1.init_bytes,
            palisade.2.init_bytes,
            small.2.init_bytes,
            rustls.2.init_bytes,
        ),
        (
            "acceptor",
            palisade.1.acc_bytes,
            rustls.1.acc_bytes,
            palisade.2.acc_bytes,
            small.2.acc_bytes,
            rustls.2.acc_bytes,
        ),
    ] {
        println!(
            "| {side:<9} | {:>10} | {:>10} | {:>6.2} | {:>14} | {:>14} | {:>10} | {:>6.2} |",
            kib(p_join),
            kib(r_join),
            p_join / r_join,
            format!("{} {}", kib(p_idle), mark(p_idle, TARGET_IDLE)),
            format!("{} {}", kib(s_idle), mark(s_idle, TARGET_IDLE)),
            kib(r_idle),
            p_idle.max(s_idle) / r_idle,
        );
    }
    println!();
    for (name, joined, _) in [palisade, small] {
        for (side, bytes) in [
            ("initiator", joined.init_bytes),
            ("acceptor", joined.acc_bytes),
        ] {
            if bytes > TARGET_JOINED {
                println!(
                    "target missed: {name}, {side}: {} right after the join (target 16 KiB)",
                    kib(bytes)
                );
            }
        }
    }
    for (name, _, idle) in [palisade, small] {
        for (side, bytes) in [("initiator", idle.init_bytes), ("acceptor", idle.acc_bytes)] {
            if bytes > TARGET_IDLE {
                println!(
                    "target missed: {name}, {side}: {} idle after traffic (target 24 KiB)",
                    kib(bytes)
                );
            }
        }
    }
    println!("memory bench took {:.1} s", started.elapsed().as_secs_f64());
}
