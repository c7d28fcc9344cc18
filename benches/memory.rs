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

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use palisade_core::{Connection, Endpoint};
use rustls::{ClientConfig, ServerConfig};

use common::{
    has_arg, join, link, manifest_target, pump, rustls_handshake, rustls_pair, rustls_pump,
    rustls_transfer, rustls_write, seeded_endpoint, target_dir, Certs,
};

mod common;

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
    has_arg("--bench") && !has_arg("--test")
}

/// palisade endpoints (initiator node-a, acceptor node-b), TLS 1.3 under the join
/// when `tls`.
fn endpoints(certs: &Certs, tls: bool, seed: u64) -> (Endpoint, Endpoint) {
    let (a, b) = certs.palisade(tls);
    (seeded_endpoint(a, seed), seeded_endpoint(b, seed ^ 0x5eed))
}

// ---------------------------------------------------------------------------------------
// Driving links

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

/// A palisade link taken to joined, then through `traffic`.
fn palisade_link(
    initiator: &Endpoint,
    acceptor: &Endpoint,
    now: Instant,
    traffic: Traffic,
) -> (Connection, Connection) {
    let (mut a, mut b) = link(initiator, acceptor, now);
    join(&mut a, &mut b, now);
    palisade_traffic(&mut a, &mut b, now, traffic);
    (a, b)
}

/// Bare rustls settings and buffers, made before counting starts: `wire` is large
/// enough never to grow, `data` is the traffic each way.
struct RustlsSetup {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    wire: Vec<u8>,
    scratch: Vec<u8>,
    data: Vec<u8>,
}

impl RustlsSetup {
    fn new(certs: &Certs) -> Self {
        let (client, server) = certs.rustls();
        Self {
            client,
            server,
            wire: Vec::with_capacity(4 * TRAFFIC),
            scratch: vec![0u8; 64 * 1024],
            data: vec![0xa5u8; TRAFFIC],
        }
    }

    /// A bare rustls link with the handshake done, then (with `traffic`) 64 KiB each
    /// way, every byte taken.
    fn link(&mut self, traffic: bool) -> (rustls::Connection, rustls::Connection) {
        let Self {
            client,
            server,
            wire,
            scratch,
            data,
        } = self;
        let (mut c, mut s) = rustls_pair(client, server);
        rustls_handshake(&mut c, &mut s, wire, scratch);
        if traffic {
            // As much per `write` call as rustls takes, every record moved over.
            let mut send = |from: &mut rustls::Connection, to: &mut rustls::Connection| {
                rustls_write(from, to, wire, scratch, data)
                    + rustls_transfer(from, to, wire, scratch).1
            };
            let to_s = send(&mut c, &mut s);
            let to_c = send(&mut s, &mut c);
            let (more_c, more_s) = rustls_pump(&mut c, &mut s, wire, scratch);
            assert_eq!((to_c + more_c, to_s + more_s), (TRAFFIC, TRAFFIC));
        }
        (c, s)
    }
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
    let (ea, eb) = endpoints(certs, tls, seed);
    let now = Instant::now();
    measure(n, |_| palisade_link(&ea, &eb, now, traffic))
}

fn rustls_links(certs: &Certs, n: usize, traffic: bool) -> PerSide {
    let mut setup = RustlsSetup::new(certs);
    measure(n, |_| setup.link(traffic))
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
    let file = target_dir(manifest_target).join(format!("dhat-memory-{point}.json"));
    let (ea, eb) = endpoints(certs, !point.starts_with("plain"), 7);
    let mut rustls = RustlsSetup::new(certs);
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
            rustls_links.push(rustls.link(point == "rustls-idle"));
        } else {
            links.push(palisade_link(&ea, &eb, now, traffic));
        }
    }
    // The profile's "at t-end" figures are the heap live now, with the links alive.
    drop(profiler);
    drop(links);
    drop(rustls_links);
    println!("wrote {}", file.display());
}

fn main() {
    let certs = Certs::new("bench cluster CA");
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
