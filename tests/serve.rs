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
