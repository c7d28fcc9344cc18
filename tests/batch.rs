//! The batch calls, `send_many` and `recv_many`, in every adapter with itself over
//! 127.0.0.1 (plaintext), with send and receive buffers of 4 KiB so batches keep running
//! into a full send buffer and a full receive window:
//!
//! - frames sent with `send_many` (and `send` between the batches) arrive complete and
//!   in order, taken with `recv_many` of varying `max` (each call within it) and `recv`
//!   mixed, both ways;
//! - once the peer closes gracefully `recv_many` gives `Ok(0)` (again and again), and
//!   after an error end (the link cut under both nodes, no CLOSE) it gives `Err`;
//! - the accepting node's metrics count every frame and byte of every batch.
//!
//! Every test is bounded by [`LIMIT`]: a lost wake-up (a receive window not reopened
//! after a batch was taken, say) hangs a side, which fails the test.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::{CloseReason, Config, Metrics, MetricsSnapshot};
use palisade_testkit::bounded;

/// Bounds every test.
const LIMIT: Duration = Duration::from_secs(60);

/// The send buffer and receive window of both nodes: a few frames each.
const BUFFER: usize = 4 * 1024;

/// Frames the initiator sends the acceptor, and the acceptor sends back.
const TO_ACCEPTOR: usize = 1500;
const TO_INITIATOR: usize = 700;

/// Frames per `send_many` call (at most; a call may take fewer).
const CHUNK: usize = 40;

/// The `max` of successive `recv_many` calls (0 counts as 1); a `recv` follows each
/// round.
const MAXES: [usize; 6] = [1, 3, 0, 64, 7, 1000];

/// Frame `i`: its index in the first 8 bytes, then a byte derived from it; sizes vary,
/// and every 97th frame is larger than the receive window.
fn frame(i: usize) -> Bytes {
    let len = if i % 97 == 0 {
        5 * BUFFER
    } else {
        8 + (i * 37) % 1500
    };
    let mut f = vec![fill(i); len];
    f[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(f)
}

fn fill(i: usize) -> u8 {
    (i as u8) ^ 0x5a
}

fn bytes_of(frames: usize) -> u64 {
    (0..frames).map(|i| frame(i).len() as u64).sum()
}

/// Checks that `got` are frames `0..got.len()`, in order and complete.
fn check(what: &str, got: &[Bytes]) -> Result<(), String> {
    for (i, f) in got.iter().enumerate() {
        if *f != frame(i) {
            let index = f
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
            return Err(format!(
                "{what}: frame {i} wrong ({} bytes, index {index:?})",
                f.len()
            ));
        }
    }
    Ok(())
}

/// How the link ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The initiator closes gracefully.
    Graceful,
    /// The link is cut under both nodes (no CLOSE): both ends see an error.
    Cut,
}

fn config(name: &str) -> Config {
    let mut c = Config::new("batch", name);
    c.send_buffer_limit = BUFFER;
    c.recv_buffer_limit = BUFFER;
    c
}

/// Waits (bounded) until `metrics` shows no open link, and returns the snapshot.
fn settled(metrics: &Metrics) -> MetricsSnapshot {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let now = metrics.snapshot();
        if now.links_open == 0 || Instant::now() > until {
            return now;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The scripts of both sides, written once for the async `Connection` (one type for
/// tokio, async-std and smol: `$($aw)*` is `.await`) and the blocking one.
macro_rules! sides {
    ($module:ident, $conn:ty, [$($async:tt)?], [$($aw:tt)*]) => {
        mod $module {
            use super::*;

            /// Sends frames `0..n` with `send_many` (`send` for every fifth batch's first).
            pub $($async)? fn send_all(conn: &mut $conn, n: usize) -> Result<(), String> {
                let frames: Vec<Bytes> = (0..n).map(frame).collect();
                let (mut next, mut batch) = (0, 0);
                while next < n {
                    if batch % 5 == 4 {
                        conn.send(frames[next].clone())$($aw)*
                            .map_err(|e| format!("send {next}: {e}"))?;
                        next += 1;
                    }
                    let chunk = &frames[next..(next + CHUNK).min(n)];
                    let sent = conn
                        .send_many(chunk)$($aw)*
                        .map_err(|e| format!("send_many at {next}: {e}"))?;
                    if chunk.is_empty() != (sent == 0) || sent > chunk.len() {
                        return Err(format!("send_many of {} took {sent}", chunk.len()));
                    }
                    next += sent;
                    batch += 1;
                }
                if !matches!(conn.send_many(&[])$($aw)*, Ok(0)) {
                    return Err("send_many of nothing".into());
                }
                Ok(())
            }

            /// Receives `n` frames with `recv_many` (the maxes in turn) and `recv` mixed.
            pub $($async)? fn recv_all(conn: &mut $conn, n: usize) -> Result<Vec<Bytes>, String> {
                let mut got = vec![Bytes::from_static(b"already here")];
                let mut round = 0;
                while got.len() - 1 < n {
                    let max = MAXES[round % MAXES.len()];
                    let before = got.len();
                    let taken = conn
                        .recv_many(&mut got, max)$($aw)*
                        .map_err(|e| format!("recv_many after {}: {e}", before - 1))?;
                    if taken == 0 || taken > max.max(1) || got.len() != before + taken {
                        return Err(format!(
                            "recv_many (max {max}) took {taken}, vec {before} -> {}",
                            got.len()
                        ));
                    }
                    if round % MAXES.len() == MAXES.len() - 1 && got.len() - 1 < n {
                        match conn.recv()$($aw)* {
                            Ok(Some(f)) => got.push(f),
                            other => return Err(format!("recv: {other:?}")),
                        }
                    }
                    round += 1;
                }
                if got[0] != "already here" {
                    return Err("recv_many replaced what `out` held".into());
                }
                got.remove(0);
                check("received", &got)?;
                Ok(got)
            }

            /// After the end: `recv_many` must say how it ended, every time.
            pub $($async)? fn ended(conn: &mut $conn, end: End) -> Result<(), String> {
                let mut out = Vec::new();
                for _ in 0..2 {
                    match (end, conn.recv_many(&mut out, 8)$($aw)*) {
                        (End::Graceful, Ok(0)) | (End::Cut, Err(_)) => {}
                        (_, other) => return Err(format!("{end:?}: recv_many gave {other:?}")),
                    }
                }
                if !out.is_empty() {
                    return Err(format!("{} frames after the end", out.len()));
                }
                Ok(())
            }

            pub $($async)? fn acceptor(
                mut conn: $conn,
                end: End,
                received: mpsc::Sender<()>,
            ) -> Result<(), String> {
                recv_all(&mut conn, TO_ACCEPTOR)$($aw)*?;
                if end == End::Graceful {
                    send_all(&mut conn, TO_INITIATOR)$($aw)*?;
                }
                let _ = received.send(());
                ended(&mut conn, end)$($aw)*
            }

            pub $($async)? fn initiator(mut conn: $conn, end: End) -> Result<(), String> {
                send_all(&mut conn, TO_ACCEPTOR)$($aw)*?;
                match end {
                    End::Graceful => {
                        recv_all(&mut conn, TO_INITIATOR)$($aw)*?;
                        conn.close(CloseReason::default())$($aw)*;
                        Ok(())
                    }
                    End::Cut => ended(&mut conn, end)$($aw)*,
                }
            }
        }
    };
}

sides!(with_async, palisade_driver::Connection, [async], [.await]);
sides!(with_blocking, palisade::blocking::Connection, [], []);

/// Which adapter.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tokio,
    AsyncStd,
    Smol,
    Blocking,
}

/// The accepting side: binds, tells `addr_tx`, accepts one link and runs the acceptor
/// on it; returns its listener's metrics once the link is over.
macro_rules! async_accept {
    ($block_on:expr, $adapter:ident, $end:expr, $addr_tx:expr, $received:expr) => {
        $block_on(async move {
            let listener = palisade::$adapter::Listener::bind("127.0.0.1:0", config("node-b"))
                .await
                .map_err(|e| format!("bind: {e}"))?;
            let _ = $addr_tx.send(listener.local_addr());
            let (conn, _) = listener.accept().await;
            with_async::acceptor(conn, $end, $received).await?;
            Ok::<_, String>(listener.metrics().clone())
        })
    };
}

macro_rules! async_initiate {
    ($block_on:expr, $adapter:ident, $end:expr, $addr:expr) => {
        $block_on(async move {
            let conn = palisade::$adapter::connect(&$addr, config("node-a"))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            with_async::initiator(conn, $end).await
        })
    };
}

fn accept(
    kind: Kind,
    end: End,
    addr_tx: mpsc::Sender<SocketAddr>,
    received: mpsc::Sender<()>,
) -> Result<Metrics, String> {
    match kind {
        Kind::Tokio => {
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            async_accept!(|f| rt.block_on(f), tokio, end, addr_tx, received)
        }
        Kind::AsyncStd => {
            async_accept!(async_std::task::block_on, async_std, end, addr_tx, received)
        }
        Kind::Smol => async_accept!(smol::block_on, smol, end, addr_tx, received),
        Kind::Blocking => {
            let listener = palisade::blocking::Listener::bind("127.0.0.1:0", config("node-b"))
                .map_err(|e| format!("bind: {e}"))?;
            let _ = addr_tx.send(listener.local_addr());
            let (conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            with_blocking::acceptor(conn, end, received)?;
            Ok(listener.metrics().clone())
        }
    }
}

fn initiate(kind: Kind, end: End, addr: String) -> Result<(), String> {
    match kind {
        Kind::Tokio => {
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            async_initiate!(|f| rt.block_on(f), tokio, end, addr)
        }
        Kind::AsyncStd => async_initiate!(async_std::task::block_on, async_std, end, addr),
        Kind::Smol => async_initiate!(smol::block_on, smol, end, addr),
        Kind::Blocking => {
            let conn = palisade::blocking::connect(&addr, config("node-a"))
                .map_err(|e| format!("connect: {e}"))?;
            with_blocking::initiator(conn, end)
        }
    }
}

/// A TCP relay in front of `target` for one link, which [`Relay::cut`] shuts under both
/// nodes at once (each sees its socket end with no CLOSE).
struct Relay {
    addr: SocketAddr,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::clone(&sockets);
        thread::spawn(move || {
            let Ok((a, _)) = listener.accept() else {
                return;
            };
            let Ok(b) = TcpStream::connect(target) else {
                return;
            };
            let (Ok(a2), Ok(b2), Ok(a3), Ok(b3)) =
                (a.try_clone(), b.try_clone(), a.try_clone(), b.try_clone())
            else {
                return;
            };
            held.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend([a3, b3]);
            thread::spawn(move || pipe(a, b2));
            thread::spawn(move || pipe(b, a2));
        });
        Self { addr, sockets }
    }

    fn cut(&self) {
        for s in self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn run(kind: Kind, end: End) {
    let what = format!("{kind:?}, {end:?}");
    bounded(&what.clone(), LIMIT, move || {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (received_tx, received_rx) = mpsc::channel();
        let acceptor = thread::spawn(move || accept(kind, end, addr_tx, received_tx));
        let addr = addr_rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("{what}: the acceptor did not bind"));
        let relay = Relay::start(addr);
        let target = relay.addr.to_string();
        let initiator = thread::spawn(move || initiate(kind, end, target));
        if end == End::Cut {
            // Everything sent has arrived: cut the link under both nodes.
            received_rx
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("{what}: the acceptor did not receive it all"));
            relay.cut();
        }
        let sent = initiator.join().expect("initiator thread");
        let metrics = acceptor.join().expect("acceptor thread");
        if let Err(e) = &sent {
            panic!("{what}: initiator: {e}");
        }
        let metrics = metrics.unwrap_or_else(|e| panic!("{what}: acceptor: {e}"));
        // The accepting node counted every frame and byte of every batch.
        let m = settled(&metrics);
        let back = if end == End::Graceful {
            TO_INITIATOR
        } else {
            0
        };
        assert_eq!(
            (m.frames_received, m.bytes_received),
            (TO_ACCEPTOR as u64, bytes_of(TO_ACCEPTOR)),
            "{what}: received\n{m}"
        );
        assert_eq!(
            (m.frames_sent, m.bytes_sent),
            (back as u64, bytes_of(back)),
            "{what}: sent\n{m}"
        );
    });
}

/// One test per adapter and end.
macro_rules! tests {
    ($($name:ident: $kind:ident, $end:ident;)*) => {
        $(
            #[test]
            fn $name() {
                run(Kind::$kind, End::$end);
            }
        )*
    };
}

tests! {
    tokio_batches_arrive_in_order_and_end_gracefully: Tokio, Graceful;
    tokio_recv_many_reports_an_error_end: Tokio, Cut;
    async_std_batches_arrive_in_order_and_end_gracefully: AsyncStd, Graceful;
    async_std_recv_many_reports_an_error_end: AsyncStd, Cut;
    smol_batches_arrive_in_order_and_end_gracefully: Smol, Graceful;
    smol_recv_many_reports_an_error_end: Smol, Cut;
    blocking_batches_arrive_in_order_and_end_gracefully: Blocking, Graceful;
    blocking_recv_many_reports_an_error_end: Blocking, Cut;
}
