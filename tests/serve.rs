//! The accept loop every async adapter shares (`palisade_driver::serve`): a listener
//! serves joins, and dropping it ends its accept loop and closes its port, in tokio,
//! async-std and smol alike. Over 127.0.0.1, bounded in time.

use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use palisade::Config;

/// How long a dropped listener's port may stay open.
const BOUND: Duration = Duration::from_secs(5);

fn config(id: &str) -> Config {
    Config::new("serve", id)
}

/// Waits until nothing accepts on `addr` any more; false if it still does after
/// [`BOUND`].
fn port_closes(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

macro_rules! serve_tests {
    ($name:ident, $adapter:path, $block_on:expr) => {
        #[test]
        fn $name() {
            use $adapter as adapter;
            let block_on = $block_on;
            let addr = block_on(async {
                let listener = adapter::Listener::bind("127.0.0.1:0", config("listener"))
                    .await
                    .expect("bind");
                let addr = listener.local_addr();
                let target = addr.to_string();
                let dial = adapter::connect(&target, config("dialer"));
                let (dialed, (accepted, _)) =
                    futures_util::future::join(dial, listener.accept()).await;
                assert_eq!(dialed.expect("joins").peer().node_id, "listener");
                assert_eq!(accepted.peer().node_id, "dialer");
                addr
            });
            assert!(port_closes(addr), "the dropped listener still accepts");
        }
    };
}

fn tokio_block_on<F: std::future::Future>(f: F) -> F::Output {
    // The runtime stays up after the listener is dropped: the accept loop must end of
    // itself, not with the runtime.
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime")
        })
        .block_on(f)
}

serve_tests!(
    tokio_listener_serves_and_closes_on_drop,
    palisade::tokio,
    tokio_block_on
);
serve_tests!(
    async_std_listener_serves_and_closes_on_drop,
    palisade::async_std,
    async_std::task::block_on
);
serve_tests!(
    smol_listener_serves_and_closes_on_drop,
    palisade::smol,
    smol::block_on
);

/// The accept queue the kernel gives a listening port (`ss`'s Send-Q for a listener),
/// or None where `ss` is missing.
fn accept_queue(addr: SocketAddr) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", addr.port())])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2)?.parse().ok()
}

/// What a storm-sized backlog becomes on this kernel, or None when the kernel's cap
/// (`net.core.somaxconn`) is too low to tell it from the runtimes' own 128 / 1024.
fn expected_queue() -> Option<u32> {
    let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let want = palisade_driver::backlog::LISTEN_BACKLOG as u32;
    (cap > 1024).then_some(want.min(cap))
}

/// A reconnect storm must not find the accept queue full (a dropped SYN waits a second
/// for its retransmit): tokio binds with 1024, smol and std with 128; palisade asks for
/// `LISTEN_BACKLOG`.
#[test]
fn listeners_ask_for_a_storm_sized_accept_queue() {
    let Some(expected) = expected_queue() else {
        eprintln!("somaxconn too low or unreadable: nothing to tell apart, skipped");
        return;
    };
    let tokio_addr = tokio_block_on(async {
        let l = palisade::tokio::Listener::bind("127.0.0.1:0", config("t"))
            .await
            .expect("bind");
        let addr = l.local_addr();
        (addr, accept_queue(addr))
    });
    let smol_addr = smol::block_on(async {
        let l = palisade::smol::Listener::bind("127.0.0.1:0", config("s"))
            .await
            .expect("bind");
        let addr = l.local_addr();
        (addr, accept_queue(addr))
    });
    let blocking = palisade::blocking::Listener::bind("127.0.0.1:0", config("b")).expect("bind");
    let blocking_queue = accept_queue(blocking.local_addr());
    let Some(tokio_queue) = tokio_addr.1 else {
        eprintln!("`ss` not found: skipped");
        return;
    };
    assert_eq!(tokio_queue, expected, "tokio listener");
    assert_eq!(smol_addr.1, Some(expected), "smol listener");
    assert_eq!(blocking_queue, Some(expected), "blocking listener");
}
