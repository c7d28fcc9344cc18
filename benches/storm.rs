//! Reconnect storm (issue 15): N peers (100, 500, 1000, 5000) dial ONE tokio palisade listener
//! at the same moment — every node reconnecting after a partition heals — with TLS 1.3
//! mutual TLS + the join and the default admission control on; beside it, in the same
//! run, the same storm against a tokio-rustls listener with the same certificates and
//! suite order (`Certs::rustls()`: TLS13_AES_128_GCM_SHA256 first on both, like for
//! like; a rustls client counts as done when the listener's first byte, sent once its
//! side of the handshake is complete, arrives). palisade's listeners ask for a 4096-deep
//! accept queue (`palisade_driver::backlog`); the rustls listener runs twice, with
//! tokio's `TcpListener::bind` (backlog 128 here) and with `listen(4096)` (the like-for-
//! like baseline), to show what SYNs dropped at a full accept queue (each costs its peer
//! a 1 s retransmission) cost a storm. Rounds alternate
//! palisade / baseline / deep baseline; each figure is the median of the rounds with
//! their range.
//!
//! Then the palisade storm while one address (127.0.0.2 / .3) runs the slot-exhaustion
//! or the handshake flood of the hardening issue (`common::flood`), as a ratio to the
//! quiet palisade storm of the same run.
//!
//! All N dial tasks wait on one barrier; a peer's join latency runs from the barrier to
//! joined on its side. Peers dial from 127.0.1.1 … (PEERS_PER_SOURCE each, so no source
//! reaches the default `max_unjoined_per_source` (32) or `new_connection_burst_per_source`
//! (40)); a refused attempt is retried after 20 ms, counts as a retry, and its latency
//! counts from the barrier. A peer not joined 30 s after the barrier has failed. Joined
//! links are held until the whole storm has joined.
//!
//! ```text
//! cargo bench --bench storm                          # 5 rounds per N, 3 per flood
//! PALISADE_BENCH_QUICK=1 cargo bench --bench storm   # 3 rounds per N, 1 per flood
//! cargo bench --bench storm -- --sizes=1000 --quiet-only   # one N, no floods
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::Endpoint;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::Barrier;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use common::flood::{self, dial_from, ip, join_from, percentile, runtime, Flood, RETRY};
use common::{benchmarking, has_arg, quick_env, server_name, Certs};

mod common;

const SIZES: [usize; 4] = [100, 500, 1000, 5000];
/// Peers per source address: under a third of the per-source caps.
const PEERS_PER_SOURCE: usize = 10;
/// A peer not joined this long after the barrier has failed.
const DEADLINE: Duration = Duration::from_secs(30);
/// File descriptors a storm of N needs beyond 2 per peer (the floods, the runtimes).
const FD_SPARE: u64 = 1_600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    Palisade,
    /// tokio's `TcpListener::bind`, as palisade's listener: mio's (and std's) listen
    /// backlog of 128.
    TokioRustls,
    /// The same with `listen(4096)`: what a deeper accept queue buys a storm.
    TokioRustlsDeep,
}

/// The listen backlog of `Stack::TokioRustlsDeep`.
const DEEP_BACKLOG: u32 = 4096;

/// What one storm saw.
struct Storm {
    /// From the barrier until the last peer joined (or the deadline).
    all: Duration,
    latencies: Vec<Duration>,
    failed: usize,
    retries: u64,
    /// SYNs the kernel dropped because a listen queue was full (system-wide, Linux).
    overflows: u64,
    flood: String,
}

/// TcpExt ListenOverflows from /proc/net/netstat (0 where there is none): connections
/// whose SYN was dropped because the listener's accept queue was full; each such peer
/// waits for its SYN retransmission (1 s on Linux).
fn listen_overflows() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/netstat") else {
        return 0;
    };
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines[..] else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Peer `i`'s source address: 127.0.(1 + k / 250).(1 + k % 250) with k = i / PEERS_PER_SOURCE.
fn source(i: usize) -> IpAddr {
    let k = i / PEERS_PER_SOURCE;
    ip(127, 0, 1 + (k / 250) as u8, 1 + (k % 250) as u8)
}

/// Raises the soft RLIMIT_NOFILE to the hard one; returns the soft limit now in force.
#[cfg(unix)]
fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum || (lim.maximum.is_none() && lim.current.is_some()) {
        let want = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            return lim.maximum.unwrap_or(u64::MAX);
        }
    }
    lim.current.unwrap_or(u64::MAX)
}

/// Elsewhere the limit is what it is; assume the common default.
#[cfg(not(unix))]
fn raise_fd_limit() -> u64 {
    1024
}

/// One peer: dials until joined (retrying refusals) or the deadline; its latency from
/// the barrier and its retries.
async fn palisade_peer(
    endpoint: Endpoint,
    from: IpAddr,
    to: SocketAddr,
    barrier: Arc<Barrier>,
    start: Arc<std::sync::OnceLock<Instant>>,
) -> (Option<(Duration, palisade::tokio::Connection)>, u64) {
    barrier.wait().await;
    let t0 = *start.get_or_init(Instant::now);
    let mut retries = 0;
    while t0.elapsed() < DEADLINE {
        if let Some(link) = join_from(&endpoint, from, to).await {
            return (Some((t0.elapsed(), link)), retries);
        }
        retries += 1;
        tokio::time::sleep(RETRY).await;
    }
    (None, retries)
}

async fn rustls_peer(
    connector: TlsConnector,
    from: IpAddr,
    to: SocketAddr,
    barrier: Arc<Barrier>,
    start: Arc<std::sync::OnceLock<Instant>>,
) -> (
    Option<(
        Duration,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    )>,
    u64,
) {
    barrier.wait().await;
    let t0 = *start.get_or_init(Instant::now);
    let mut retries = 0;
    while t0.elapsed() < DEADLINE {
        let attempt = async {
            let tcp = dial_from(from, to).await.ok()?;
            let mut tls = connector.connect(server_name(), tcp).await.ok()?;
            // Done when the listener, too, has finished its handshake (checked this
            // peer's certificate and Finished) and said so with one byte, as a
            // palisade dialer is joined only once the acceptor has taken its HELLO.
            let mut ready = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut tls, &mut ready)
                .await
                .ok()?;
            Some(tls)
        };
        if let Ok(Some(tls)) = tokio::time::timeout(Duration::from_secs(15), attempt).await {
            return (Some((t0.elapsed(), tls)), retries);
        }
        retries += 1;
        tokio::time::sleep(RETRY).await;
    }
    (None, retries)
}

/// Runs one storm of `n` peers against a fresh listener of `stack`, with `kind` flooding.
fn storm(
    rts: &Runtimes,
    certs: &Certs,
    stack: Stack,
    n: usize,
    kind: Flood,
    flood_dur: Duration,
) -> Storm {
    let (client_cfg, server_cfg) = certs.palisade(true);
    let (rustls_client, rustls_server) = certs.rustls();
    // The listener and its accept loop, which holds every accepted link until the end.
    let (to, accept_task) = match stack {
        Stack::Palisade => {
            let listener = rts.server.block_on(async {
                palisade::tokio::Listener::bind("127.0.0.1:0", server_cfg)
                    .await
                    .expect("bind")
            });
            let to = listener.local_addr();
            let task = rts.server.spawn(async move {
                let mut held = Vec::new();
                loop {
                    let (link, _) = listener.accept().await;
                    held.push(link);
                }
            });
            (to, task)
        }
        Stack::TokioRustls | Stack::TokioRustlsDeep => {
            let listener = rts.server.block_on(async {
                if stack == Stack::TokioRustls {
                    return TcpListener::bind("127.0.0.1:0").await.expect("bind");
                }
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket
                    .bind("127.0.0.1:0".parse().expect("addr"))
                    .expect("bind");
                socket.listen(DEEP_BACKLOG).expect("listen")
            });
            let to = listener.local_addr().expect("addr");
            let acceptor = TlsAcceptor::from(rustls_server);
            let task = rts.server.spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Ok(mut tls) = acceptor.accept(tcp).await {
                            // The handshake is done on this side too: tell the peer.
                            let _ = tokio::io::AsyncWriteExt::write_all(&mut tls, &[1]).await;
                            let _ = tokio::io::AsyncWriteExt::flush(&mut tls).await;
                            // Hold the session open until the storm ends.
                            let mut buf = [0u8; 64];
                            let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                        }
                    });
                }
            });
            (to, task)
        }
    };
    let mut running = flood::start(&rts.attack, kind, to, &client_cfg, flood_dur);

    let barrier = Arc::new(Barrier::new(n));
    let start = Arc::new(std::sync::OnceLock::new());
    let endpoint = Endpoint::new(client_cfg).expect("endpoint");
    let connector = TlsConnector::from(rustls_client);
    running.mark();
    let overflows_before = listen_overflows();
    let results: Vec<(Option<Duration>, u64)> = rts.clients.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (b, s) = (barrier.clone(), start.clone());
                match stack {
                    Stack::Palisade => {
                        let h = tokio::spawn(palisade_peer(endpoint.clone(), source(i), to, b, s));
                        tokio::spawn(async move {
                            let (r, retries) = h.await.unwrap_or((None, 0));
                            (
                                r.map(|(d, link)| (d, Holder::Palisade(Box::new(link)))),
                                retries,
                            )
                        })
                    }
                    Stack::TokioRustls | Stack::TokioRustlsDeep => {
                        let h = tokio::spawn(rustls_peer(connector.clone(), source(i), to, b, s));
                        tokio::spawn(async move {
                            let (r, retries) = h.await.unwrap_or((None, 0));
                            (
                                r.map(|(d, tls)| (d, Holder::Rustls(Box::new(tls)))),
                                retries,
                            )
                        })
                    }
                }
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        let mut held = Vec::with_capacity(n);
        for t in tasks {
            let (r, retries) = t.await.unwrap_or((None, 0));
            match r {
                Some((d, h)) => {
                    out.push((Some(d), retries));
                    held.push(h);
                }
                None => out.push((None, retries)),
            }
        }
        drop(held);
        out
    });
    let overflows = listen_overflows().saturating_sub(overflows_before);
    let flood = running.describe(
        start
            .get()
            .map_or(Duration::from_millis(1), |t: &Instant| t.elapsed()),
    );
    drop(running);
    accept_task.abort();
    let mut latencies: Vec<Duration> = results.iter().filter_map(|r| r.0).collect();
    latencies.sort();
    let failed = n - latencies.len();
    let all = if failed > 0 {
        DEADLINE
    } else {
        latencies.last().copied().unwrap_or_default()
    };
    // Let the closed links and the attacker's sockets go before the next storm.
    std::thread::sleep(Duration::from_millis(if kind == Flood::None {
        500
    } else {
        2_000
    }));
    Storm {
        all,
        latencies,
        failed,
        retries: results.iter().map(|r| r.1).sum(),
        overflows,
        flood,
    }
}

/// A joined link, held until the whole storm has joined.
enum Holder {
    Palisade(#[allow(dead_code)] Box<palisade::tokio::Connection>),
    Rustls(#[allow(dead_code)] Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

struct Runtimes {
    server: Runtime,
    clients: Runtime,
    attack: Runtime,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn range(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}–{hi:.2}")
}

fn msf(x: f64) -> String {
    format!("{x:.1}")
}

/// Median (and range) over rounds of one figure of a list of storms, in ms.
fn fig(storms: &[Storm], f: impl Fn(&Storm) -> Duration) -> (f64, f64, f64) {
    let v: Vec<f64> = storms.iter().map(|s| f(s).as_secs_f64() * 1e3).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(v), lo, hi)
}

fn cell((med, lo, hi): (f64, f64, f64)) -> String {
    format!("{} ({}–{})", msf(med), msf(lo), msf(hi))
}

fn main() {
    // `cargo test --benches` smoke-runs bench binaries: nothing to check here.
    if !benchmarking() && !has_arg("--storm") {
        return;
    }
    let quick = quick_env();
    let (rounds, flood_rounds) = if quick { (3, 1) } else { (5, 3) };
    let fds = raise_fd_limit();
    let max_n = (fds.saturating_sub(FD_SPARE) / 2) as usize;
    // `--sizes=1000` (or `--sizes=100,500`) runs only those storms, e.g. under a profiler.
    let chosen: Vec<usize> = std::env::args()
        .find_map(|a| a.strip_prefix("--sizes=").map(str::to_string))
        .map(|list| list.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| SIZES.to_vec());
    let sizes: Vec<usize> = chosen.iter().map(|&n| n.min(max_n)).collect();
    eprintln!("RLIMIT_NOFILE soft limit: {fds} (a storm of N needs ~2N + {FD_SPARE})");
    if sizes != chosen {
        eprintln!("too few file descriptors: storms scaled down to {sizes:?}");
    }
    let rts = Runtimes {
        server: runtime(2),
        clients: runtime(1),
        attack: runtime(1),
    };
    let certs = Certs::new("palisade storm bench CA");
    println!(
        "\nreconnect storm: N peers dial one tokio listener at once (TLS 1.3 mTLS, both \
         stacks TLS13_AES_128_GCM_SHA256 first; palisade + join, default admission control); \
         {PEERS_PER_SOURCE} peers per source address (127.0.1.1 …, under the per-source caps \
         of 32 unjoined / a burst of 40); {rounds} rounds alternating, median (range)\n"
    );
    println!(
        "| N | sources | palisade all joined ms | tokio-rustls all done ms | ratio (range) | palisade p50 / p99 / max ms | rustls p50 / p99 / max ms | p50 ratio | failed (pal / rustls) | retries (pal / rustls) | listen overflows (pal / rustls) | rustls with listen({DEEP_BACKLOG}): all done ms, p50 / p99, overflows | palisade / rustls listen({DEEP_BACKLOG}): all (range), p50 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let quiet_storm = |stack| storm(&rts, &certs, stack, n, Flood::None, Duration::ZERO);
        let (mut pal, mut rus, mut deep) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            eprintln!("N = {n}, round {}", r + 1);
            pal.push(quiet_storm(Stack::Palisade));
            rus.push(quiet_storm(Stack::TokioRustls));
            deep.push(quiet_storm(Stack::TokioRustlsDeep));
        }
        let ratios: Vec<f64> = pal
            .iter()
            .zip(&rus)
            .map(|(p, r)| p.all.as_secs_f64() / r.all.as_secs_f64())
            .collect();
        let ratios_deep: Vec<f64> = pal
            .iter()
            .zip(&deep)
            .map(|(p, r)| p.all.as_secs_f64() / r.all.as_secs_f64())
            .collect();
        let lat = |s: &[Storm]| {
            format!(
                "{} / {} / {}",
                msf(fig(s, |x| percentile(&x.latencies, 0.5)).0),
                msf(fig(s, |x| percentile(&x.latencies, 0.99)).0),
                msf(fig(s, |x| x.latencies.last().copied().unwrap_or_default()).0)
            )
        };
        let p50 = |s: &[Storm]| fig(s, |x| percentile(&x.latencies, 0.5)).0;
        println!(
            "| {n} | {} | {} | {} | {:.2}× ({}) | {} | {} | {:.2}× | {} / {} | {} / {} | {} / {} | {}, {} / {} ms, {} | {:.2}× ({}), {:.2}× |",
            n.div_ceil(PEERS_PER_SOURCE),
            cell(fig(&pal, |s| s.all)),
            cell(fig(&rus, |s| s.all)),
            median(ratios.clone()),
            range(&ratios),
            lat(&pal),
            lat(&rus),
            p50(&pal) / p50(&rus),
            pal.iter().map(|s| s.failed).sum::<usize>(),
            rus.iter().map(|s| s.failed).sum::<usize>(),
            pal.iter().map(|s| s.retries).sum::<u64>(),
            rus.iter().map(|s| s.retries).sum::<u64>(),
            pal.iter().map(|s| s.overflows).sum::<u64>(),
            rus.iter().map(|s| s.overflows).sum::<u64>(),
            cell(fig(&deep, |s| s.all)),
            msf(fig(&deep, |x| percentile(&x.latencies, 0.5)).0),
            msf(fig(&deep, |x| percentile(&x.latencies, 0.99)).0),
            deep.iter().map(|s| s.overflows).sum::<u64>(),
            median(ratios_deep.clone()),
            range(&ratios_deep),
            p50(&pal) / p50(&deep),
        );
    }

    if has_arg("--quiet-only") {
        return;
    }
    println!(
        "\nthe palisade storm under a flood from one other address ({flood_rounds} round(s) each, \
         beside a quiet storm of the same round), ratio to quiet\n"
    );
    println!("| N | flood | quiet all joined ms | flooded all joined ms | ratio (range) | flooded p50 / p99 / max ms | failed | retries | listen overflows (quiet / flooded) | flood |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for &n in &sizes {
        let quiet_storm = |stack| storm(&rts, &certs, stack, n, Flood::None, Duration::ZERO);
        for (kind, name) in [
            (Flood::Slots, "slot exhaustion"),
            (Flood::Hellos, "handshake flood"),
        ] {
            let (mut quiet, mut flooded) = (Vec::new(), Vec::new());
            for r in 0..flood_rounds {
                eprintln!("N = {n}, {name}, round {}", r + 1);
                quiet.push(quiet_storm(Stack::Palisade));
                flooded.push(storm(
                    &rts,
                    &certs,
                    Stack::Palisade,
                    n,
                    kind,
                    Duration::from_secs(10),
                ));
            }
            let ratios: Vec<f64> = flooded
                .iter()
                .zip(&quiet)
                .map(|(f, q)| f.all.as_secs_f64() / q.all.as_secs_f64())
                .collect();
            println!(
                "| {n} | {name} | {} | {} | {:.2}× ({}) | {} / {} / {} | {} | {} | {} / {} | {} |",
                cell(fig(&quiet, |s| s.all)),
                cell(fig(&flooded, |s| s.all)),
                median(ratios.clone()),
                range(&ratios),
                msf(fig(&flooded, |x| percentile(&x.latencies, 0.5)).0),
                msf(fig(&flooded, |x| percentile(&x.latencies, 0.99)).0),
                msf(fig(&flooded, |x| x
                    .latencies
                    .last()
                    .copied()
                    .unwrap_or_default())
                .0),
                flooded.iter().map(|s| s.failed).sum::<usize>(),
                flooded.iter().map(|s| s.retries).sum::<u64>(),
                quiet.iter().map(|s| s.overflows).sum::<u64>(),
                flooded.iter().map(|s| s.overflows).sum::<u64>(),
                flooded.last().map_or(String::new(), |s| s.flood.clone()),
            );
        }
    }
}
