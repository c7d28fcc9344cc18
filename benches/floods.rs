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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade::Endpoint;
use tokio::runtime::Runtime;

use common::flood::{self, ip, join_from, ms, percentile, runtime, Flood, RETRY};
use common::{benchmarking, has_arg, quick_env, Certs};

mod common;

/// Legitimate peers joining at once.
const LEGIT_TASKS: usize = 4;
/// Source addresses the legitimate peers dial from, in turn.
const LEGIT_SOURCES: u32 = 250;

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
            if join_from(&endpoint, ip(127, 0, 1, last), to)
                .await
                .is_some()
            {
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

    let mut running = flood::start(attack, phase.flood, to, &client_cfg, dur);
    // One switch ends the phase: the legitimate peers and the flood.
    let stop = Arc::clone(&running.stop);

    let legit = Arc::new(Mutex::new(Legit::default()));
    let endpoint = Endpoint::new(client_cfg).expect("endpoint");
    running.mark();
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
    let flood = running.describe(elapsed);
    drop(running);
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
