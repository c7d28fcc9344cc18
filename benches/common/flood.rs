//! The floods of the hardening issue (issue 10), shared by `floods.rs` (legitimate joins
//! under each flood) and `storm.rs` (a reconnect storm under each flood): one source
//! address floods a palisade listener while legitimate peers dial it from others.
//!
//! - slot exhaustion (127.0.0.2): ~1,100 silent TCP connections, then ~100 more per second;
//! - handshake flood (127.0.0.3): a recorded ClientHello replayed as fast as 32
//!   connections at a time allow (each costs the listener a TLS 1.3 key exchange and a
//!   signature);
//! - replay-cache flood (127.0.0.4): a node holding the secret joining in a reconnect
//!   loop as fast as it can (each join puts a nonce into the replay cache).
//!
//! Every flood is capped by count and stops when `stop` is set; all traffic stays on
//! 127.0.0.0/8.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use palisade::{Config, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;

use super::ACCEPTOR;

/// Pause before a refused attempt is tried again.
pub const RETRY: Duration = Duration::from_millis(20);
/// Silent connections the slot-exhaustion attacker opens first, then per second.
pub const SLOT_FLOOD_INITIAL: usize = 1_100;
pub const SLOT_FLOOD_PER_S: u64 = 100;
/// Connections the handshake flooder keeps in flight.
pub const HELLO_FLOOD_TASKS: usize = 32;
/// Reconnect loops of the replay-cache flooder.
pub const REPLAY_FLOOD_TASKS: usize = 4;

/// Which flood runs beside the legitimate peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    None,
    Slots,
    Hellos,
    Replays,
}

/// A running flood: what it did so far, and the switch that stops it.
pub struct Running {
    pub kind: Flood,
    pub stop: Arc<AtomicBool>,
    /// Slots: connections opened; hellos: ClientHellos answered; replays: joins.
    pub count: Arc<AtomicU64>,
    /// Slots: connections the listener closed.
    pub closed: Arc<AtomicU64>,
    started: Instant,
    count_at_start: u64,
}

impl Running {
    /// Marks the start of the legitimate traffic the flood's rate is reported against.
    pub fn mark(&mut self) {
        self.started = Instant::now();
        self.count_at_start = self.count.load(Ordering::Relaxed);
    }

    /// What the flood did in the `elapsed` after `mark`, in words.
    pub fn describe(&self, elapsed: Duration) -> String {
        let n = self.count.load(Ordering::Relaxed);
        let per_s = (n - self.count_at_start) as f64 / elapsed.as_secs_f64();
        match self.kind {
            Flood::None => "-".to_string(),
            Flood::Slots => format!(
                "{} silent conns opened, {} closed by the listener",
                n,
                self.closed.load(Ordering::Relaxed)
            ),
            Flood::Hellos => format!("{per_s:.0} ClientHellos answered/s ({n} in all)"),
            Flood::Replays => format!("{per_s:.0} attacker joins/s ({n} in all)"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts `kind` against `to` on `attack` and returns once it is under way (the slot
/// flood's first wave open, the others 200 ms in). `client` is the settings of a node
/// that holds the secret (the handshake flood records its first flight). Each flood is
/// capped at what `dur` allows.
pub fn start(
    attack: &Runtime,
    kind: Flood,
    to: SocketAddr,
    client: &Config,
    dur: Duration,
) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let (count, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cap = |per_s: u64| per_s * dur.as_secs().max(1) + SLOT_FLOOD_INITIAL as u64;
    match kind {
        Flood::None => {}
        Flood::Slots => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            attack.spawn(slot_flood(
                to,
                stop.clone(),
                count.clone(),
                closed.clone(),
                tx,
                cap(SLOT_FLOOD_PER_S),
            ));
            let _ = attack.block_on(rx);
        }
        Flood::Hellos => {
            let hello = Arc::new(first_flight(client.clone()));
            for _ in 0..HELLO_FLOOD_TASKS {
                attack.spawn(hello_flood(
                    to,
                    hello.clone(),
                    stop.clone(),
                    count.clone(),
                    cap(10_000),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Flood::Replays => {
            let endpoint = Endpoint::new(client.clone()).expect("endpoint");
            for _ in 0..REPLAY_FLOOD_TASKS {
                attack.spawn(replay_flood(
                    endpoint.clone(),
                    to,
                    stop.clone(),
                    count.clone(),
                    cap(10_000),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let count_at_start = count.load(Ordering::Relaxed);
    Running {
        kind,
        stop,
        count,
        closed,
        started: Instant::now(),
        count_at_start,
    }
}

pub fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// A TCP connection to `to` from `from` (any port).
pub async fn dial_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// One join from `from`, within 15 s; the joined link, if any.
pub async fn join_from(
    endpoint: &Endpoint,
    from: IpAddr,
    to: SocketAddr,
) -> Option<palisade::tokio::Connection> {
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
    tokio::time::timeout(Duration::from_secs(15), attempt)
        .await
        .ok()
        .flatten()
}

/// Holds a silent connection until the listener closes it or the flood stops.
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
        // Dropping the link closes it in the background.
        if join_from(&endpoint, from, to).await.is_some() {
            joined.fetch_add(1, Ordering::Relaxed);
        } else {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// The first bytes a node with these settings sends when it dials.
pub fn first_flight(config: Config) -> Vec<u8> {
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

/// The `p` quantile of `sorted` (0 when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// A multi-threaded tokio runtime with `threads` workers.
pub fn runtime(threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
}
