//! A receiver that stops reading stalls its sender: memory on the way (the sender's
//! buffers, the sockets, the receiver's buffers) stays bounded by the configured limits
//! plus what the kernel buffers, far below what the sender tries to send. Once the
//! receiver reads again everything arrives, in order, and the sender finishes.
//!
//! Every adapter, with itself (sender = initiator, receiver = acceptor), plaintext and
//! TLS, over 127.0.0.1; and the same with the batch calls (`send_many` of a few frames
//! at a time, `recv_many`), which must neither buffer more nor deadlock.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::{CloseReason, Config};
use palisade_testkit::certs::TestCa;
use support::Kind;

/// Payload of every frame.
const FRAME: usize = 64 * 1024;

/// What the sender tries to send: 200 MiB.
const TOTAL_FRAMES: usize = 200 * 1024 * 1024 / FRAME;

/// The sender's `send_buffer_limit` and the receiver's `recv_buffer_limit`.
const LIMIT: usize = 64 * 1024;

/// Most payload bytes that may be accepted by `send` while the receiver reads nothing:
/// the sender's core buffer (LIMIT, or one frame: a frame is always accepted into an
/// empty buffer), the batch its driver took from the core (one buffer's worth), the
/// receiver's window (LIMIT plus the frame in progress) and the input its driver could
/// not hand over (one 64 KiB read), plus the two kernel buffers: on Linux the send
/// buffer autotunes up to `tcp_wmem` max (4 MiB by default) and the receive buffer of
/// a socket nobody reads stays near `tcp_rmem` default (128 KiB) but may already have
/// grown a little. 16 MiB leaves room for that and still is 1/12 of what is sent: a
/// sender that buffers without bound is far past it.
const BOUND: usize = 16 * 1024 * 1024;

/// Frames per `send_many` call (at most) and per `recv_many` call, in the batch tests.
const BATCH: usize = 16;
const RECV_BATCH: usize = 8;

/// How long `sent` must stay unchanged to call the sender blocked.
const STALLED_FOR: Duration = Duration::from_secs(1);

/// How long the sender may take to fill the buffers and block.
const FILL_LIMIT: Duration = Duration::from_secs(10);

/// How long the whole transfer (200 MiB) may take once the receiver reads: a hang guard,
/// not a speed check, so it leaves room for a loaded two-core machine running other
/// test binaries (20 s was seen to run out there with the transfer still progressing).
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Frame `i`: its index in the first 8 bytes, then a byte derived from it.
fn frame(i: usize) -> Bytes {
    let mut f = vec![fill(i); FRAME];
    f[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(f)
}

fn fill(i: usize) -> u8 {
    (i as u8) ^ 0xa5
}

/// Checks that frames arrive complete and in order.
#[derive(Debug, Default)]
struct Checker {
    next: usize,
}

impl Checker {
    fn frame(&mut self, f: &[u8]) -> Result<(), String> {
        let i = self.next;
        if f.len() != FRAME {
            return Err(format!("frame {i}: {} bytes, want {FRAME}", f.len()));
        }
        let index = u64::from_le_bytes(f[..8].try_into().unwrap_or_default());
        if index != i as u64 {
            return Err(format!("frame {i} arrived as frame {index}"));
        }
        if f[8] != fill(i) || f[FRAME / 2] != fill(i) || f[FRAME - 1] != fill(i) {
            return Err(format!("frame {i}: corrupted payload"));
        }
        self.next += 1;
        Ok(())
    }
}

/// What the test and the two sides share.
#[derive(Debug, Default)]
struct State {
    /// Frames `send` has accepted.
    sent: AtomicUsize,
    /// The sender left its loop (all sent, or told to stop).
    sender_done: AtomicBool,
    /// The receiver accepted the link.
    accepted: AtomicBool,
    /// The receiver may start reading.
    go: AtomicBool,
    /// The sender must stop (the test already failed).
    stop: AtomicBool,
}

fn config(name: &str, ca: Option<&TestCa>) -> Config {
    let mut c = Config::new("backpressure", name);
    c.send_buffer_limit = LIMIT;
    c.recv_buffer_limit = LIMIT;
    if let Some(ca) = ca {
        // Named by its node id and by the address it is dialed at.
        c = c.with_tls(ca.tls(&ca.node_at(name, "127.0.0.1")));
    }
    c
}

/// The acceptor: accepts, reads nothing until `go`, then checks every frame until the
/// sender closes. Returns the frames received.
macro_rules! async_receiver {
    ($block_on:expr, $adapter:ident, $sleep:expr, $config:expr, $addr_tx:expr, $state:expr, $batch:expr) => {
        $block_on(async move {
            let listener = palisade::$adapter::Listener::bind("127.0.0.1:0", $config)
                .await
                .map_err(|e| format!("bind: {e}"))?;
            $addr_tx
                .send(listener.local_addr())
                .map_err(|e| e.to_string())?;
            let (mut conn, _) = listener.accept().await;
            $state.accepted.store(true, SeqCst);
            while !$state.go.load(SeqCst) {
                let _ = $sleep(Duration::from_millis(5)).await;
            }
            let mut check = Checker::default();
            if $batch {
                let mut got = Vec::new();
                while conn
                    .recv_many(&mut got, RECV_BATCH)
                    .await
                    .map_err(|e| format!("recv_many: {e}"))?
                    > 0
                {
                    for f in got.drain(..) {
                        check.frame(&f)?;
                    }
                }
            } else {
                while let Some(f) = conn.recv().await.map_err(|e| format!("recv: {e}"))? {
                    check.frame(&f)?;
                }
            }
            Ok::<_, String>(check.next)
        })
    };
}

/// The initiator: sends frames as fast as `send` takes them, counting, then closes.
macro_rules! async_sender {
    ($block_on:expr, $adapter:ident, $config:expr, $addr:expr, $state:expr, $batch:expr) => {
        $block_on(async move {
            let mut conn = palisade::$adapter::connect(&$addr, $config)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut i = 0;
            let mut chunk = Vec::new();
            while i < TOTAL_FRAMES && !$state.stop.load(SeqCst) {
                if $batch {
                    if chunk.is_empty() {
                        chunk.extend((i..(i + BATCH).min(TOTAL_FRAMES)).map(frame));
                    }
                    let n = conn
                        .send_many(&chunk)
                        .await
                        .map_err(|e| format!("send_many {i}: {e}"))?;
                    chunk.drain(..n);
                    i += n;
                } else {
                    conn.send(frame(i))
                        .await
                        .map_err(|e| format!("send {i}: {e}"))?;
                    i += 1;
                }
                $state.sent.store(i, SeqCst);
            }
            $state.sender_done.store(true, SeqCst);
            conn.close(CloseReason::default()).await;
            Ok::<_, String>($state.sent.load(SeqCst))
        })
    };
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn receiver(
    kind: Kind,
    config: Config,
    addr_tx: mpsc::Sender<SocketAddr>,
    state: Arc<State>,
    batch: bool,
) -> Result<usize, String> {
    match kind {
        Kind::Tokio => {
            let rt = tokio_runtime();
            async_receiver!(
                |f| rt.block_on(f),
                tokio,
                tokio::time::sleep,
                config,
                addr_tx,
                state,
                batch
            )
        }
        Kind::AsyncStd => async_receiver!(
            async_std::task::block_on,
            async_std,
            async_std::task::sleep,
            config,
            addr_tx,
            state,
            batch
        ),
        Kind::Smol => async_receiver!(
            smol::block_on,
            smol,
            smol::Timer::after,
            config,
            addr_tx,
            state,
            batch
        ),
        Kind::Blocking => {
            let listener = palisade::blocking::Listener::bind("127.0.0.1:0", config)
                .map_err(|e| format!("bind: {e}"))?;
            addr_tx
                .send(listener.local_addr())
                .map_err(|e| e.to_string())?;
            let (conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            state.accepted.store(true, SeqCst);
            while !state.go.load(SeqCst) {
                thread::sleep(Duration::from_millis(5));
            }
            let mut check = Checker::default();
            if batch {
                let mut got = Vec::new();
                while conn
                    .recv_many(&mut got, RECV_BATCH)
                    .map_err(|e| format!("recv_many: {e}"))?
                    > 0
                {
                    for f in got.drain(..) {
                        check.frame(&f)?;
                    }
                }
            } else {
                while let Some(f) = conn.recv().map_err(|e| format!("recv: {e}"))? {
                    check.frame(&f)?;
                }
            }
            Ok(check.next)
        }
    }
}

fn sender(
    kind: Kind,
    config: Config,
    addr: String,
    state: Arc<State>,
    batch: bool,
) -> Result<usize, String> {
    match kind {
        Kind::Tokio => {
            let rt = tokio_runtime();
            async_sender!(|f| rt.block_on(f), tokio, config, addr, state, batch)
        }
        Kind::AsyncStd => {
            async_sender!(
                async_std::task::block_on,
                async_std,
                config,
                addr,
                state,
                batch
            )
        }
        Kind::Smol => async_sender!(smol::block_on, smol, config, addr, state, batch),
        Kind::Blocking => {
            let conn =
                palisade::blocking::connect(&addr, config).map_err(|e| format!("connect: {e}"))?;
            let mut i = 0;
            let mut chunk = Vec::new();
            while i < TOTAL_FRAMES && !state.stop.load(SeqCst) {
                if batch {
                    if chunk.is_empty() {
                        chunk.extend((i..(i + BATCH).min(TOTAL_FRAMES)).map(frame));
                    }
                    let n = conn
                        .send_many(&chunk)
                        .map_err(|e| format!("send_many {i}: {e}"))?;
                    chunk.drain(..n);
                    i += n;
                } else {
                    conn.send(frame(i)).map_err(|e| format!("send {i}: {e}"))?;
                    i += 1;
                }
                state.sent.store(i, SeqCst);
            }
            state.sender_done.store(true, SeqCst);
            conn.close(CloseReason::default());
            Ok(state.sent.load(SeqCst))
        }
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Waits for `rx` until `deadline`.
fn wait_for<T>(rx: &mpsc::Receiver<T>, deadline: Instant) -> Option<T> {
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

fn stalls_then_drains(kind: Kind, tls: bool) {
    stalls_then_drains_with(kind, tls, false);
}

fn stalls_then_drains_with(kind: Kind, tls: bool, batch: bool) {
    let started = Instant::now();
    let what = format!("{kind:?}, tls {tls}, batch {batch}");
    let ca = TestCa::new("backpressure CA");
    let ca = tls.then_some(&ca);
    let state = Arc::new(State::default());

    let (addr_tx, addr_rx) = mpsc::channel();
    let (recv_tx, recv_rx) = mpsc::channel();
    let (config_b, st) = (config("node-b", ca), Arc::clone(&state));
    thread::spawn(move || {
        let _ = recv_tx.send(receiver(kind, config_b, addr_tx, st, batch));
    });
    let addr = addr_rx
        .recv_timeout(FILL_LIMIT)
        .unwrap_or_else(|_| panic!("{what}: the receiver did not bind"));
    let (send_tx, send_rx) = mpsc::channel();
    let (config_a, st) = (config("node-a", ca), Arc::clone(&state));
    let target = format!("127.0.0.1:{}", addr.port());
    thread::spawn(move || {
        let _ = send_tx.send(sender(kind, config_a, target, st, batch));
    });

    // Phase 1: the receiver reads nothing. The sender must block, and before that have
    // had no more than BOUND bytes accepted.
    let fail = |msg: String| -> ! {
        // Unblock both sides so their threads end, then fail.
        state.stop.store(true, SeqCst);
        state.go.store(true, SeqCst);
        panic!("{what}: {msg}");
    };
    let fill_deadline = Instant::now() + FILL_LIMIT;
    let mut last = (0, Instant::now());
    let stalled_at = loop {
        thread::sleep(Duration::from_millis(20));
        let sent = state.sent.load(SeqCst);
        if sent * FRAME > BOUND {
            fail(format!(
                "the receiver reads nothing, yet send() accepted {sent} frames ({:.1} MiB, bound {:.0} MiB): \
                 the sender buffers without bound",
                mib(sent * FRAME),
                mib(BOUND)
            ));
        }
        if state.sender_done.load(SeqCst) {
            fail(format!(
                "the sender finished ({sent} frames) although the receiver reads nothing"
            ));
        }
        if let Ok(result) = send_rx.try_recv() {
            fail(format!("the sender ended early: {result:?}"));
        }
        if sent != last.0 || !state.accepted.load(SeqCst) {
            last = (sent, Instant::now());
        } else if sent > 0 && last.1.elapsed() >= STALLED_FOR {
            break sent;
        }
        if Instant::now() > fill_deadline {
            fail(format!(
                "the sender neither blocked nor passed the bound within {FILL_LIMIT:?} ({sent} frames)"
            ));
        }
    };
    let in_flight = stalled_at * FRAME;
    eprintln!(
        "{what}: blocked after {stalled_at} frames = {:.2} MiB accepted by send() while the receiver reads nothing ({:?})",
        mib(in_flight),
        started.elapsed()
    );
    assert!(in_flight <= BOUND, "{what}");
    // More than the configured buffers alone: the kernel's buffers hold some too. This
    // shows the sender did fill the pipe before blocking.
    assert!(
        in_flight > 2 * LIMIT,
        "{what}: blocked after {stalled_at} frames"
    );
    assert!(!state.sender_done.load(SeqCst), "{what}");

    // Phase 2: the receiver reads. Everything arrives in order; the sender finishes.
    state.go.store(true, SeqCst);
    let drain_deadline = Instant::now() + DRAIN_LIMIT;
    let received = match wait_for(&recv_rx, drain_deadline) {
        Some(Ok(n)) => n,
        Some(Err(e)) => fail(format!("the receiver failed: {e}")),
        None => fail(format!(
            "the receiver did not finish within {DRAIN_LIMIT:?} ({} frames sent)",
            state.sent.load(SeqCst)
        )),
    };
    let sent = match wait_for(&send_rx, drain_deadline) {
        Some(Ok(n)) => n,
        Some(Err(e)) => fail(format!("the sender failed: {e}")),
        None => fail(format!("the sender did not finish within {DRAIN_LIMIT:?}")),
    };
    assert_eq!(sent, TOTAL_FRAMES, "{what}: frames sent");
    assert_eq!(received, TOTAL_FRAMES, "{what}: frames received");
    eprintln!(
        "{what}: {TOTAL_FRAMES} frames ({:.0} MiB) delivered in order, {:?} in all",
        mib(TOTAL_FRAMES * FRAME),
        started.elapsed()
    );
}

#[test]
fn tokio_sender_blocks_while_the_receiver_does_not_read() {
    stalls_then_drains(Kind::Tokio, false);
}

#[test]
fn tokio_sender_blocks_while_the_receiver_does_not_read_tls() {
    stalls_then_drains(Kind::Tokio, true);
}

#[test]
fn async_std_sender_blocks_while_the_receiver_does_not_read() {
    stalls_then_drains(Kind::AsyncStd, false);
}

#[test]
fn smol_sender_blocks_while_the_receiver_does_not_read() {
    stalls_then_drains(Kind::Smol, false);
}

#[test]
fn blocking_sender_blocks_while_the_receiver_does_not_read() {
    stalls_then_drains(Kind::Blocking, false);
}

#[test]
fn blocking_sender_blocks_while_the_receiver_does_not_read_tls() {
    stalls_then_drains(Kind::Blocking, true);
}

/// The same with `send_many` and `recv_many`, one test per adapter.
macro_rules! batch_tests {
    ($($name:ident: $kind:ident, tls $tls:expr;)*) => {
        $(
            #[test]
            fn $name() {
                stalls_then_drains_with(Kind::$kind, $tls, true);
            }
        )*
    };
}

batch_tests! {
    tokio_batch_sender_blocks_while_the_receiver_does_not_read: Tokio, tls false;
    async_std_batch_sender_blocks_while_the_receiver_does_not_read: AsyncStd, tls false;
    smol_batch_sender_blocks_while_the_receiver_does_not_read: Smol, tls false;
    blocking_batch_sender_blocks_while_the_receiver_does_not_read_tls: Blocking, tls true;
}
