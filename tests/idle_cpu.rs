//! An idle link costs no CPU: once bulk traffic (64 KiB frames in batches, TLS) has
//! stopped, no driver keeps waking itself. A driver that spins (a waker that wakes its
//! own task, a timer re-armed in the past) shows here as seconds of CPU.
//!
//! The process's own CPU time is read from `/proc/self/stat`, so other load on the
//! machine does not count; the bound is generous (a tenth of the idle time).

use std::time::Duration;

use bytes::Bytes;
use palisade::{Config, SharedSecret};
use palisade_testkit::certs::TestCa;

/// User plus system CPU time of this process so far.
fn cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / 100))
}

#[test]
fn a_link_idle_after_bulk_traffic_uses_no_cpu() {
    if cpu().is_none() {
        eprintln!("skipped: no /proc/self/stat to read this process's CPU time from");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let secret = SharedSecret::new(vec![7u8; 32]).expect("secret");
        let ca = TestCa::new("idle CA");
        let config = |node: &str| {
            Config::new("idle", node)
                .with_secret(secret.clone())
                .with_tls(ca.tls(&ca.node_at(node, "127.0.0.1")))
        };
        let listener = palisade::tokio::Listener::bind("127.0.0.1:0", config("node-b"))
            .await
            .expect("bind");
        let addr = listener.local_addr().to_string();
        let (dialed, (accepted, _)) = tokio::join!(
            palisade::tokio::connect(&addr, config("node-a")),
            listener.accept()
        );
        let (mut tx, _a_rx) = dialed.expect("connect").split();
        let (_b_tx, mut rx) = accepted.split();
        let batch = vec![Bytes::from(vec![1u8; 64 * 1024]); 64];
        let frames = 256;
        let send = async {
            let mut left = frames;
            while left > 0 {
                left -= tx
                    .send_many(&batch[..left.min(batch.len())])
                    .await
                    .expect("send");
            }
        };
        let recv = async {
            let (mut got, mut taken) = (Vec::new(), 0);
            while taken < frames {
                taken += rx.recv_many(&mut got, 64).await.expect("recv");
                got.clear();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(send, recv) })
            .await
            .expect("the bulk transfer ended");
        let before = cpu().expect("cpu");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = cpu().expect("cpu") - before;
        assert!(
            used < Duration::from_millis(200),
            "the idle link used {used:?} of CPU in 2 s"
        );
    });
}
