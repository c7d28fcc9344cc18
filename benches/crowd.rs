//! Admission under a crowd (issue 21, item 5): the attacks that once turned the
//! listener's own defences against legitimate peers, each with the goal it must meet.
//! A tokio listener with TLS and the default `AdmissionLimits` and settings; all traffic
//! on 127.0.0.0/8; every attack is bounded in sockets and time.
//!
//! - `shared address`: 1,100 silent sockets from 127.0.0.2, each reopened as soon as the
//!   listener closes it, while a member behind the same address (a NAT) joins again and
//!   again. Goal: every join in < 1 s.
//! - `slow peer, 48-address churn`: silent sockets from 48 addresses, each in its own
//!   /24 (32 each, more than the 1,024-slot unjoined table holds), reopened as soon as
//!   closed, while a member 400 ms away (a delaying proxy, each direction) joins. Goal:
//!   it joins, every try, at the first attempt.
//! - `ClientHello flood, 48 addresses`: a recorded ClientHello replayed from 48
//!   addresses in 48 /24s (2 connections each at a time, reset after the answer), while members
//!   join from others. Reported: the handshakes the listener answered per second
//!   against the bound the per-source failure budgets set, and the listener threads'
//!   CPU.
//!
//! ```text
//! cargo bench --bench crowd
//! PALISADE_BENCH_QUICK=1 cargo bench --bench crowd
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::tokio::Listener;
use palisade::Endpoint;
use palisade_driver::{AdmissionLimits, AdmissionStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use common::flood::{dial_from, first_flight, ip, join_from, ms, percentile, RETRY};
use common::{benchmarking, has_arg, quick_env, Certs};

mod common;

/// Silent sockets of the shared-address attack.
const SHARED_SOCKETS: usize = 1_100;
/// Addresses of the churn and ClientHello attacks.
const CROWD: u8 = 48;
/// Silent sockets per address in the churn.
const CHURN_PER_ADDRESS: usize = 32;
/// The slow member's one-way delay.
const ONE_WAY: Duration = Duration::from_millis(400);
/// ClientHello connections in flight per address.
const HELLOS_PER_ADDRESS: usize = 2;
/// Name of the listener's runtime threads (their CPU is what the last phase reports).
const SERVER_THREAD: &str = "crowd-listener";

fn main() {
    // `cargo test --benches` smoke-runs bench binaries: nothing to check here.
    if !benchmarking() && !has_arg("--crowd") {
        return;
    }
    let dur = if quick_env() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(10)
    };
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("runtime");
    let (clients, attack) = (common::flood::runtime(1), common::flood::runtime(1));
    let certs = Certs::new("palisade crowd bench CA");
    let mut rows = Vec::new();
    eprintln!("phase: shared address ({} s)", dur.as_secs());
    rows.push(shared_address(&server, &clients, &attack, &certs, dur));
    eprintln!("phase: slow peer under 48-address churn");
    rows.push(slow_peer_under_churn(&server, &clients, &attack, &certs));
    eprintln!(
        "phase: ClientHello flood from 48 addresses ({} s)",
        dur.as_secs()
    );
    rows.push(hello_flood(&server, &clients, &attack, &certs, dur));
    println!("\nadmission under a crowd (tokio listener, TLS 1.3, default limits)\n");
    println!("| phase | member joins | wait p50 ms | wait p99 ms | wait max ms | goal | met | attack | listener |");
    println!("|---|---:|---:|---:|---:|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.joined,
            r.tries,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.goal,
            if r.met { "yes" } else { "**no**" },
            r.attack,
            r.listener
        );
    }
}

struct Row {
    name: &'static str,
    tries: usize,
    joined: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    goal: &'static str,
    met: bool,
    attack: String,
    listener: String,
}

impl Row {
    fn new(name: &'static str, goal: &'static str, waits: &[Option<Duration>]) -> Self {
        let mut ok: Vec<Duration> = waits.iter().flatten().copied().collect();
        ok.sort();
        Self {
            name,
            tries: waits.len(),
            joined: ok.len(),
            p50: percentile(&ok, 0.5),
            p99: percentile(&ok, 0.99),
            max: ok.last().copied().unwrap_or_default(),
            goal,
            met: false,
            attack: String::new(),
            listener: String::new(),
        }
    }
}

/// A listener with the default limits, accepting (and dropping) every joined link.
struct Server {
    listener: Arc<Listener>,
    to: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Server {
    fn start(rt: &Runtime, certs: &Certs) -> Self {
        let (_, config) = certs.palisade(true);
        let listener = rt.block_on(async {
            let endpoint = Endpoint::new(config).expect("endpoint");
            Listener::bind_with_limits("127.0.0.1:0", endpoint, None, AdmissionLimits::default())
                .await
                .expect("bind")
        });
        let to = listener.local_addr();
        let listener = Arc::new(listener);
        let l2 = Arc::clone(&listener);
        let accept = rt.spawn(async move {
            loop {
                drop(l2.accept().await);
            }
        });
        Self {
            listener,
            to,
            accept,
        }
    }

    fn stats(&self) -> AdmissionStats {
        self.listener.stats()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The attack's switch and counter; stops the attack when dropped.
struct Attack {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
}

impl Attack {
    fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            count: Arc::new(AtomicU64::new(0)),
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Let its sockets close before the next phase.
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// One silent socket from `from`, reopened as soon as the listener closes it, until
/// `stop`; counts every connection opened.
async fn silent_socket(
    from: IpAddr,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) {
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = dial_from(from, to).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        loop {
            tokio::select! {
                r = s.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::Relaxed) { return; }
                }
            }
        }
    }
}

/// Joins from `from` through `via` (the listener, or a proxy to it), retrying refused
/// attempts; the wait from the first attempt, or `None` after `give_up`.
async fn member_join(
    endpoint: &Endpoint,
    from: IpAddr,
    via: SocketAddr,
    give_up: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < give_up {
        if join_from(endpoint, from, via).await.is_some() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(RETRY).await;
    }
    None
}

fn shared_address(
    server_rt: &Runtime,
    clients: &Runtime,
    attack_rt: &Runtime,
    certs: &Certs,
    dur: Duration,
) -> Row {
    let server = Server::start(server_rt, certs);
    let shared = ip(127, 0, 0, 2);
    let attack = Attack::new();
    for _ in 0..SHARED_SOCKETS {
        attack_rt.spawn(silent_socket(
            shared,
            server.to,
            attack.stop.clone(),
            attack.count.clone(),
        ));
    }
    // The sockets open and the listener's first-bytes deadline passes once.
    std::thread::sleep(Duration::from_secs(3));
    let opened_before = attack.count();
    let started = Instant::now();
    let endpoint = Endpoint::new(certs.palisade(true).0).expect("endpoint");
    let waits = clients.block_on(async {
        let mut waits = Vec::new();
        while started.elapsed() < dur {
            waits.push(member_join(&endpoint, shared, server.to, Duration::from_secs(10)).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        waits
    });
    let reopened = (attack.count() - opened_before) as f64 / started.elapsed().as_secs_f64();
    let stats = server.stats();
    let mut row = Row::new(
        "shared address (1,100 silent sockets, reopened)",
        "every join < 1 s",
        &waits,
    );
    row.met = row.joined == row.tries && row.max < Duration::from_secs(1);
    row.attack = format!(
        "{} sockets opened, {reopened:.0}/s while members joined",
        attack.count()
    );
    row.listener = describe(&stats);
    row
}

fn slow_peer_under_churn(
    server_rt: &Runtime,
    clients: &Runtime,
    attack_rt: &Runtime,
    certs: &Certs,
) -> Row {
    let server = Server::start(server_rt, certs);
    let attack = Attack::new();
    for a in 1..=CROWD {
        for _ in 0..CHURN_PER_ADDRESS {
            attack_rt.spawn(silent_socket(
                ip(127, 2, a, 1),
                server.to,
                attack.stop.clone(),
                attack.count.clone(),
            ));
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let proxy = clients.block_on(delaying_proxy(server.to, ip(127, 0, 3, 1), ONE_WAY));
    let opened_before = attack.count();
    let started = Instant::now();
    let endpoint = Endpoint::new(certs.palisade(true).0).expect("endpoint");
    let tries = if quick_env() { 2 } else { 4 };
    let waits = clients.block_on(async {
        let mut waits = Vec::new();
        for _ in 0..tries {
            // One attempt each: a refusal is what this phase is about.
            let t = Instant::now();
            let joined = join_from(&endpoint, ip(127, 0, 0, 1), proxy).await;
            waits.push(joined.map(|_| t.elapsed()));
        }
        waits
    });
    let churn = (attack.count() - opened_before) as f64 / started.elapsed().as_secs_f64();
    let stats = server.stats();
    let mut row = Row::new(
        "slow peer (400 ms each way), 48-address churn",
        "joins every try",
        &waits,
    );
    row.met = row.joined == row.tries;
    row.attack = format!(
        "{} silent sockets from {CROWD} addresses, {churn:.0} opened/s",
        CROWD as usize * CHURN_PER_ADDRESS
    );
    row.listener = describe(&stats);
    row
}

fn hello_flood(
    server_rt: &Runtime,
    clients: &Runtime,
    attack_rt: &Runtime,
    certs: &Certs,
    dur: Duration,
) -> Row {
    let server = Server::start(server_rt, certs);
    let hello = Arc::new(first_flight(certs.palisade(true).0));
    let attack = Attack::new();
    let cpu_before = thread_cpu(SERVER_THREAD);
    let started = Instant::now();
    for a in 1..=CROWD {
        for _ in 0..HELLOS_PER_ADDRESS {
            attack_rt.spawn(hello_loop(
                ip(127, 4, a, 1),
                server.to,
                hello.clone(),
                attack.stop.clone(),
                attack.count.clone(),
            ));
        }
    }
    let endpoint = Endpoint::new(certs.palisade(true).0).expect("endpoint");
    let waits = clients.block_on(async {
        let mut waits = Vec::new();
        let mut n = 0u8;
        while started.elapsed() < dur {
            n = n % 200 + 1;
            waits.push(
                member_join(
                    &endpoint,
                    ip(127, 0, 5, n),
                    server.to,
                    Duration::from_secs(10),
                )
                .await,
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        waits
    });
    let elapsed = started.elapsed();
    let cpu = thread_cpu(SERVER_THREAD) - cpu_before;
    let answered = attack.count();
    let stats = server.stats();
    let limits = AdmissionLimits::default();
    // Each address: its failure burst, then the failure rate (backoff once it runs out).
    let bound = f64::from(CROWD)
        * (f64::from(limits.failed_join_burst_per_source)
            + limits.failed_join_rate_per_source * elapsed.as_secs_f64())
        / elapsed.as_secs_f64();
    let per_s = answered as f64 / elapsed.as_secs_f64();
    let mut row = Row::new(
        "ClientHello flood, 48 addresses",
        "hellos answered/s ≤ failure budgets",
        &waits,
    );
    row.met = per_s <= bound * 1.05 && row.joined == row.tries;
    row.attack = format!(
        "{per_s:.0} ClientHellos answered/s (budgets allow {bound:.0}/s; {answered} in all)"
    );
    row.listener = format!(
        "{}; listener CPU {:.0} % of a core",
        describe(&stats),
        100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()
    );
    row
}

/// Replays `hello` from `from`, reads the answer, resets; again until `stop`.
async fn hello_loop(
    from: IpAddr,
    to: SocketAddr,
    hello: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = dial_from(from, to).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let _ = s.set_zero_linger();
        if s.write_all(&hello).await.is_err() {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            // Refused (closed unread, or backed off): try again a little later.
            _ => tokio::time::sleep(RETRY).await,
        }
    }
}

fn describe(s: &AdmissionStats) -> String {
    format!(
        "joined {}, failed {}, backoffs {}, evicted {} ({} mid-handshake), silent {}, refused: rate {}, backoff {}, full {}, cap {}",
        s.joined,
        s.failed,
        s.backoffs,
        s.evicted,
        s.evicted_mid_handshake,
        s.silent,
        s.refused_rate,
        s.refused_backoff,
        s.refused_full,
        s.refused_per_source_cap
    )
}

/// A proxy on 127.0.0.1 that forwards each connection to `to` from `from`, holding
/// every byte `delay` in each direction (and the connection itself `delay`, as the
/// first bytes of a far peer arrive).
async fn delaying_proxy(to: SocketAddr, from: IpAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let Ok(upstream) = dial_from(from, to).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::spawn(delayed_pump(cr, uw, delay));
                tokio::spawn(delayed_pump(ur, cw, delay));
            });
        }
    });
    addr
}

/// Copies `from` to `to`, each chunk `delay` after it was read, in order.
async fn delayed_pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if bytes.is_empty() || to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let due = Instant::now() + delay;
        if tx.send((due, buf[..n].to_vec())).is_err() || n == 0 {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// CPU time (user + system) of this process's threads named `name`, from /proc.
fn thread_cpu(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        // The kernel keeps 15 bytes of a thread's name.
        if !name.starts_with(comm.trim()) || comm.trim().is_empty() {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3; utime 14, stime 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(14) + field(15);
    }
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}
