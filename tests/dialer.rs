//! A `Dialer` takes new settings while it runs, in every adapter: links it already
//! joined keep working on their old secret while the new settings still accept it (the
//! links follow the dialer's settings: one under a secret no longer accepted would
//! re-join in place, and cannot under a new node id), dials started afterwards join with
//! the new one (the join's key id says which), settings that cannot work are refused and the old
//! ones stay, a dial in progress keeps the settings it began with, and dials racing a
//! `reconfigure` all join, each with one secret or the other. Over 127.0.0.1, against a tokio listener that accepts both secrets; every test
//! is bounded in time.

use std::future::Future;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use palisade::{Config, KeyId, Keyring, SharedSecret};

/// Bounds every test: a dial or echo that hangs fails the test instead.
const BOUND: Duration = Duration::from_secs(30);

/// Dials started before the `reconfigure` and after it, in the race.
const RACERS: usize = 16;

fn secret(byte: u8) -> SharedSecret {
    SharedSecret::new(vec![byte; 32]).expect("secret")
}

fn old() -> SharedSecret {
    secret(1)
}

fn new() -> SharedSecret {
    secret(2)
}

fn node(id: &str, keyring: Keyring) -> Config {
    Config::new("dialers", id).with_keyring(keyring)
}

/// A tokio listener (on a runtime of its own) that accepts the old and the new secret
/// and echoes every frame on every link; dropping it ends everything it runs.
struct Echo {
    runtime: tokio::runtime::Runtime,
    addr: String,
}

impl Echo {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let both = Keyring::new(old()).with_accepted(new()).expect("keyring");
        let endpoint = palisade::Endpoint::new(node("listener", both)).expect("endpoint");
        // Every dial comes from 127.0.0.1 at once: room for all of them.
        let limits = palisade::AdmissionLimits {
            max_unjoined_per_source: 256,
            new_connection_burst_per_source: 256,
            ..Default::default()
        };
        let bind =
            palisade::tokio::Listener::bind_with_limits("127.0.0.1:0", endpoint, None, limits);
        let listener = runtime.block_on(bind).expect("bind");
        let addr = listener.local_addr().to_string();
        runtime.spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await;
                tokio::spawn(async move {
                    while let Ok(Some(frame)) = conn.recv().await {
                        if conn.send(frame).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { runtime, addr }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Nothing it runs outlives the test.
        let rt = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
        );
        rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Runs `test` on a thread of its own and fails if it takes longer than [`BOUND`].
fn bounded(test: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        test();
        let _ = tx.send(());
    });
    match rx.recv_timeout(BOUND) {
        Ok(()) => handle.join().expect("test thread"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The test panicked: show its panic.
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test took longer than {BOUND:?}"),
    }
}

/// A TCP relay to `target` that holds its first connection, once the dialer has sent
/// its first handshake bytes, until told to go: a dial through it is in progress (its
/// settings taken, its handshake begun) for as long as the test wants.
struct Hold {
    addr: String,
    accepted: mpsc::Receiver<()>,
    go: mpsc::Sender<()>,
}

impl Hold {
    fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (accepted_tx, accepted) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let target = target.to_owned();
        thread::spawn(move || -> io::Result<()> {
            let (mut inbound, _) = listener.accept()?;
            // The dialer's first bytes: its handshake has begun, with the settings it
            // took when the dial started.
            inbound.set_read_timeout(Some(BOUND))?;
            let mut first = vec![0; 64 * 1024];
            let n = io::Read::read(&mut inbound, &mut first)?;
            inbound.set_read_timeout(None)?;
            let _ = accepted_tx.send(());
            if go_rx.recv_timeout(BOUND).is_err() {
                return Ok(());
            }
            let mut outbound = TcpStream::connect(&target)?;
            io::Write::write_all(&mut outbound, &first[..n])?;
            let (mut in_r, mut out_w) = (inbound.try_clone()?, outbound.try_clone()?);
            let up = thread::spawn(move || {
                let _ = io::copy(&mut in_r, &mut out_w);
                let _ = out_w.shutdown(Shutdown::Write);
            });
            let (mut out_r, mut in_w) = (outbound, inbound);
            let _ = io::copy(&mut out_r, &mut in_w);
            let _ = in_w.shutdown(Shutdown::Write);
            let _ = up.join();
            Ok(())
        });
        Self { addr, accepted, go }
    }

    /// Waits until the dial through the relay has begun its handshake.
    fn wait_accepted(&self) {
        self.accepted
            .recv_timeout(BOUND)
            .expect("the held dial reached the relay");
    }

    fn release(&self) {
        self.go.send(()).expect("the relay waits");
    }
}

/// The renamed dialer's keyring: the new secret primary, the old one still accepted (a
/// rotation's second step).
fn renewed_keyring() -> Keyring {
    Keyring::new(new()).with_accepted(old()).expect("keyring")
}

fn key_id(peer: &palisade::PeerInfo) -> KeyId {
    peer.key_id.expect("the join used a secret")
}

/// What every reconfigure check asserts about a bad config: refused, naming the setting,
/// and the dialer keeps its last good settings.
fn assert_refused(result: Result<(), palisade::LinkError>, endpoint: &palisade::Endpoint) {
    let err = result.expect_err("an empty node id is refused");
    assert!(err.to_string().contains("node_id"), "{err}");
    assert_eq!(
        endpoint.config().node_id,
        "dialer-new",
        "the old settings stay"
    );
}

/// The reconfigure and race tests for one async adapter: `$adapter` is its module,
/// `$block_on` runs a future to the end on it, `$spawn` runs one in a task of its own
/// and gives a future of its output.
macro_rules! async_dialer_tests {
    ($name:ident, $adapter:path, $block_on:path, $spawn:path) => {
        mod $name {
            use super::*;
            use $adapter as adapter;

            async fn echoes(conn: &mut adapter::Connection, what: &str) {
                let frame = Bytes::from(what.to_owned());
                conn.send(frame.clone()).await.expect("send");
                let echoed = conn.recv().await.expect("recv");
                assert_eq!(echoed, Some(frame), "{what}");
            }

            #[test]
            fn a_reconfigured_dialer_keeps_its_links_and_dials_with_the_new_secret() {
                let echo = Echo::start();
                let addr = echo.addr.clone();
                bounded(move || {
                    $block_on(async move {
                        let config = node("dialer-old", Keyring::new(old()));
                        let dialer = adapter::Dialer::from_config(config).expect("dialer");
                        let mut first = dialer.connect(&addr).await.expect("first dial");
                        assert_eq!(key_id(first.peer()), old().key_id());
                        echoes(&mut first, "before").await;

                        // A clone shares the settings: reconfiguring it reaches `dialer`.
                        // The old secret is still accepted, so `first` (which cannot
                        // re-join under the new node id) keeps it.
                        let clone = dialer.clone();
                        let renewed = node("dialer-new", renewed_keyring());
                        clone.reconfigure(renewed).expect("reconfigure");
                        assert_eq!(dialer.endpoint().config().node_id, "dialer-new");

                        let mut second = dialer.connect(&addr).await.expect("second dial");
                        assert_eq!(key_id(second.peer()), new().key_id());
                        echoes(&mut second, "after").await;
                        echoes(&mut first, "the old link, after").await;
                        assert_eq!(key_id(first.peer()), old().key_id());

                        let refused = dialer.reconfigure(Config::new("dialers", ""));
                        assert_refused(refused, &dialer.endpoint());
                        let dial = adapter::Dial::new(addr.as_str());
                        let mut third = dialer.dial(&dial).await.expect("third dial");
                        assert_eq!(key_id(third.peer()), new().key_id());
                        echoes(&mut third, "after a refused config").await;
                    })
                });
                drop(echo);
            }

            #[test]
            fn dials_racing_a_reconfigure_all_join() {
                let echo = Echo::start();
                let addr = echo.addr.clone();
                bounded(move || {
                    $block_on(async move {
                        let config = node("dialer-old", Keyring::new(old()));
                        let dialer = adapter::Dialer::from_config(config).expect("dialer");
                        let spawn_dial = |dialer: &adapter::Dialer| {
                            let (dialer, addr) = (dialer.clone(), addr.clone());
                            $spawn(async move {
                                let conn = dialer.connect(&addr).await.expect("every dial joins");
                                key_id(conn.peer())
                            })
                        };
                        // One dial certainly in progress during the reconfigure.
                        let hold = Hold::start(&addr);
                        let held = {
                            let (dialer, addr) = (dialer.clone(), hold.addr.clone());
                            $spawn(async move {
                                let conn = dialer.connect(&addr).await.expect("held dial joins");
                                key_id(conn.peer())
                            })
                        };
                        hold.wait_accepted();
                        let before: Vec<_> = (0..RACERS).map(|_| spawn_dial(&dialer)).collect();
                        let renewed = node("dialer-new", Keyring::new(new()));
                        dialer.reconfigure(renewed).expect("reconfigure");
                        let after: Vec<_> = (0..RACERS).map(|_| spawn_dial(&dialer)).collect();
                        hold.release();
                        assert_eq!(held.await, old().key_id(), "a dial in progress keeps its");
                        for task in before {
                            let id = task.await;
                            assert!(id == old().key_id() || id == new().key_id(), "{id:?}");
                        }
                        for task in after {
                            assert_eq!(task.await, new().key_id(), "started after");
                        }
                    })
                });
                drop(echo);
            }
        }
    };
}

fn tokio_block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn tokio_spawn<F>(f: F) -> impl Future<Output = F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = tokio::spawn(f);
    async move { task.await.expect("the task ends") }
}

fn smol_spawn<F>(f: F) -> smol::Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    smol::spawn(f)
}

async_dialer_tests!(on_tokio, palisade::tokio, tokio_block_on, tokio_spawn);
async_dialer_tests!(
    on_async_std,
    palisade::async_std,
    async_std::task::block_on,
    async_std::task::spawn
);
async_dialer_tests!(on_smol, palisade::smol, smol::block_on, smol_spawn);

mod on_blocking {
    use super::*;
    use palisade::blocking::{Connection, Dial, Dialer};

    fn echoes(conn: &Connection, what: &str) {
        let frame = Bytes::from(what.to_owned());
        conn.send(frame.clone()).expect("send");
        assert_eq!(conn.recv().expect("recv"), Some(frame), "{what}");
    }

    #[test]
    fn a_reconfigured_dialer_keeps_its_links_and_dials_with_the_new_secret() {
        let echo = Echo::start();
        let addr = echo.addr.clone();
        bounded(move || {
            let dialer =
                Dialer::from_config(node("dialer-old", Keyring::new(old()))).expect("dialer");
            let first = dialer.connect(&addr).expect("first dial");
            assert_eq!(key_id(first.peer()), old().key_id());
            echoes(&first, "before");

            // The old secret is still accepted, so `first` (which cannot re-join under
            // the new node id) keeps it.
            let clone = dialer.clone();
            let renewed = node("dialer-new", renewed_keyring());
            clone.reconfigure(renewed).expect("reconfigure");
            assert_eq!(dialer.endpoint().config().node_id, "dialer-new");

            let second = dialer.connect(&addr).expect("second dial");
            assert_eq!(key_id(second.peer()), new().key_id());
            echoes(&second, "after");
            echoes(&first, "the old link, after");

            assert_refused(
                dialer.reconfigure(Config::new("dialers", "")),
                &dialer.endpoint(),
            );
            let third = dialer.dial(&Dial::new(addr.as_str())).expect("third dial");
            assert_eq!(key_id(third.peer()), new().key_id());
            echoes(&third, "after a refused config");
        });
        drop(echo);
    }

    #[test]
    fn dials_racing_a_reconfigure_all_join() {
        let echo = Echo::start();
        let addr = echo.addr.clone();
        bounded(move || {
            let dialer =
                Dialer::from_config(node("dialer-old", Keyring::new(old()))).expect("dialer");
            let spawn_dial = |dialer: &Dialer| {
                let (dialer, addr) = (dialer.clone(), addr.clone());
                thread::spawn(move || {
                    let conn = dialer.connect(&addr).expect("every dial joins");
                    key_id(conn.peer())
                })
            };
            let hold = Hold::start(&addr);
            let held = {
                let (dialer, addr) = (dialer.clone(), hold.addr.clone());
                thread::spawn(move || key_id(dialer.connect(&addr).expect("held dial").peer()))
            };
            hold.wait_accepted();
            let before: Vec<_> = (0..RACERS).map(|_| spawn_dial(&dialer)).collect();
            let renewed = node("dialer-new", Keyring::new(new()));
            dialer.reconfigure(renewed).expect("reconfigure");
            let after: Vec<_> = (0..RACERS).map(|_| spawn_dial(&dialer)).collect();
            hold.release();
            let held = held.join().expect("held dial thread");
            assert_eq!(
                held,
                old().key_id(),
                "a dial in progress keeps its settings"
            );
            for t in before {
                let id = t.join().expect("dial thread");
                assert!(id == old().key_id() || id == new().key_id(), "{id:?}");
            }
            for t in after {
                assert_eq!(
                    t.join().expect("dial thread"),
                    new().key_id(),
                    "started after"
                );
            }
        });
        drop(echo);
    }
}
