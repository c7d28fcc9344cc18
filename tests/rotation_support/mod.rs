//! Rotation tests' shared parts: a Kubernetes-style secret volume (`..data` symlink
//! swap), and a tokio node made from settings whose `FileWatch` feeds both its listener
//! and its dials, with links that stream numbered frames both ways and continuous join
//! probes, every outcome counted so a test can assert nothing was lost.
#![allow(dead_code)]

use std::any::Any;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use palisade::tokio::{Connection, Dial, Dialer, Listener};
use palisade::{CloseReason, Endpoint, FailureHook, FileWatch, KeyId, Reload, Settings};
use tokio::sync::{mpsc, watch};

/// A secret volume as the kubelet lays it out: `..data` → a timestamped folder, and
/// each file → `..data/<file>`.
pub struct Volume(pub PathBuf);

impl Volume {
    pub fn new(name: &str, files: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("palisade-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for file in files {
            symlink(format!("..data/{file}"), dir.join(file)).unwrap();
        }
        Self(dir)
    }

    /// Writes a new set into a fresh folder and swaps `..data` to it in one rename.
    /// A file left out of `files` is missing from the new set (its link dangles).
    pub fn publish(&self, version: u32, files: &[(&str, &str)]) {
        let folder = format!("..{version}");
        let at = self.0.join(&folder);
        std::fs::create_dir_all(&at).unwrap();
        for (name, content) in files {
            std::fs::write(at.join(name), content).unwrap();
        }
        let tmp = self.0.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&folder, &tmp).unwrap();
        std::fs::rename(&tmp, self.0.join("..data")).unwrap();
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The serial number of a DER certificate.
pub fn serial_of(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    cert.raw_serial().to_vec()
}

/// A path as a TOML string.
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// What one direction of a streaming link delivered.
#[derive(Debug)]
pub struct Outcome {
    pub link: String,
    pub frames: u64,
    pub error: Option<String>,
}

/// A link a node accepted: (acceptor, peer node id, serial of the certificate the peer
/// presented).
pub type Accepted = (String, String, Option<Vec<u8>>);

/// Counters every node and link of a test adds to.
#[derive(Default)]
pub struct Tally {
    pub joins_ok: AtomicU64,
    pub joins_failed: AtomicU64,
    pub acceptor_failures: AtomicU64,
    /// Failure messages, for the assertion message.
    pub failures: Mutex<Vec<String>>,
    pub accepted: Mutex<Vec<Accepted>>,
    /// Handles kept open until the test ends.
    keep: Mutex<Vec<Box<dyn Any + Send>>>,
}

impl Tally {
    pub fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// The first frame of a streaming link (a join probe sends none and closes).
const STREAM: &[u8] = b"stream";

/// A node: listener, dial endpoint and file watch, all from one settings file.
pub struct Node {
    pub id: String,
    pub addr: String,
    listener: Arc<Listener>,
    /// Dials with the node's current settings, counted in the listener's metrics.
    dialer: Dialer,
    pub watch: FileWatch,
}

impl Node {
    /// Binds on 127.0.0.1 with the settings' config and limits, and accepts: links that
    /// announce themselves stream frames back (see [`stream`]); probes are let go.
    pub async fn start(
        settings: Settings,
        tally: &Arc<Tally>,
        stop: &watch::Receiver<bool>,
        outcomes: &mpsc::UnboundedSender<Outcome>,
    ) -> Self {
        let loaded = settings.build(SystemTime::now());
        let config = loaded.config.unwrap_or_else(|| panic!("{}", loaded.report));
        let id = config.node_id.clone();
        let counting = Arc::clone(tally);
        let hook: FailureHook = Arc::new(move |f| {
            counting.acceptor_failures.fetch_add(1, Ordering::Relaxed);
            counting.fail(format!("acceptor: {f}"));
        });
        let endpoint = Endpoint::new(config).unwrap();
        let dial_endpoint = endpoint.clone();
        let listener =
            Listener::bind_with_limits("127.0.0.1:0", endpoint.clone(), Some(hook), loaded.limits)
                .await
                .unwrap();
        let listener = Arc::new(listener);
        let addr = listener.local_addr().to_string();
        let (accepting, tally, stop, outcomes) = (
            Arc::clone(&listener),
            Arc::clone(tally),
            stop.clone(),
            outcomes.clone(),
        );
        let me = id.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = accepting.accept().await;
                let peer = conn.peer();
                let serial = peer.tls.as_ref().and_then(|t| t.serial());
                let name = format!("{} accepted from {}", me, peer.node_id);
                tally
                    .accepted
                    .lock()
                    .unwrap()
                    .push((me.clone(), peer.node_id.clone(), serial));
                let (tally, stop, outcomes) = (Arc::clone(&tally), stop.clone(), outcomes.clone());
                tokio::spawn(async move {
                    match conn.recv().await {
                        Ok(Some(first)) if first == STREAM => {
                            stream(conn, name, stop, outcomes, tally).await
                        }
                        // A probe: it closes, nothing to do.
                        _ => {}
                    }
                });
            }
        });
        Self {
            id,
            addr,
            dialer: Dialer::with_metrics(dial_endpoint, listener.metrics().clone()),
            watch: FileWatch::new(settings).count_in(listener.metrics().clone()),
            listener,
        }
    }

    /// Checks the files; a new set goes to the listener and to the dials. Returns what
    /// the check found (a refused set keeps the old one in both).
    pub fn check(&mut self) -> Reload {
        match self.watch.check(SystemTime::now()) {
            Reload::Reloaded { config, report } => {
                self.listener.reconfigure(config.clone()).unwrap();
                self.dialer.reconfigure(config.clone()).unwrap();
                Reload::Reloaded { config, report }
            }
            other => other,
        }
    }

    /// [`Node::check`], which must take a new set.
    pub fn take(&mut self) {
        match self.check() {
            Reload::Reloaded { .. } => {}
            other => panic!("{}: expected a new set taken, got {other:?}", self.id),
        }
    }

    /// The node's dialer (a clone shares its settings: a reconfigure reaches it).
    pub fn dialer(&self) -> Dialer {
        self.dialer.clone()
    }

    /// The node's counters: links, joins, refusals, reloads, seconds to expiry.
    pub fn metrics(&self) -> palisade::MetricsSnapshot {
        self.listener.metrics().snapshot()
    }

    /// Dials `to` and joins, checking the name and node id of the node answering.
    pub async fn dial(&self, to: &Node) -> Result<Connection, palisade::LinkError> {
        self.dialer.dial(&to_node(to)).await
    }
}

/// How to dial `to`: its address, checking its name and node id.
fn to_node(to: &Node) -> Dial {
    Dial::new(&to.addr).server_name(&to.id).expect_peer(&to.id)
}

/// Makes a dialed link a streaming one: announces it, then streams both ways.
pub fn start_stream(
    mut conn: Connection,
    name: String,
    stop: &watch::Receiver<bool>,
    outcomes: &mpsc::UnboundedSender<Outcome>,
    tally: &Arc<Tally>,
) {
    let (stop, outcomes, tally) = (stop.clone(), outcomes.clone(), Arc::clone(tally));
    tokio::spawn(async move {
        if let Err(e) = conn.send(Bytes::from_static(STREAM)).await {
            let _ = outcomes.send(Outcome {
                link: name,
                frames: 0,
                error: Some(format!("announce: {e}")),
            });
            return;
        }
        stream(conn, name, stop, outcomes, tally).await;
    });
}

/// Sends numbered frames (tag 0, sequence number, filler) every few milliseconds until
/// `stop`, then an end frame (tag 1, count); receives the peer's and checks they arrive
/// in order and all of them. One [`Outcome`] per direction received.
async fn stream(
    conn: Connection,
    name: String,
    mut stop: watch::Receiver<bool>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    tally: Arc<Tally>,
) {
    let (mut tx, mut rx) = conn.split();
    let receiving = tokio::spawn(async move {
        let mut next = 0u64;
        let error = loop {
            match rx.recv().await {
                Ok(Some(mut frame)) if frame.len() >= 9 => {
                    let (tag, n) = (frame.get_u8(), frame.get_u64());
                    match tag {
                        0 if n == next => next += 1,
                        0 => break Some(format!("frame {n} arrived when {next} was due")),
                        _ if n == next => break None,
                        _ => break Some(format!("end says {n} frames, {next} arrived")),
                    }
                }
                Ok(Some(frame)) => break Some(format!("a {}-byte frame", frame.len())),
                Ok(None) => break Some(format!("closed after {next} frames")),
                Err(e) => break Some(format!("after {next} frames: {e}")),
            }
        };
        (next, error, rx)
    });
    let mut sent = 0u64;
    let mut send_error = None;
    while !*stop.borrow_and_update() {
        let mut frame = BytesMut::with_capacity(64);
        frame.put_u8(0);
        frame.put_u64(sent);
        frame.put_bytes(0x5a, 55);
        if let Err(e) = tx.send(frame.freeze()).await {
            send_error = Some(format!("send after {sent} frames: {e}"));
            break;
        }
        sent += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = stop.changed() => {}
        }
    }
    if send_error.is_none() {
        let mut end = BytesMut::with_capacity(9);
        end.put_u8(1);
        end.put_u64(sent);
        if let Err(e) = tx.send(end.freeze()).await {
            send_error = Some(format!("end: {e}"));
        }
        let _ = tx.flush().await;
    }
    let (frames, error) = match receiving.await {
        Ok((frames, error, rx)) => {
            // Kept open: the peer may still be reading our end frame.
            tally.keep.lock().unwrap().push(Box::new((tx, rx)));
            (frames, error)
        }
        Err(e) => (0, Some(format!("receiver: {e}"))),
    };
    let _ = outcomes.send(Outcome {
        link: name,
        frames,
        error: error.or(send_error),
    });
}

/// Stops every stream and collects one outcome per direction of `links` links; asserts
/// none was lost and returns the frames delivered.
pub async fn finish_streams(
    stop: watch::Sender<bool>,
    mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    links: usize,
) -> u64 {
    stop.send(true).unwrap();
    let mut frames = 0;
    let mut bad = Vec::new();
    for _ in 0..links * 2 {
        let outcome = tokio::time::timeout(Duration::from_secs(30), outcomes.recv())
            .await
            .expect("every stream reports within 30 s")
            .expect("outcome");
        frames += outcome.frames;
        if outcome.error.is_some() || outcome.frames == 0 {
            bad.push(outcome);
        }
    }
    assert!(bad.is_empty(), "links lost or out of order: {bad:#?}");
    frames
}

/// Dials `from` → `to` and closes, every `pace`, until `stop`: a join probe. Counts
/// joins and failures in `tally`; records the key id of each join.
pub fn probe_joins(
    from: &Node,
    to: &Node,
    pace: Duration,
    stop: &watch::Receiver<bool>,
    tally: &Arc<Tally>,
    key_ids: &Arc<Mutex<Vec<Option<KeyId>>>>,
) -> tokio::task::JoinHandle<()> {
    let dialer = from.dialer();
    let how = to_node(to);
    let name = format!("{} -> {}", from.id, to.id);
    let (mut stop, tally, key_ids) = (stop.clone(), Arc::clone(tally), Arc::clone(key_ids));
    tokio::spawn(async move {
        while !*stop.borrow_and_update() {
            match dialer.dial(&how).await {
                Ok(conn) => {
                    tally.joins_ok.fetch_add(1, Ordering::Relaxed);
                    key_ids.lock().unwrap().push(conn.peer().key_id);
                    conn.close(CloseReason::default()).await;
                }
                Err(e) => {
                    tally.joins_failed.fetch_add(1, Ordering::Relaxed);
                    tally.fail(format!("{name}: {e}"));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pace) => {}
                _ = stop.changed() => {}
            }
        }
    })
}
