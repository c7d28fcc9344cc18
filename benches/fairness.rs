//! Fairness between links (issue 21): a ping link's round trip beside 4 bulk links, on a
//! 2-thread tokio runtime, both ends in this process over loopback (TLS 1.3 mutual TLS +
//! the join). Each bulk link's dialer sends 1 MiB frames as fast as the link takes them
//! and its acceptor drains them; the ping link sends 64 B and the acceptor echoes it.
//!
//! The same workload runs with the driver's per-turn byte bound
//! (`palisade_driver::driver::DEFAULT_TURN_BYTES`) and without it (`usize::MAX`: only
//! the poll count bounds a turn, as before the bound), rounds alternating, so the ratio
//! is from one run. An idle row (no bulk links) gives the floor.
//!
//! ```text
//! cargo bench --bench fairness                          # 3 rounds each, 400 pings
//! PALISADE_BENCH_QUICK=1 cargo bench --bench fairness   # 1 round each, 150 pings
//! cargo bench --bench fairness -- --turn=65536           # another bound than the default
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::tokio::{Connection, Listener};
use palisade::{Dial, Endpoint};
use palisade_driver::driver::{set_turn_bytes, DEFAULT_TURN_BYTES};

use common::flood::{percentile, runtime};
use common::{benchmarking, quick_env, Certs, ACCEPTOR};

mod common;

const BULK_LINKS: usize = 4;
const BULK_FRAME: usize = 1024 * 1024;
const PING: usize = 64;

/// What one round measured.
struct Round {
    rtts: Vec<Duration>,
    bulk_bytes: u64,
    elapsed: Duration,
}

async fn dial(addr: &str, config: &palisade::Config) -> Connection {
    palisade::tokio::dial(
        &Endpoint::new(config.clone()).expect("settings"),
        &Dial::new(addr).server_name(ACCEPTOR),
    )
    .await
    .expect("dial")
}

/// One round: `bulk` bulk links, then `pings` pings on the ping link.
async fn round(certs: &Certs, bulk: usize, pings: usize) -> Round {
    let (dialer, acceptor) = certs.palisade(true);
    let listener = Listener::bind("127.0.0.1:0", acceptor).await.expect("bind");
    let addr = listener.local_addr().to_string();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // The acceptor: bulk links are drained, the ping link echoed.
    let serving = {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await;
                let received = Arc::clone(&received);
                tokio::spawn(async move {
                    while let Ok(Some(frame)) = conn.recv().await {
                        if frame.len() == PING {
                            if conn.send(frame).await.is_err() {
                                break;
                            }
                        } else {
                            received.fetch_add(frame.len() as u64, Ordering::Relaxed);
                        }
                    }
                });
            }
        })
    };
    let mut senders = Vec::new();
    for _ in 0..bulk {
        let mut conn = dial(&addr, &dialer).await;
        let stop = Arc::clone(&stop);
        senders.push(tokio::spawn(async move {
            let frame = Bytes::from(vec![7u8; BULK_FRAME]);
            while !stop.load(Ordering::Relaxed) {
                if conn.send(frame.clone()).await.is_err() {
                    break;
                }
            }
            conn
        }));
    }
    let mut ping = dial(&addr, &dialer).await;
    // Let the bulk links reach full speed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let before = received.load(Ordering::Relaxed);
    let mut rtts = Vec::with_capacity(pings);
    let payload = Bytes::from(vec![1u8; PING]);
    for _ in 0..pings {
        let t = Instant::now();
        ping.send(payload.clone()).await.expect("ping");
        let echo = ping.recv().await.expect("pong").expect("pong");
        assert_eq!(echo.len(), PING);
        rtts.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    let bulk_bytes = received.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        if let Ok(conn) = s.await {
            conn.close(palisade::CloseReason::normal()).await;
        }
    }
    ping.close(palisade::CloseReason::normal()).await;
    serving.abort();
    rtts.sort();
    Round {
        rtts,
        bulk_bytes,
        elapsed,
    }
}

/// Milliseconds with two decimals (loopback round trips are fractions of one).
fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let certs = Certs::new("fairness bench CA");
    let rt = runtime(2);
    let (rounds, pings) = match (benchmarking(), quick_env()) {
        (false, _) => (1, 10),
        (true, true) => (1, 150),
        (true, false) => (3, 400),
    };
    // `-- --turn=BYTES` measures another bound in place of the default.
    let turn = std::env::args()
        .find_map(|a| a.strip_prefix("--turn=").and_then(|n| n.parse().ok()))
        .unwrap_or(DEFAULT_TURN_BYTES);
    let idle = rt.block_on(round(&certs, 0, pings));
    let mut unbounded = (Vec::new(), 0u64, Duration::ZERO);
    let mut bounded = (Vec::new(), 0u64, Duration::ZERO);
    for _ in 0..rounds {
        for (turn, into) in [
            (usize::MAX, &mut unbounded),
            (DEFAULT_TURN_BYTES, &mut bounded),
        ] {
            set_turn_bytes(turn);
            let r = rt.block_on(round(&certs, BULK_LINKS, pings));
            into.0.extend(r.rtts);
            into.1 += r.bulk_bytes;
            into.2 += r.elapsed;
        }
    }
    set_turn_bytes(DEFAULT_TURN_BYTES);
    for set in [&mut unbounded.0, &mut bounded.0] {
        set.sort();
    }
    let mib_s = |bytes: u64, t: Duration| bytes as f64 / (1 << 20) as f64 / t.as_secs_f64();
    println!("fairness: a 64 B ping link beside {BULK_LINKS} links of 1 MiB frames, 2 runtime threads, TLS 1.3 + join");
    println!(
        "  idle (no bulk links):        ping p50 {}  p99 {}",
        ms(percentile(&idle.rtts, 0.5)),
        ms(percentile(&idle.rtts, 0.99))
    );
    let bounded_name = format!("{} KiB per turn", turn / 1024);
    for (name, (rtts, bytes, t)) in [
        ("no byte bound per turn", &unbounded),
        (bounded_name.as_str(), &bounded),
    ] {
        println!(
            "  {name:<28} ping p50 {}  p99 {}  bulk {:.0} MiB/s",
            ms(percentile(rtts, 0.5)),
            ms(percentile(rtts, 0.99)),
            mib_s(*bytes, *t)
        );
    }
    let ratio = |p: f64| {
        percentile(&bounded.0, p).as_secs_f64() / percentile(&unbounded.0, p).as_secs_f64()
    };
    println!(
        "  bounded / unbounded: ping p50 {:.2}x, p99 {:.2}x, bulk throughput {:.2}x",
        ratio(0.5),
        ratio(0.99),
        mib_s(bounded.1, bounded.2) / mib_s(unbounded.1, unbounded.2)
    );
}
