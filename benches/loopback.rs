//! Loopback benchmarks: palisade over 127.0.0.1 beside what users write without it, in
//! the same run, with the ratio printed at the end.
//!
//! - `loopback_tokio/{palisade,tokio-rustls}/{64B,1KiB,16KiB,64KiB}`: one sender
//!   streaming frames one way, palisade's with `send_many` (up to 256 frames a call),
//!   its receiver with `recv_many` (up to 256 a call), as a sender with frames queued
//!   would write it. The baseline is
//!   `Framed<tokio_rustls::TlsStream, LengthDelimitedCodec>` with `SinkExt::send(frame)`
//!   per frame (as users write it: every frame flushed).
//! - `loopback_blocking/{palisade,rustls-stream}/...`: the same with the blocking
//!   adapter, beside a std-only `rustls::StreamOwned` (`write_all(len)`,
//!   `write_all(frame)`, `flush()` per frame; `read_exact` on the other side).
//! - `handshake_tokio/{palisade,tokio-rustls}`: connect + handshake (+ join) + graceful
//!   close per iteration, with a listener answering in the background.
//!
//! Both sides use the same certificates (one test CA, ECDSA P-256, mutual TLS), TLS 1.3
//! only and the ring provider's default suites; palisade also has a shared secret (the
//! join proof), as it is deployed. Connection setup is outside the timed part: each
//! benchmark reuses one connection across iterations (one iteration = one frame, or one
//! handshake). Both stacks run on one tokio runtime with two workers, sender and
//! receiver each in a task of its own; every socket has TCP_NODELAY (palisade sets it);
//! neither side resumes sessions, so every handshake is a full one. Criterion reports
//! time per frame and payload bytes/s.
//!
//! At the end of a `cargo bench` run, a summary in Markdown: first "paired rounds" (for
//! each figure, palisade and its baseline measured alternately, 5 rounds of ~300 ms
//! each, or 3 of ~150 ms in quick mode; medians, and the process CPU time per frame or
//! handshake, palisade / baseline, which moves less than rates on a shared machine),
//! where the targets are judged; then criterion's own estimates, each benchmark measured
//! on its own.
//!
//! Quick mode: `PALISADE_BENCH_QUICK=1` (shorter warm-up and measurement) and/or
//! criterion's `--quick`:
//!
//! ```text
//! PALISADE_BENCH_QUICK=1 cargo bench --bench loopback -- --quick
//! ```

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures_util::{SinkExt, StreamExt};
use palisade::{CloseReason, Config, Endpoint};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use common::{benchmarking, estimate_ns, has_arg, quick_env, server_name, Certs};

mod common;

/// Frame payload sizes measured, with their labels.
const SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (1024, "1KiB"),
    (16 * 1024, "16KiB"),
    (64 * 1024, "64KiB"),
];

const TOKIO_GROUP: &str = "loopback_tokio";
/// Most frames per `send_many` / `recv_many` call in `loopback_tokio`.
const BATCH: usize = 256;
const BLOCKING_GROUP: &str = "loopback_blocking";
const HANDSHAKE_GROUP: &str = "handshake_tokio";
const PALISADE: &str = "palisade";
const TOKIO_BASELINE: &str = "tokio-rustls";
const BLOCKING_BASELINE: &str = "rustls-stream";

// ----- certificates and configs -----

/// Everything both stacks are configured from: one CA, one identity per side.
struct Setup {
    /// palisade, dialing side (sender).
    pal_client: Config,
    /// palisade, accepting side (receiver).
    pal_server: Config,
    /// The dialing side's endpoint, made once (as a node that dials repeatedly does).
    pal_client_endpoint: Endpoint,
    /// The baselines, with the same certificates: TLS 1.3 only and (as palisade) no
    /// resumption or tickets, so every handshake is a full one.
    rustls_client: Arc<ClientConfig>,
    rustls_server: Arc<ServerConfig>,
}

impl Setup {
    fn new() -> Self {
        let certs = Certs::new("palisade bench CA");
        let (pal_client, pal_server) = certs.palisade(true);
        let (rustls_client, rustls_server) = certs.rustls();
        Self {
            pal_client_endpoint: Endpoint::new(pal_client.clone()).expect("endpoint"),
            pal_client,
            pal_server,
            rustls_client,
            rustls_server,
        }
    }
}

// ----- what ran, for the summary -----

/// One benchmark's own tally (every call criterion made, warm-up included): the
/// summary's fallback when criterion's estimates.json cannot be found.
#[derive(Debug, Clone)]
struct Tally {
    group: &'static str,
    func: &'static str,
    param: Option<&'static str>,
    iters: u64,
    elapsed: Duration,
}

static TALLIES: Mutex<Vec<Tally>> = Mutex::new(Vec::new());

fn record(
    group: &'static str,
    func: &'static str,
    param: Option<&'static str>,
    iters: u64,
    elapsed: Duration,
) {
    let mut t = TALLIES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = t
        .iter_mut()
        .find(|e| e.group == group && e.func == func && e.param == param)
    {
        e.iters += iters;
        e.elapsed += elapsed;
    } else {
        t.push(Tally {
            group,
            func,
            param,
            iters,
            elapsed,
        });
    }
}

// ----- timing helpers -----

/// Runs `sender` and `receiver` as tasks on the runtime's workers (so both stacks get
/// the same threads) and times from the start until both are done.
fn time_tasks<A, B>(rt: &Runtime, sender: A, receiver: B) -> (Duration, A::Output, B::Output)
where
    A: Future + Send + 'static,
    A::Output: Send + 'static,
    B: Future + Send + 'static,
    B::Output: Send + 'static,
{
    rt.block_on(async {
        let start = Instant::now();
        let s = tokio::spawn(sender);
        let r = tokio::spawn(receiver);
        let (s, r) = (
            s.await.expect("sender task"),
            r.await.expect("receiver task"),
        );
        (start.elapsed(), s, r)
    })
}

// ----- the links -----

struct PalisadeTokio {
    tx: Option<palisade::tokio::SendHalf>,
    rx: Option<palisade::tokio::RecvHalf>,
    /// The halves not used (one-way traffic); dropping both halves closes a link.
    _unused: (palisade::tokio::RecvHalf, palisade::tokio::SendHalf),
    _listener: palisade::tokio::Listener,
}

fn palisade_tokio(rt: &Runtime, setup: &Setup) -> PalisadeTokio {
    rt.block_on(async {
        let listener = palisade::tokio::Listener::bind("127.0.0.1:0", setup.pal_server.clone())
            .await
            .expect("bind");
        let addr = listener.local_addr().to_string();
        let (client, (server, _)) = tokio::join!(
            palisade::tokio::connect(&addr, setup.pal_client.clone()),
            listener.accept()
        );
        let client = client.expect("connect");
        let tls = client.peer().tls.as_ref().expect("TLS");
        eprintln!(
            "palisade (tokio) link: {} {}",
            tls.version, tls.cipher_suite
        );
        let (tx, client_rx) = client.split();
        let (server_tx, rx) = server.split();
        PalisadeTokio {
            tx: Some(tx),
            rx: Some(rx),
            _unused: (client_rx, server_tx),
            _listener: listener,
        }
    })
}

type ClientFramed = Framed<tokio_rustls::client::TlsStream<TcpStream>, LengthDelimitedCodec>;
type ServerFramed = Framed<tokio_rustls::server::TlsStream<TcpStream>, LengthDelimitedCodec>;

struct BaselineTokio {
    tx: Option<ClientFramed>,
    rx: Option<ServerFramed>,
}

fn baseline_tokio(rt: &Runtime, setup: &Setup) -> BaselineTokio {
    let connector = TlsConnector::from(Arc::clone(&setup.rustls_client));
    let acceptor = TlsAcceptor::from(Arc::clone(&setup.rustls_server));
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = async {
            let (s, _) = listener.accept().await.expect("accept");
            s.set_nodelay(true).expect("nodelay");
            acceptor.accept(s).await.expect("TLS accept")
        };
        let client = async {
            let s = TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            connector
                .connect(server_name(), s)
                .await
                .expect("TLS connect")
        };
        let (server, client) = tokio::join!(server, client);
        let session = &client.get_ref().1;
        eprintln!(
            "tokio-rustls link: {:?} {:?}",
            session.protocol_version(),
            session.negotiated_cipher_suite().map(|s| s.suite())
        );
        BaselineTokio {
            tx: Some(Framed::new(client, LengthDelimitedCodec::new())),
            rx: Some(Framed::new(server, LengthDelimitedCodec::new())),
        }
    })
}

struct PalisadeBlocking {
    tx: palisade::blocking::SendHalf,
    rx: palisade::blocking::RecvHalf,
    _unused: (palisade::blocking::RecvHalf, palisade::blocking::SendHalf),
    _listener: palisade::blocking::Listener,
}

fn palisade_blocking(setup: &Setup) -> PalisadeBlocking {
    let listener =
        palisade::blocking::Listener::bind("127.0.0.1:0", setup.pal_server.clone()).expect("bind");
    let addr = listener.local_addr().to_string();
    let (client, server) = thread::scope(|s| {
        let server = s.spawn(|| listener.accept().expect("accept").0);
        let client = palisade::blocking::connect(&addr, setup.pal_client.clone()).expect("connect");
        (client, server.join().expect("accept thread"))
    });
    let (tx, client_rx) = client.split();
    let (server_tx, rx) = server.split();
    PalisadeBlocking {
        tx,
        rx,
        _unused: (client_rx, server_tx),
        _listener: listener,
    }
}

struct BaselineBlocking {
    tx: rustls::StreamOwned<ClientConnection, StdStream>,
    rx: rustls::StreamOwned<ServerConnection, StdStream>,
    buf: Vec<u8>,
}

fn baseline_blocking(setup: &Setup) -> BaselineBlocking {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = thread::scope(|s| {
        let server = s.spawn(|| {
            let (mut sock, _) = listener.accept().expect("accept");
            sock.set_nodelay(true).expect("nodelay");
            let mut conn =
                ServerConnection::new(Arc::clone(&setup.rustls_server)).expect("server conn");
            while conn.is_handshaking() {
                conn.complete_io(&mut sock).expect("server handshake");
            }
            rustls::StreamOwned::new(conn, sock)
        });
        let mut sock = StdStream::connect(addr).expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        let mut conn = ClientConnection::new(Arc::clone(&setup.rustls_client), server_name())
            .expect("client conn");
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).expect("client handshake");
        }
        (
            rustls::StreamOwned::new(conn, sock),
            server.join().expect("server thread"),
        )
    });
    BaselineBlocking {
        tx,
        rx,
        buf: vec![0; SIZES[SIZES.len() - 1].0],
    }
}

/// A palisade listener whose accepted links are drained until the peer closes. Every
/// handshake comes from 127.0.0.1, thousands a second: the default per-source admission
/// rate (20/s, a defence against floods) would refuse all but the first few, so this
/// listener lets one source open connections as fast as it can.
fn palisade_listener(rt: &Runtime, setup: &Setup) -> Listening {
    let endpoint = palisade::Endpoint::new(setup.pal_server.clone()).expect("endpoint");
    let limits = palisade::AdmissionLimits {
        new_connection_rate_per_source: 1e9,
        new_connection_burst_per_source: u32::MAX,
        ..Default::default()
    };
    rt.block_on(async move {
        let listener =
            palisade::tokio::Listener::bind_with_limits("127.0.0.1:0", endpoint, None, limits)
                .await
                .expect("bind");
        let addr = listener.local_addr().to_string();
        let task = tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await;
                tokio::spawn(async move { while let Ok(Some(_)) = conn.recv().await {} });
            }
        });
        Listening { addr, task }
    })
}

/// A tokio-rustls acceptor: handshake, read until the peer closes, close.
fn baseline_listener(rt: &Runtime, setup: &Setup) -> Listening {
    let acceptor = TlsAcceptor::from(Arc::clone(&setup.rustls_server));
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = s.set_nodelay(true);
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                    let _ = tls.shutdown().await;
                });
            }
        });
        Listening { addr, task }
    })
}

/// A listener answering handshakes in the background.
struct Listening {
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ----- what is measured -----

/// The stacks compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    PalisadeTokio,
    TokioRustls,
    PalisadeBlocking,
    RustlsStream,
}

/// Every link and listener, made on first use (so a criterion filter skips the setup of
/// what it skips) and reused across iterations.
struct Ctx<'a> {
    rt: &'a Runtime,
    setup: &'a Setup,
    pal_tokio: Option<PalisadeTokio>,
    base_tokio: Option<BaselineTokio>,
    pal_blocking: Option<PalisadeBlocking>,
    base_blocking: Option<BaselineBlocking>,
    pal_listener: Option<Listening>,
    base_listener: Option<Listening>,
}

impl<'a> Ctx<'a> {
    fn new(rt: &'a Runtime, setup: &'a Setup) -> Self {
        Self {
            rt,
            setup,
            pal_tokio: None,
            base_tokio: None,
            pal_blocking: None,
            base_blocking: None,
            pal_listener: None,
            base_listener: None,
        }
    }

    /// Streams `iters` copies of `frame` one way; the time from the first send until the
    /// receiver holds the last frame.
    fn transfer(&mut self, stack: Stack, frame: &Bytes, iters: u64) -> Duration {
        let size = frame.len() as u64;
        let (elapsed, bytes) = match stack {
            Stack::PalisadeTokio => self.palisade_tokio(frame, iters),
            Stack::TokioRustls => self.tokio_rustls(frame, iters),
            Stack::PalisadeBlocking => self.palisade_blocking(frame, iters),
            Stack::RustlsStream => self.rustls_stream(frame, iters),
        };
        assert_eq!(bytes, iters * size, "{stack:?}: bytes received");
        elapsed
    }

    fn palisade_tokio(&mut self, frame: &Bytes, iters: u64) -> (Duration, u64) {
        let (rt, setup) = (self.rt, self.setup);
        let link = self
            .pal_tokio
            .get_or_insert_with(|| palisade_tokio(rt, setup));
        let mut tx = link.tx.take().expect("send half");
        let mut rx = link.rx.take().expect("recv half");
        let frame = frame.clone();
        let (elapsed, tx, (rx, bytes)) = time_tasks(
            rt,
            async move {
                // One batch of copies, handed to `send_many` until all `iters` are sent.
                let batch = vec![frame; (iters as usize).min(BATCH)];
                let mut left = iters as usize;
                while left > 0 {
                    let chunk = batch.get(..left.min(BATCH)).unwrap_or_default();
                    left -= tx.send_many(chunk).await.expect("send");
                }
                tx
            },
            async move {
                let (mut bytes, mut frames) = (0u64, 0u64);
                let mut got = Vec::with_capacity(BATCH);
                while frames < iters {
                    let n = rx.recv_many(&mut got, BATCH).await.expect("recv");
                    assert!(n > 0, "the link ended");
                    frames += n as u64;
                    bytes += got.drain(..).map(|f| f.len() as u64).sum::<u64>();
                }
                (rx, bytes)
            },
        );
        link.tx = Some(tx);
        link.rx = Some(rx);
        (elapsed, bytes)
    }

    fn tokio_rustls(&mut self, frame: &Bytes, iters: u64) -> (Duration, u64) {
        let (rt, setup) = (self.rt, self.setup);
        let link = self
            .base_tokio
            .get_or_insert_with(|| baseline_tokio(rt, setup));
        let mut tx = link.tx.take().expect("client");
        let mut rx = link.rx.take().expect("server");
        let frame = frame.clone();
        let (elapsed, tx, (rx, bytes)) = time_tasks(
            rt,
            async move {
                for _ in 0..iters {
                    tx.send(frame.clone()).await.expect("send");
                }
                tx
            },
            async move {
                let mut bytes = 0u64;
                for _ in 0..iters {
                    let f = rx.next().await.expect("frame").expect("recv");
                    bytes += f.len() as u64;
                }
                (rx, bytes)
            },
        );
        link.tx = Some(tx);
        link.rx = Some(rx);
        (elapsed, bytes)
    }

    fn palisade_blocking(&mut self, frame: &Bytes, iters: u64) -> (Duration, u64) {
        let setup = self.setup;
        let link = self
            .pal_blocking
            .get_or_insert_with(|| palisade_blocking(setup));
        let (tx, rx) = (&link.tx, &link.rx);
        let start = Instant::now();
        let bytes = thread::scope(|s| {
            let receiver = s.spawn(|| {
                let mut bytes = 0u64;
                for _ in 0..iters {
                    bytes += rx.recv().expect("recv").expect("frame").len() as u64;
                }
                bytes
            });
            for _ in 0..iters {
                tx.send(frame.clone()).expect("send");
            }
            receiver.join().expect("receiver")
        });
        (start.elapsed(), bytes)
    }

    fn rustls_stream(&mut self, frame: &Bytes, iters: u64) -> (Duration, u64) {
        let setup = self.setup;
        let link = self
            .base_blocking
            .get_or_insert_with(|| baseline_blocking(setup));
        let BaselineBlocking { tx, rx, buf } = link;
        let start = Instant::now();
        let bytes = thread::scope(|s| {
            let receiver = s.spawn(|| {
                let mut bytes = 0u64;
                let mut len = [0u8; 4];
                for _ in 0..iters {
                    rx.read_exact(&mut len).expect("read length");
                    let n = u32::from_be_bytes(len) as usize;
                    rx.read_exact(&mut buf[..n]).expect("read frame");
                    bytes += n as u64;
                }
                bytes
            });
            let len = (frame.len() as u32).to_be_bytes();
            for _ in 0..iters {
                tx.write_all(&len).expect("write length");
                tx.write_all(frame).expect("write frame");
                tx.flush().expect("flush");
            }
            receiver.join().expect("receiver")
        });
        (start.elapsed(), bytes)
    }

    /// `iters` handshakes one after another, each a new TCP connection, the handshake
    /// (palisade: TLS and join) and a graceful close that waits for the peer's.
    fn handshakes(&mut self, stack: Stack, iters: u64) -> Duration {
        let (rt, setup) = (self.rt, self.setup);
        if stack == Stack::PalisadeTokio {
            let addr = self
                .pal_listener
                .get_or_insert_with(|| palisade_listener(rt, setup))
                .addr
                .clone();
            let endpoint = setup.pal_client_endpoint.clone();
            let (elapsed, (), ()) = time_tasks(
                rt,
                async move {
                    for _ in 0..iters {
                        let conn = palisade::tokio::connect_with(&endpoint, &addr)
                            .await
                            .expect("connect");
                        conn.close(CloseReason::default()).await;
                    }
                },
                async {},
            );
            elapsed
        } else {
            let addr = self
                .base_listener
                .get_or_insert_with(|| baseline_listener(rt, setup))
                .addr
                .clone();
            let connector = TlsConnector::from(Arc::clone(&setup.rustls_client));
            let (elapsed, (), ()) = time_tasks(
                rt,
                async move {
                    let mut buf = [0u8; 64];
                    for _ in 0..iters {
                        let s = TcpStream::connect(&addr).await.expect("connect");
                        s.set_nodelay(true).expect("nodelay");
                        let mut tls = connector.connect(server_name(), s).await.expect("TLS");
                        tls.shutdown().await.expect("shutdown");
                        while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                },
                async {},
            );
            elapsed
        }
    }
}

// ----- criterion groups -----

fn throughput_group(
    c: &mut Criterion,
    ctx: &mut Ctx<'_>,
    group_name: &'static str,
    stacks: [(Stack, &'static str); 2],
) {
    let mut group = c.benchmark_group(group_name);
    group.sampling_mode(SamplingMode::Flat);
    for (size, label) in SIZES {
        let frame = Bytes::from(vec![0xa7u8; size]);
        group.throughput(Throughput::Bytes(size as u64));
        for (stack, name) in stacks {
            group.bench_with_input(BenchmarkId::new(name, label), &frame, |b, frame| {
                b.iter_custom(|iters| {
                    let elapsed = ctx.transfer(stack, frame, iters);
                    record(group_name, name, Some(label), iters, elapsed);
                    elapsed
                });
            });
        }
    }
    group.finish();
}

fn handshake_group(c: &mut Criterion, ctx: &mut Ctx<'_>) {
    let mut group = c.benchmark_group(HANDSHAKE_GROUP);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    for (stack, name) in [
        (Stack::PalisadeTokio, PALISADE),
        (Stack::TokioRustls, TOKIO_BASELINE),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let elapsed = ctx.handshakes(stack, iters);
                record(HANDSHAKE_GROUP, name, None, iters, elapsed);
                elapsed
            });
        });
    }
    group.finish();
}

// ----- paired rounds -----

/// CPU time this process has used (all threads, finished ones included), from
/// `/proc/self/stat` (clock ticks, 10 ms); `None` off Linux.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Iterations per second of `run` over about `dur` (batches doubling from 1), and the
/// process's CPU time per iteration (both ends of the link are in this process).
fn rate_for(dur: Duration, mut run: impl FnMut(u64) -> Duration) -> (f64, Option<f64>) {
    let cpu_before = process_cpu();
    let (mut n, mut iters, mut spent) = (1u64, 0u64, Duration::ZERO);
    while spent < dur {
        let t = run(n);
        iters += n;
        spent += t;
        if t < dur / 8 {
            n *= 2;
        }
    }
    let cpu = cpu_before
        .zip(process_cpu())
        .map(|(a, b)| (b - a).as_secs_f64() / iters as f64);
    (iters as f64 / spent.as_secs_f64(), cpu)
}

/// One figure measured in alternating rounds: palisade, baseline, palisade, ... so both
/// see the same machine (it is shared); the ratio is the median of the rounds'.
#[derive(Debug, Clone)]
struct Paired {
    /// Median rates (iterations per second): palisade, baseline.
    palisade: f64,
    baseline: f64,
    /// Median, lowest and highest round ratio (palisade / baseline).
    ratio: f64,
    low: f64,
    high: f64,
    /// Median of the rounds' CPU time per iteration, palisade / baseline (lower is
    /// better; steadier than rates on a busy machine).
    cpu_ratio: Option<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn paired(rounds: usize, dur: Duration, mut run: impl FnMut(bool, u64) -> Duration) -> Paired {
    let (mut p, mut b, mut r, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        let ((pr, pc), (br, bc)) = if round % 2 == 0 {
            let pal = rate_for(dur, |n| run(true, n));
            (pal, rate_for(dur, |n| run(false, n)))
        } else {
            let base = rate_for(dur, |n| run(false, n));
            (rate_for(dur, |n| run(true, n)), base)
        };
        p.push(pr);
        b.push(br);
        r.push(pr / br);
        if let (Some(pc), Some(bc)) = (pc, bc) {
            if bc > 0.0 {
                c.push(pc / bc);
            }
        }
    }
    let (low, high) = r
        .iter()
        .fold((f64::INFINITY, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
    Paired {
        palisade: median(&mut p),
        baseline: median(&mut b),
        ratio: median(&mut r),
        low,
        high,
        cpu_ratio: (c.len() == rounds).then(|| median(&mut c)),
    }
}

/// Paired rounds for every figure whose two benchmarks criterion ran (a filter skips
/// the rest).
/// Rounds per figure and the length of one: 5 of ~300 ms, 3 of ~150 ms in quick mode;
/// more rounds narrow the median on a noisy machine (`PALISADE_BENCH_ROUNDS=15`).
fn round_settings() -> (usize, Duration) {
    let (rounds, dur) = if quick_env() {
        (3, Duration::from_millis(150))
    } else {
        (5, Duration::from_millis(300))
    };
    let rounds = std::env::var("PALISADE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(rounds);
    (rounds, dur)
}

fn paired_rounds(ctx: &mut Ctx<'_>) -> Vec<((&'static str, Option<&'static str>), Paired)> {
    let ran = |group: &str, func: &str, param: Option<&str>| {
        TALLIES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|t| t.group == group && t.func == func && t.param == param)
    };
    let (rounds, dur) = round_settings();
    let mut out = Vec::new();
    for (group, pal, base, base_name) in [
        (
            TOKIO_GROUP,
            Stack::PalisadeTokio,
            Stack::TokioRustls,
            TOKIO_BASELINE,
        ),
        (
            BLOCKING_GROUP,
            Stack::PalisadeBlocking,
            Stack::RustlsStream,
            BLOCKING_BASELINE,
        ),
    ] {
        for (size, label) in SIZES {
            if !ran(group, PALISADE, Some(label)) || !ran(group, base_name, Some(label)) {
                continue;
            }
            let frame = Bytes::from(vec![0x3cu8; size]);
            let result = paired(rounds, dur, |is_pal, n| {
                ctx.transfer(if is_pal { pal } else { base }, &frame, n)
            });
            out.push(((group, Some(label)), result));
        }
    }
    if ran(HANDSHAKE_GROUP, PALISADE, None) && ran(HANDSHAKE_GROUP, TOKIO_BASELINE, None) {
        let handshakes = |ctx: &mut Ctx<'_>| {
            paired(rounds, dur * 2, |is_pal, n| {
                let stack = if is_pal {
                    Stack::PalisadeTokio
                } else {
                    Stack::TokioRustls
                };
                ctx.handshakes(stack, n)
            })
        };
        out.push(((HANDSHAKE_GROUP, None), handshakes(ctx)));
        // The same with every peer chain verified in full, as if each handshake brought
        // a certificate palisade had not seen (what its chain cache buys).
        palisade::tls::remember_verified_chains(false);
        let result = handshakes(ctx);
        palisade::tls::remember_verified_chains(true);
        out.push(((HANDSHAKE_GROUP, Some(CHAIN_CACHE_OFF)), result));
    }
    out
}

/// The paired handshake row with palisade's chain cache off.
const CHAIN_CACHE_OFF: &str = "chain cache off";

// ----- summary -----

/// The target directory this binary was built in (`target/release/deps/loopback-<hash>`),
/// where criterion finds it too.
fn exe_target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Iterations per second by criterion's estimate (slope, else mean) if this process
/// wrote it, else by this process's own tally (every call, warm-up included); and which.
fn criterion_rate(
    started: SystemTime,
    group: &str,
    func: &str,
    param: Option<&str>,
) -> Option<(f64, bool)> {
    let mut path = common::criterion_dir(exe_target_dir).join(group).join(func);
    if let Some(p) = param {
        path = path.join(p);
    }
    let path = path.join("new").join("estimates.json");
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|m| m >= started);
    if fresh {
        if let Ok(json) = std::fs::read_to_string(&path) {
            if let Some(ns) = estimate_ns(&json) {
                return Some((1e9 / ns, true));
            }
        }
    }
    let t = TALLIES.lock().unwrap_or_else(|p| p.into_inner());
    let e = t
        .iter()
        .find(|e| e.group == group && e.func == func && e.param == param)?;
    (e.iters > 0).then(|| (e.iters as f64 / e.elapsed.as_secs_f64(), false))
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0} ")
    }
}

/// One line of the tables.
struct Figure {
    group: &'static str,
    param: Option<&'static str>,
    /// Frame payload bytes; `None` for handshakes.
    size: Option<usize>,
    name: String,
    baseline: &'static str,
    target: Option<f64>,
}

fn figures() -> Vec<Figure> {
    let mut v = Vec::new();
    for (group, adapter, baseline) in [
        (TOKIO_GROUP, "tokio", TOKIO_BASELINE),
        (BLOCKING_GROUP, "blocking", BLOCKING_BASELINE),
    ] {
        for (size, label) in SIZES {
            let target = match (adapter, size) {
                ("tokio", 64) => Some(20.0),
                ("tokio", s) if s >= 16 * 1024 => Some(0.95),
                _ => None,
            };
            v.push(Figure {
                group,
                param: Some(label),
                size: Some(size),
                name: format!("{adapter} {label} frames"),
                baseline,
                target,
            });
        }
    }
    v.push(Figure {
        group: HANDSHAKE_GROUP,
        param: None,
        size: None,
        name: "tokio handshakes".into(),
        baseline: TOKIO_BASELINE,
        target: Some(1.05),
    });
    v.push(Figure {
        group: HANDSHAKE_GROUP,
        param: Some(CHAIN_CACHE_OFF),
        size: None,
        name: "tokio handshakes, every peer chain verified in full (chain cache off)".into(),
        baseline: TOKIO_BASELINE,
        target: None,
    });
    v
}

fn cell(rate: f64, size: Option<usize>) -> String {
    match size {
        Some(s) => format!(
            "{}frames/s, {:.0} MiB/s",
            fmt_rate(rate),
            rate * s as f64 / (1024.0 * 1024.0)
        ),
        None => format!("{rate:.0} /s"),
    }
}

fn verdict(target: Option<f64>, ratio: f64) -> String {
    target.map_or("-".to_owned(), |t| {
        format!("≥ {t} {}", if ratio >= t { "met" } else { "MISSED" })
    })
}

fn print_summary(
    started: SystemTime,
    wall: Duration,
    paired: &[((&'static str, Option<&'static str>), Paired)],
) {
    let mut out = vec![format!(
        "## loopback summary ({} mode{}, {:.0} s)",
        if quick_env() { "quick" } else { "full" },
        if has_arg("--quick") {
            ", criterion --quick"
        } else {
            ""
        },
        wall.as_secs_f64()
    )];
    let figures = figures();
    if !paired.is_empty() {
        out.push(String::new());
        out.push(format!(
            "Paired rounds: palisade and baseline alternate, {} rounds each, medians \
             (the ratio's lowest–highest round in brackets). Targets are judged here.",
            round_settings().0
        ));
        out.push(String::new());
        out.push(
            "| figure | palisade | baseline | palisade / baseline | target | CPU per op, palisade / baseline |"
                .into(),
        );
        out.push("| --- | --- | --- | --- | --- | --- |".into());
        for f in &figures {
            let Some((_, p)) = paired
                .iter()
                .find(|((g, param), _)| *g == f.group && *param == f.param)
            else {
                continue;
            };
            out.push(format!(
                "| {} vs {} | {} | {} | {:.2}× ({:.2}–{:.2}) | {} | {} |",
                f.name,
                f.baseline,
                cell(p.palisade, f.size),
                cell(p.baseline, f.size),
                p.ratio,
                p.low,
                p.high,
                verdict(f.target, p.ratio),
                p.cpu_ratio.map_or("-".into(), |c| format!("{c:.3}")),
            ));
        }
    }
    let mut rows = Vec::new();
    let mut own = false;
    for f in &figures {
        let (Some((p, pc)), Some((b, bc))) = (
            criterion_rate(started, f.group, PALISADE, f.param),
            criterion_rate(started, f.group, f.baseline, f.param),
        ) else {
            continue;
        };
        own |= !(pc && bc);
        rows.push(format!(
            "| {} vs {} | {} | {} | {:.2}× | {} |",
            f.name,
            f.baseline,
            cell(p, f.size),
            cell(b, f.size),
            p / b,
            verdict(f.target, p / b)
        ));
    }
    if !rows.is_empty() {
        out.push(String::new());
        out.push(format!(
            "Criterion's estimates (each benchmark on its own, seconds apart){}:",
            if own {
                "; where its estimates.json was not found, this run's own tally"
            } else {
                ""
            }
        ));
        out.push(String::new());
        out.push("| figure | palisade | baseline | palisade / baseline | target |".into());
        out.push("| --- | --- | --- | --- | --- |".into());
        out.extend(rows);
    }
    if out.len() > 1 {
        println!("\n{}\n", out.join("\n"));
    }
}

fn main() {
    let started = SystemTime::now();
    let wall = Instant::now();
    let base = if quick_env() {
        Criterion::default()
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
    } else {
        Criterion::default()
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(5))
            .sample_size(20)
    };
    let mut c = base.configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let setup = Setup::new();
    let mut ctx = Ctx::new(&rt, &setup);
    throughput_group(
        &mut c,
        &mut ctx,
        TOKIO_GROUP,
        [
            (Stack::PalisadeTokio, PALISADE),
            (Stack::TokioRustls, TOKIO_BASELINE),
        ],
    );
    throughput_group(
        &mut c,
        &mut ctx,
        BLOCKING_GROUP,
        [
            (Stack::PalisadeBlocking, PALISADE),
            (Stack::RustlsStream, BLOCKING_BASELINE),
        ],
    );
    handshake_group(&mut c, &mut ctx);
    c.final_summary();
    // Only a real benchmark run (not criterion's test mode, `--list` or
    // `--profile-time`) runs the paired rounds and prints the summary.
    if benchmarking() {
        let paired = paired_rounds(&mut ctx);
        print_summary(started, wall.elapsed(), &paired);
    }
}
