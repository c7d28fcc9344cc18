//! Scale (issue 23, item 3): one tokio palisade node holding 10,000 joined idle links
//! (TLS 1.3 mutual TLS + the join), heap and RSS per link, and the time it took to
//! accept them all.
//!
//! The dialing ends run in a child process (this binary again, `--scale-dialer`): one
//! process may hold 20,000 descriptors here, and both ends of 10,000 links in one
//! process need a few more than that. The child reads its settings from files, as a
//! node does. It dials from 1,000 loopback addresses (10 links each), 256 dials in flight;
//! the listener's admission limits are raised to let a deliberate storm through (the
//! defaults would rate-limit a single address, which is their job).
//!
//! Two rounds, each with a fresh listener and child: the first times the accepts and
//! reads RSS (`/proc/self/statm`); the second counts the listener process's heap with
//! dhat (bytes the program asked for), which slows allocation, so it is not timed.
//!
//! ```text
//! cargo bench --bench scale                       # 10,000 links
//! cargo bench --bench scale -- --links=2000
//! ```

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use palisade::tokio::Listener;
use palisade::Endpoint;
use palisade_driver::{AdmissionLimits, AdmissionStats};
use palisade_testkit::certs::TestCa;
use tokio::net::TcpSocket;

mod common;

/// Passes every allocation to the system allocator; counts them only while a
/// `dhat::Profiler` runs (the heap round), so the timed round runs at full speed.
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const LINKS: usize = 10_000;
const PER_SOURCE: usize = 10;
const IN_FLIGHT: usize = 256;
const CLUSTER: &str = "scale";

/// What one round saw.
struct Round {
    accepted: usize,
    took: Duration,
    /// Heap (dhat round) or RSS (timed round) bytes: before, right after, idle.
    before: usize,
    joined: usize,
    idle: usize,
    stats: AdmissionStats,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scale-dialer") {
        return dialer(&args[i + 1..]);
    }
    if !common::benchmarking() && !common::has_arg("--scale") {
        return;
    }
    let links = args
        .iter()
        .find_map(|a| a.strip_prefix("--links="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(LINKS);
    let dir = std::env::temp_dir().join(format!("palisade-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = TestCa::new("palisade scale bench CA");
    let (acceptor, initiator) = (ca.node_at("node-b", "127.0.0.1"), ca.node("node-a"));
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
    write(
        "ca.pem",
        palisade_testkit::certs::certs_pem(std::slice::from_ref(&ca.cert)),
    );
    write("b.crt", acceptor.cert_pem());
    write("b.key", acceptor.key_pem());
    write("a.crt", initiator.cert_pem());
    write("a.key", initiator.key_pem());

    eprintln!("round 1: {links} links, timed, RSS");
    let timed = round(&dir, links, rss);
    eprintln!("round 2: {links} links, heap counted (dhat)");
    let profiler = dhat::Profiler::builder().testing().build();
    let heap = round(&dir, links, || dhat::HeapStats::get().curr_bytes);
    drop(profiler);
    let _ = std::fs::remove_dir_all(&dir);

    let per =
        |r: &Round, now: usize| (now as f64 - r.before as f64) / r.accepted.max(1) as f64 / 1024.0;
    println!(
        "\none tokio node holding {links} joined idle links (TLS 1.3 mutual TLS + the join; \
         the dialers in a child process)\n"
    );
    println!("| figure | value |");
    println!("|---|---:|");
    println!(
        "| links joined (timed round / heap round) | {} / {} of {links} |",
        timed.accepted, heap.accepted
    );
    println!(
        "| time to accept them all ({IN_FLIGHT} dials in flight) | {:.2} s ({:.0} links/s) |",
        timed.took.as_secs_f64(),
        timed.accepted as f64 / timed.took.as_secs_f64()
    );
    println!(
        "| heap per link, right after the last join | {:.1} KiB |",
        per(&heap, heap.joined)
    );
    println!(
        "| heap per link, idle 3 s later | {:.1} KiB |",
        per(&heap, heap.idle)
    );
    println!(
        "| RSS per link, right after the last join | {:.1} KiB |",
        per(&timed, timed.joined)
    );
    println!(
        "| RSS per link, idle 3 s later | {:.1} KiB |",
        per(&timed, timed.idle)
    );
    println!(
        "| admission (timed round): joined / failed / refused | {} / {} / {} |",
        timed.stats.joined,
        timed.stats.failed,
        timed.stats.refused_full
            + timed.stats.refused_rate
            + timed.stats.refused_per_source_cap
            + timed.stats.refused_backoff
    );
    assert_eq!(timed.accepted, links, "not every link joined within 300 s");
}

/// One listener takes `links` links dialed by a child process; `measure` is read
/// before, right after the last join and 3 s later.
fn round(dir: &Path, links: usize, measure: impl Fn() -> usize) -> Round {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let limits = AdmissionLimits {
        max_unjoined: 4 * IN_FLIGHT,
        new_connection_rate_per_source: 1e6,
        new_connection_burst_per_source: 1_000_000,
        ..AdmissionLimits::default()
    };
    let config = settings(dir, "node-b", "b");
    let listener = rt.block_on(async {
        let endpoint = Endpoint::new(config).expect("endpoint");
        Listener::bind_with_limits("127.0.0.1:0", endpoint, None, limits)
            .await
            .expect("bind")
    });
    let addr = listener.local_addr();
    let held = Arc::new(Mutex::new(Vec::with_capacity(links)));
    let count = Arc::new(AtomicUsize::new(0));
    let listener = Arc::new(listener);
    let before = measure();
    let (h, c, l) = (Arc::clone(&held), Arc::clone(&count), Arc::clone(&listener));
    let accept = rt.spawn(async move {
        loop {
            let (conn, _) = l.accept().await;
            h.lock().expect("held").push(conn);
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--scale-dialer",
            &dir.display().to_string(),
            &addr.to_string(),
            &links.to_string(),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("dialer process");
    let deadline = started + Duration::from_secs(300);
    while count.load(Ordering::Relaxed) < links && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    let accepted = count.load(Ordering::Relaxed);
    let joined = measure();
    // Idle: every handshake's leftovers gone, nothing in flight.
    std::thread::sleep(Duration::from_secs(3));
    let idle = measure();
    drop(child.stdin.take());
    let _ = child.wait();
    let stats = listener.stats();
    accept.abort();
    drop(std::mem::take(&mut *held.lock().expect("held")));
    drop(rt);
    Round {
        accepted,
        took,
        before,
        joined,
        idle,
        stats,
    }
}

/// A node's settings as files hold them (the child reads the same way).
fn settings(dir: &Path, node: &str, files: &str) -> palisade::Config {
    let toml = format!(
        "cluster_name = \"{CLUSTER}\"\nnode_id = \"{node}\"\nshared_secret = \"{}\"\n\
         tls_enabled = true\ntls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n\
         min_tls = \"1.3\"\nmax_unjoined = 1024\n",
        "s".repeat(32),
        dir.join(format!("{files}.crt")).display().to_string(),
        dir.join(format!("{files}.key")).display().to_string(),
        dir.join("ca.pem").display().to_string(),
    );
    let settings = palisade::Settings::from_toml_str(&toml, None).expect("settings");
    let loaded = settings.build(SystemTime::now());
    loaded
        .config
        .unwrap_or_else(|| panic!("settings: {}", loaded.report))
}

/// The child: dials `n` links to `addr`, holds them until stdin closes.
fn dialer(args: &[String]) {
    let (dir, addr, n) = (
        Path::new(&args[0]),
        args[1].parse::<SocketAddr>().expect("addr"),
        args[2].parse::<usize>().expect("n"),
    );
    let config = settings(dir, "node-a", "a");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = Endpoint::new(config).expect("endpoint");
    let links = rt.block_on(async move {
        let next = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::with_capacity(n)));
        let tasks: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let (next, held, endpoint) =
                    (Arc::clone(&next), Arc::clone(&held), endpoint.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let k = i / PER_SOURCE;
                        let from =
                            IpAddr::V4(Ipv4Addr::new(127, 1, (k / 250) as u8, 1 + (k % 250) as u8));
                        for _ in 0..5 {
                            if let Some(conn) = dial(&endpoint, from, addr).await {
                                held.lock().expect("held").push(conn);
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        held
    });
    // Hold every link until the parent is done.
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    drop(links);
}

async fn dial(
    endpoint: &Endpoint,
    from: IpAddr,
    to: SocketAddr,
) -> Option<palisade::tokio::Connection> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let stream = socket.connect(to).await.ok()?;
    palisade::tokio::connect_stream(
        endpoint,
        stream,
        &palisade::Dial::new("").server_name("node-b"),
    )
    .await
    .ok()
}

/// Resident set size now, bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
