//! Legitimate joins under floods (issue 10, items 5–7): how many joins per second
//! legitimate peers get, and how long the unluckiest of them waits, on a quiet listener
//! and while one source address floods it, all in the same run:
//!
//! - `slot exhaustion`: one address opens ~1,100 silent TCP connections and keeps
//!   opening ~100 more per second;
//! - `handshake flood`: one address replays a recorded ClientHello as fast as 32
//!   connections at a time allow (each costs the listener a TLS 1.3 key exchange and a
//!   signature);
//! - `replay-cache flood`: one node holding the secret joins in a plaintext reconnect
//!   loop as fast as it can (each join puts a nonce into the replay cache).
//!
//! Legitimate peers dial from 250 addresses (127.0.1.1 …, so no one address exceeds the
//! default new_connection_rate_per_source), four at a time; a refused
//! attempt is retried after 20 ms and its wait counts from the first attempt. Each phase
//! gets a fresh listener (a fresh replay cache). All traffic stays on 127.0.0.0/8; every
//! flood is capped by count and time.
//!
//! ```text
//! cargo bench --bench floods                          # 8 s per phase
//! PALISADE_BENCH_QUICK=1 cargo bench --bench floods   # 5 s per phase
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use palisade::{Config, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;

use common::{benchmarking, has_arg, quick_env, Certs, ACCEPTOR};

mod common;

/// Legitimate peers joining at once.
const LEGIT_TASKS: usize = 4;
/// Source addresses the legitimate peers dial from, in turn.
const LEGIT_SOURCES: u32 = 250;
/// Pause before a refused legitimate peer tries again.
const RETRY: Duration = Duration::from_millis(20);
/// Silent connections the slot-exhaustion attacker opens first, then per second.
const SLOT_FLOOD_INITIAL: usize = 1_100;
const SLOT_FLOOD_PER_S: u64 = 100;
/// Connections the handshake flooder keeps in flight.
const HELLO_FLOOD_TASKS: usize = 32;
/// Reconnect loops of the replay-cache flooder.
const REPLAY_FLOOD_TASKS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flood {
    None,
    Slots,
    Hellos,
    Replays,
}

struct Phase {
    name: &'static str,
    tls: bool,
    flood: Flood,
}

const PHASES: [Phase; 5] = [
    Phase {
        name: "TLS, quiet",
        tls: true,
        flood: Flood::None,
    },
    Phase {
        name: "TLS, slot exhaustion",
        tls: true,
        flood: Flood::Slots,
    },
    Phase {
        name: "TLS, handshake flood",
        tls: true,
        flood: Flood::Hellos,
    },
    Phase {
        name: "plaintext, quiet",
        tls: false,
        flood: Flood::None,
    },
    Phase {
        name: "plaintext, replay-cache flood",
        tls: false,
        flood: Flood::Replays,
    },
];

/// What the legitimate peers saw in one phase.
#[derive(Default)]
struct Legit {
    waits: Vec<Duration>,
    refused_attempts: u64,
    /// Peers still waiting when the phase ended, and the longest of those waits.
    stuck: u64,
    stuck_wait: Duration,
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// A TCP connection to `to` from `from` (any port).
async fn dial_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

async fn join_once(endpoint: &Endpoint, from: IpAddr, to: SocketAddr) -> bool {
    let attempt = async {
        let stream = dial_from(from, to).await.ok()?;
        palisade::tokio::connect_stream(
            endpoint,
            stream,
            &palisade::Dial::new("").server_name(ACCEPTOR),
        )
        .await
        .ok()
    };
    match tokio::time::timeout(Duration::from_secs(15), attempt).await {
        // Dropping the link closes it in the background.
        Ok(Some(_link)) => true,
        _ => false,
    }
}

/// One legitimate peer after another, until `stop`.
async fn legit_loop(
    task: usize,
    endpoint: Endpoint,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Legit>>,
) {
    let mut n = task as u32;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        loop {
            n = n.wrapping_add(LEGIT_TASKS as u32);
            let last = (n % LEGIT_SOURCES + 1) as u8;
            if join_once(&endpoint, ip(127, 0, 1, last), to).await {
                let mut o = out.lock().unwrap();
                o.waits.push(started.elapsed());
                break;
            }
            {
                let mut o = out.lock().unwrap();
                o.refused_attempts += 1;
                if stop.load(Ordering::Relaxed) {
                    o.stuck += 1;
                    o.stuck_wait = o.stuck_wait.max(started.elapsed());
                    return;
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Holds a silent connection until the listener closes it or the phase ends.
async fn hold_silent(stream: TcpStream, stop: Arc<AtomicBool>, closed: Arc<AtomicU64>) {
    let mut stream = stream;
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => { closed.fetch_add(1, Ordering::Relaxed); return; }
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if stop.load(Ordering::Relaxed) { return; }
            }
        }
    }
}

/// Slot exhaustion: opens the first wave, then ~100 per second until `stop` or the cap.
async fn slot_flood(
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    ready: tokio::sync::oneshot::Sender<()>,
    cap: u64,
) {
    let from = ip(127, 0, 0, 2);
    for _ in 0..SLOT_FLOOD_INITIAL {
        if let Ok(s) = dial_from(from, to).await {
            opened.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(hold_silent(s, stop.clone(), closed.clone()));
        }
    }
    let _ = ready.send(());
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / SLOT_FLOOD_PER_S));
    while !stop.load(Ordering::Relaxed) && opened.load(Ordering::Relaxed) < cap {
        tick.tick().await;
        if let Ok(s) = dial_from(from, to).await {
            opened.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(hold_silent(s, stop.clone(), closed.clone()));
        }
    }
}

/// Handshake flood: replays `hello`, reads the listener's answer, resets, again.
async fn hello_flood(
    to: SocketAddr,
    hello: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    cap: u64,
) {
    let from = ip(127, 0, 0, 3);
    let mut buf = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) && answered.load(Ordering::Relaxed) < cap {
        let Ok(mut s) = dial_from(from, to).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        // A reset instead of a FIN: no TIME_WAIT piling up on the attacker's ports.
        let _ = s.set_zero_linger();
        if s.write_all(&hello).await.is_err() {
            continue;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            if n > 0 {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Replay-cache flood: a node with the secret joining as fast as it can.
async fn replay_flood(
    endpoint: Endpoint,
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    joined: Arc<AtomicU64>,
    cap: u64,
) {
    let from = ip(127, 0, 0, 4);
    while !stop.load(Ordering::Relaxed) && joined.load(Ordering::Relaxed) < cap {
        if join_once(&endpoint, from, to).await {
            joined.fetch_add(1, Ordering::Relaxed);
        } else {
            tokio::time::sleep(RETRY).await;
        }
    }
}

fn first_flight(config: Config) -> Vec<u8> {
    let endpoint = Endpoint::new(config).expect("config");
    let mut conn = endpoint
        .connect(ACCEPTOR, Instant::now(), SystemTime::now())
        .expect("connect");
    let mut out = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

struct Row {
    name: &'static str,
    joins_per_s: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    refused: u64,
    stuck: u64,
    flood: String,
}

fn run_phase(
    server: &Runtime,
    clients: &Runtime,
    attack: &Runtime,
    phase: &Phase,
    certs: &Certs,
    dur: Duration,
) -> Row {
    let (client_cfg, server_cfg) = certs.palisade(phase.tls);
    let listener = server.block_on(async {
        palisade::tokio::Listener::bind("127.0.0.1:0", server_cfg)
            .await
            .expect("bind")
    });
    let to = listener.local_addr();
    let listener = Arc::new(listener);
    let l2 = Arc::clone(&listener);
    let accept_task = server.spawn(async move {
        loop {
            let (link, _) = l2.accept().await;
            drop(link);
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (c1, c2) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cap = |per_s: u64| per_s * dur.as_secs().max(1) + SLOT_FLOOD_INITIAL as u64;
    match phase.flood {
        Flood::None => {}
        Flood::Slots => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            attack.spawn(slot_flood(
                to,
                stop.clone(),
                c1.clone(),
                c2.clone(),
                tx,
                cap(SLOT_FLOOD_PER_S),
            ));
            let _ = attack.block_on(rx);
        }
        Flood::Hellos => {
            let hello = Arc::new(first_flight(client_cfg.clone()));
            for _ in 0..HELLO_FLOOD_TASKS {
                attack.spawn(hello_flood(
                    to,
                    hello.clone(),
                    stop.clone(),
                    c1.clone(),
                    cap(10_000),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Flood::Replays => {
            let endpoint = Endpoint::new(client_cfg.clone()).expect("endpoint");
            for _ in 0..REPLAY_FLOOD_TASKS {
                attack.spawn(replay_flood(
                    endpoint.clone(),
                    to,
                    stop.clone(),
                    c1.clone(),
                    cap(10_000),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let flood_before = c1.load(Ordering::Relaxed);

    let legit = Arc::new(Mutex::new(Legit::default()));
    let endpoint = Endpoint::new(client_cfg).expect("endpoint");
    let started = Instant::now();
    let tasks: Vec<_> = (0..LEGIT_TASKS)
        .map(|t| {
            clients.spawn(legit_loop(
                t,
                endpoint.clone(),
                to,
                stop.clone(),
                legit.clone(),
            ))
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    clients.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    });
    let flood = match phase.flood {
        Flood::None => "-".to_string(),
        Flood::Slots => format!(
            "{} silent conns opened, {} closed by the listener",
            c1.load(Ordering::Relaxed),
            c2.load(Ordering::Relaxed)
        ),
        Flood::Hellos => format!(
            "{:.0} ClientHellos answered/s",
            (c1.load(Ordering::Relaxed) - flood_before) as f64 / elapsed.as_secs_f64()
        ),
        Flood::Replays => format!(
            "{:.0} attacker joins/s",
            (c1.load(Ordering::Relaxed) - flood_before) as f64 / elapsed.as_secs_f64()
        ),
    };
    accept_task.abort();
    drop(listener);
    // Let the attacker's sockets and the lingering links go before the next phase.
    std::thread::sleep(Duration::from_secs(2));
    let legit = legit.lock().unwrap();
    let mut waits = legit.waits.clone();
    waits.sort();
    let max = waits
        .last()
        .copied()
        .unwrap_or_default()
        .max(legit.stuck_wait);
    Row {
        name: phase.name,
        joins_per_s: waits.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&waits, 0.5),
        p99: percentile(&waits, 0.99),
        max,
        refused: legit.refused_attempts,
        stuck: legit.stuck,
        flood,
    }
}

fn runtime(threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}

fn main() {
    // `cargo test --benches` smoke-runs bench binaries: nothing to check here.
    if !benchmarking() && !has_arg("--flood") {
        return;
    }
    let dur = if quick_env() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(8)
    };
    let (server, clients, attack) = (runtime(2), runtime(1), runtime(1));
    let certs = Certs::new("palisade flood bench CA");
    let mut rows = Vec::new();
    for phase in &PHASES {
        eprintln!("phase: {} ({} s)", phase.name, dur.as_secs());
        rows.push(run_phase(&server, &clients, &attack, phase, &certs, dur));
    }
    println!(
        "\nlegitimate joins under floods ({} legitimate peers at a time, {} s per phase)\n",
        LEGIT_TASKS,
        dur.as_secs()
    );
    println!(
        "| phase | legit joins/s | wait p50 ms | wait p99 ms | wait max ms | refused attempts | still waiting | flood |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let quiet = |tls: bool| {
        rows.iter()
            .zip(PHASES.iter())
            .find(|(_, p)| p.tls == tls && p.flood == Flood::None)
            .map(|(r, _)| r.joins_per_s)
    };
    for (row, phase) in rows.iter().zip(PHASES.iter()) {
        let ratio = match quiet(phase.tls) {
            Some(q) if phase.flood != Flood::None && q > 0.0 => {
                format!(" ({:.2}× quiet)", row.joins_per_s / q)
            }
            _ => String::new(),
        };
        println!(
            "| {} | {:.0}{} | {} | {} | {} | {} | {} | {} |",
            row.name,
            row.joins_per_s,
            ratio,
            ms(row.p50),
            ms(row.p99),
            ms(row.max),
            row.refused,
            row.stuck,
            row.flood
        );
    }
}
