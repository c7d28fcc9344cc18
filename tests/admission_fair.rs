//! Admission control that a crowd, a NAT or an insider cannot turn against legitimate
//! peers (issue 21, items 1, 2 and 5), over loopback aliases (any 127.0.0.0/8 address
//! works on Linux without setup):
//!
//! - a shared address: silent sockets from a legitimate peer's own address neither back
//!   the address off nor keep the peer out (silence is not failure; a source at its cap
//!   gives up its oldest silent connection);
//! - eviction churn: silent sockets from 48 addresses refill the unjoined table while a
//!   peer 400 ms away (a delaying proxy) still joins (nothing younger than
//!   `min_evict_age` is evicted, silent connections go before handshakes in progress);
//! - a handshake in progress that is evicted counts as a failed join of its source.
//!
//! Every scenario runs against a tokio listener and a blocking listener; every wait is
//! bounded.

#[macro_use]
mod hostile_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use hostile_support::*;
use palisade_driver::{AdmissionError, AdmissionLimits};

for_both_listeners!(
    a_peer_joins_from_an_address_flooded_with_silent_sockets,
    a_slow_peer_joins_while_48_addresses_churn_silent_sockets,
    an_evicted_handshake_counts_as_a_failure_of_its_source,
);

fn ip(a: u8, b: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, a, b)
}

fn server_addr(server: &Server) -> SocketAddr {
    server.addr().parse().expect("listener address")
}

/// Silent sockets from each of `sources`, `per_source` each, reopened (at most every
/// `pause`) whenever the listener closes one, until dropped.
struct SilentFlood {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl SilentFlood {
    fn start(to: SocketAddr, sources: Vec<Ipv4Addr>, per_source: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut held: Vec<(Ipv4Addr, Option<TcpStream>)> = sources
                .iter()
                .flat_map(|&s| std::iter::repeat_n(s, per_source))
                .map(|s| (s, None))
                .collect();
            let mut opened = 0;
            let mut buf = [0u8; 64];
            while !stopping.load(Ordering::Relaxed) {
                for (from, socket) in &mut held {
                    let closed = match socket {
                        None => true,
                        Some(s) => match s.read(&mut buf) {
                            Ok(0) => true,
                            Ok(_) => false,
                            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                        },
                    };
                    if closed {
                        *socket = connect_from(*from, to).ok().inspect(|s| {
                            let _ = s.set_nonblocking(true);
                        });
                        opened += 1;
                    }
                }
                thread::sleep(pause);
            }
            opened
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the flood (closing its sockets); the sockets it opened.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("flood thread"))
    }
}

impl Drop for SilentFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ----- a shared address (item 1) -----

fn a_peer_joins_from_an_address_flooded_with_silent_sockets(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    // The failure budget, backoff and handshake rate as deployed: the flood reopens its
    // sockets far faster than 20/s, and silent sockets must spend none of the rate of
    // the address they share with the member.
    let limits = AdmissionLimits {
        max_unjoined: 64,
        max_unjoined_per_source: 8,
        ..AdmissionLimits::default()
    };
    let mut config = cluster.listener(true, Duration::from_secs(10));
    // Silent sockets are closed quickly: each would be a failed join on the old policy.
    config.first_bytes_timeout = Duration::from_millis(300);
    let server = Server::start_with_limits(kind, config, limits);
    let shared_ip = ip(0, 2);
    // 12 silent sockets from the peer's own address, more than its cap of 8, reopened
    // as soon as they are closed.
    let flood = SilentFlood::start(
        server_addr(&server),
        vec![shared_ip],
        12,
        Duration::from_millis(20),
    );
    // Long enough for the first-bytes deadline to close the flood's sockets 3 times.
    thread::sleep(Duration::from_millis(1200));
    for round in 0..2 {
        let name = format!("member-behind-a-nat-{round}");
        let (joined, took) = server.join_from(shared_ip, cluster.member(true, &name));
        if let Err(e) = &joined {
            panic!(
                "{kind:?}: {name} from the flooded address could not join: {e}; stats {:?}; \
                 the hook saw {:#?}",
                server.stats(),
                server
                    .failures
                    .all()
                    .iter()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
            );
        }
        assert!(
            took < Duration::from_secs(1),
            "{kind:?}: {name} took {took:?}"
        );
        let accepted = server.accept(1, FAST);
        assert_eq!(accepted[0].0.peer().node_id, name, "{kind:?}");
        thread::sleep(Duration::from_millis(400));
    }
    let opened = flood.stop();
    let stats = server.stats();
    assert!(
        opened > 12,
        "{kind:?}: the flood reopened its sockets ({opened})"
    );
    assert_eq!(
        stats.backoffs, 0,
        "{kind:?}: silence backed off the address: {stats:?}"
    );
    assert_eq!(
        stats.failed, 0,
        "{kind:?}: silence counted as failure: {stats:?}"
    );
    assert_eq!(stats.joined, 2, "{kind:?}: {stats:?}");
}

// ----- eviction churn (item 2) -----

/// A TCP proxy on 127.0.0.1 that forwards each connection to `to` (from source address
/// `from`) with `delay` one way, in each direction.
fn delaying_proxy(to: SocketAddr, from: Ipv4Addr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
    let addr = listener.local_addr().expect("proxy addr");
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(upstream) = connect_from(from, to) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            for (a, b) in [
                (client.try_clone(), upstream.try_clone()),
                (upstream.try_clone(), client.try_clone()),
            ] {
                if let (Ok(a), Ok(b)) = (a, b) {
                    pump(a, b, delay);
                }
            }
        }
    });
    addr
}

/// Forwards `from` to `to`, each chunk (and the EOF) `delay` after it was read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let _ = tx.send((Instant::now() + delay, buf[..n].to_vec()));
            if n == 0 {
                return;
            }
        }
    });
    thread::spawn(move || {
        for (due, bytes) in rx {
            thread::sleep(due.saturating_duration_since(Instant::now()));
            if bytes.is_empty() || to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn a_slow_peer_joins_while_48_addresses_churn_silent_sockets(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    // The deployed rates and ages; a small table, so that the flood keeps it full.
    let limits = AdmissionLimits {
        max_unjoined: 32,
        max_tracked_sources: 1024,
        ..AdmissionLimits::default()
    };
    // Only evictions close the flood's sockets (no deadline does).
    let mut config = cluster.listener(true, Duration::from_secs(20));
    config.first_bytes_timeout = Duration::from_secs(20);
    let server = Server::start_with_limits(kind, config, limits);
    let to = server_addr(&server);
    // Two silent sockets from each of 48 addresses: three times what the table holds,
    // each reopened within 5 ms of being closed, so every slot is younger than
    // min_evict_age. Refusing newcomers while all are young (as before) kept this peer
    // out; evicting the oldest (before that) turned the table over faster than its join.
    let flood = SilentFlood::start(
        to,
        (1..=48).map(|i| ip(1, i)).collect(),
        2,
        Duration::from_millis(5),
    );
    thread::sleep(Duration::from_millis(1500));
    let proxy = delaying_proxy(to, ip(0, 3), Duration::from_millis(400));
    let start = Instant::now();
    let mut tries = Vec::new();
    let joined = loop {
        let name = format!("member-400ms-away-{}", tries.len());
        match dial(kind, &proxy.to_string(), cluster.member(true, &name)) {
            Ok(conn) => break Some((conn, name)),
            Err(e) => tries.push(e.to_string()),
        }
        if start.elapsed() > Duration::from_secs(30) {
            break None;
        }
    };
    let took = start.elapsed();
    let opened = flood.stop();
    let stats = server.stats();
    let Some((_conn, name)) = joined else {
        panic!(
            "{kind:?}: the slow peer never joined in {took:?} ({} tries: {:?}); stats {stats:?}",
            tries.len(),
            tries.iter().take(3).collect::<Vec<_>>()
        );
    };
    let accepted = server.accept(1, FAST);
    assert_eq!(accepted[0].0.peer().node_id, name, "{kind:?}");
    assert!(
        tries.is_empty(),
        "{kind:?}: the slow peer joined only after {} refused tries: {:?}; stats {stats:?}",
        tries.len(),
        tries.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        opened > 100,
        "{kind:?}: the flood churned ({opened} sockets; {stats:?})"
    );
    assert!(stats.evicted > 16, "{kind:?}: the table churned: {stats:?}");
    // Evicting silent sockets is no failure of theirs.
    assert_eq!(stats.failed, 0, "{kind:?}: {stats:?}");
    eprintln!(
        "{kind:?}: joined after {} failed tries in {took:?}; flood opened {opened}; {stats:?}",
        tries.len()
    );
}

// ----- an evicted handshake is a failure (item 2) -----

fn an_evicted_handshake_counts_as_a_failure_of_its_source(kind: Kind) {
    let _machine = shared();
    let cluster = Cluster::new();
    let limits = AdmissionLimits {
        max_unjoined: 4,
        max_tracked_sources: 64,
        new_connection_rate_per_source: 1e6,
        new_connection_burst_per_source: 1_000_000,
        failed_join_rate_per_source: 0.01,
        failed_join_burst_per_source: 1,
        min_evict_age: Duration::from_millis(100),
        ..AdmissionLimits::default()
    };
    let mut config = cluster.listener(true, Duration::from_secs(10));
    config.first_bytes_timeout = Duration::from_secs(10);
    let server = Server::start_with_limits(kind, config, limits);
    let hello = first_flight(cluster.member(true, "clienthello-then-silence"));
    // ClientHello-then-silence: 4 handshakes in progress from one address fill the table.
    let attacker = ip(0, 2);
    let mut flood: Vec<Raw> = Vec::new();
    for _ in 0..4 {
        let mut raw = Raw::connect_from(&server, attacker);
        raw.send(&hello[..5]);
        flood.push(raw);
        assert!(eventually(FAST, || server.handshakes_in_progress() == flood.len()));
    }
    // The driver has read them (they are mid-handshake) and they are past min_evict_age.
    thread::sleep(Duration::from_millis(300));
    // Two newcomers from another address, themselves mid-handshake, each evict the
    // attacker's oldest handshake, which counts as its failed join.
    let mut newcomers = Vec::new();
    for victim in &mut flood[..2] {
        let mut raw = Raw::connect_from(&server, ip(0, 3));
        raw.send(&hello[..5]);
        newcomers.push(raw);
        let since = victim.opened.elapsed();
        victim.read_until_closed(since + FAST);
        let f = server.failures.of(victim.local, FAST);
        assert!(
            matches!(f.admission, Some(AdmissionError::Evicted { .. })),
            "{kind:?}: {f:?}"
        );
        thread::sleep(Duration::from_millis(150));
    }
    let stats = server.stats();
    assert_eq!(stats.evicted, 2, "{kind:?}: {stats:?}");
    assert_eq!(
        stats.failed, 2,
        "{kind:?}: evictions not counted: {stats:?}"
    );
    assert_eq!(stats.backoffs, 1, "{kind:?}: {stats:?}");
    // Out of failures: the attacker's address is backed off, the other is not.
    let mut refused = Raw::connect_from(&server, attacker);
    let since = refused.opened.elapsed();
    let closed = refused.read_until_closed(since + FAST);
    assert!(closed.reply.is_empty(), "{kind:?}: {closed:?}");
    let f = server.failures.of(refused.local, FAST);
    assert!(
        matches!(f.admission, Some(AdmissionError::Backoff { .. })),
        "{kind:?}: {f:?}"
    );
    assert!(
        newcomers.iter().all(Raw::untouched),
        "{kind:?}: the newcomers stay"
    );
}
