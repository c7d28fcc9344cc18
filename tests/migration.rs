//! A running cluster moved from plaintext without a secret to TLS with a secret, with
//! traffic flowing and no join failing (README: "Migrating a running cluster"). Three
//! tokio nodes over 127.0.0.1, each listening and dialing the other two:
//!
//! - step 0: every node plaintext, no secret, strict;
//! - step 1a: every LISTENER reconfigured to permissive with TLS and the secret;
//! - step 1b: every node DIALS with TLS and the secret (once every dial in flight with
//!   the old settings has finished);
//! - step 2: every listener strict.
//!
//! At every step new long-lived links are dialed between every ordered pair, and short
//! links are dialed continuously all along. Every long link streams numbered frames both
//! ways until the end, when each side says how many it sent. Zero failed joins, zero
//! dropped links, every frame in order; the permissive listeners report the sub-strict
//! links (`below_strict`); a strict node at step 2 refuses a plaintext dialer and a dialer
//! without the secret.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use palisade::tls::TlsConfig;
use palisade::tokio::{dial, Listener, RecvHalf, SendHalf};
use palisade::{
    AdmissionLimits, BelowStrict, CloseReason, Config, ConnectionError, Dial, Endpoint,
    FailureHook, LinkError, Mode, PrefaceError, RejectCode, SharedSecret,
};
use palisade_testkit::bounded;
use palisade_testkit::certs::TestCa;

const CLUSTER: &str = "migration";
const NODES: [&str; 3] = ["node-0", "node-1", "node-2"];
/// Long links dialed per ordered pair at every step.
const LONG_PER_PAIR: usize = 2;
/// How long each step runs with traffic before the next.
const STEP_TIME: Duration = Duration::from_millis(600);
const FRAME_EVERY: Duration = Duration::from_millis(20);
const CHURN_PAUSE: Duration = Duration::from_millis(15);
const STEPS: [&str; 4] = [
    "step 0 (plaintext, no secret, strict)",
    "step 1a (listeners permissive with TLS + secret)",
    "step 1b (dialers TLS + secret)",
    "step 2 (listeners strict)",
];

/// The settings a node moves to: TLS from the cluster CA (the dialed node's name checked,
/// node ids bound to certificates) and the secret.
struct Target {
    tls: Vec<TlsConfig>,
    secret: SharedSecret,
}

impl Target {
    fn new(ca: &TestCa) -> Self {
        let tls = NODES
            .iter()
            .map(|n| {
                let mut tls = ca.tls(&ca.node(n));
                tls.authorization.verify_hostname = true;
                tls.authorization.node_id_in_cert = true;
                tls
            })
            .collect();
        Self {
            tls,
            secret: SharedSecret::new(b"the cluster's new shared secret, 32+ bytes".to_vec())
                .expect("secret"),
        }
    }

    fn config(&self, node: usize, mode: Mode) -> Config {
        let mut c = Config::new(CLUSTER, NODES[node])
            .with_tls(self.tls[node].clone())
            .with_secret(self.secret.clone());
        c.mode = mode;
        c
    }
}

fn plaintext(node: &str) -> Config {
    Config::new(CLUSTER, node)
}

/// What the test counts, from every task.
#[derive(Default)]
struct Tally {
    step: AtomicUsize,
    stop: AtomicBool,
    /// Joins (long and short links) by the step they completed in.
    joins: [AtomicU64; 4],
    frames: AtomicU64,
    long_links_done: AtomicU64,
    /// Anything that must not happen: a failed dial, a frame out of order, a link lost.
    failures: Mutex<Vec<String>>,
    /// Per link an acceptor joined: the dialer's tag and how it fell short.
    accepted: Mutex<Vec<(String, BelowStrict, bool)>>,
    /// Handshakes the listeners gave up on, by node.
    refused: Mutex<Vec<(usize, String)>>,
    /// Per short-link dialer (from, to): the dial settings version of its last dial.
    churn_version: Mutex<HashMap<(usize, usize), usize>>,
    /// Each node's `palisade_permissive` gauge after each step's reconfigure.
    permissive: Mutex<Vec<(usize, bool)>>,
    /// Each node's metrics at the end.
    metrics: Mutex<Vec<palisade::MetricsSnapshot>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

struct Node {
    listener: Listener,
    addr: String,
    /// The settings this node dials with: version 0 plaintext, 1 TLS + secret.
    dial: RwLock<(usize, Endpoint)>,
}

impl Node {
    fn dialing(&self) -> (usize, Endpoint) {
        self.dial.read().unwrap().clone()
    }
}

fn to(target: usize, addr: &str) -> Dial {
    Dial::new(addr)
        .server_name(NODES[target])
        .expect_peer(NODES[target])
}

/// Streams numbered frames until the test stops, then `FIN <count>`; checks the peer's
/// frames arrive in order and that its count matches. Either side of a long link.
async fn stream(mut tx: SendHalf, mut rx: RecvHalf, tally: Arc<Tally>, who: String) {
    let sender = async {
        let mut seq = 0u64;
        while !tally.stop.load(Ordering::Relaxed) {
            tx.send(Bytes::from(seq.to_string())).await?;
            seq += 1;
            tokio::time::sleep(FRAME_EVERY).await;
        }
        tx.send(Bytes::from(format!("FIN {seq}"))).await
    };
    let receiver = async {
        let mut expect = 0u64;
        loop {
            let frame = match rx.recv().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(format!("closed after {expect} frames, before FIN")),
                Err(e) => return Err(format!("lost after {expect} frames: {e}")),
            };
            let text = String::from_utf8_lossy(&frame).into_owned();
            if let Some(count) = text.strip_prefix("FIN ") {
                return match count.parse::<u64>() {
                    Ok(n) if n == expect => Ok(()),
                    _ => Err(format!("peer sent {count} frames, {expect} arrived")),
                };
            }
            if text.parse::<u64>() != Ok(expect) {
                return Err(format!("frame {text:?} arrived where {expect} was due"));
            }
            expect += 1;
            tally.frames.fetch_add(1, Ordering::Relaxed);
        }
    };
    let (sent, received) = tokio::join!(sender, receiver);
    if let Err(e) = sent {
        tally.fail(format!("{who}: sending failed: {e}"));
    }
    match received {
        Ok(()) => {
            tally.long_links_done.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tally.fail(format!("{who}: {e}")),
    }
    tx.close(CloseReason::normal()).await;
}

/// A listener's side of every link: the dialer's first frame says what the link is.
async fn serve(node: usize, conn: palisade::tokio::Connection, tally: Arc<Tally>) {
    let peer = conn.peer().clone();
    let (mut tx, mut rx) = conn.split();
    let tag = match rx.recv().await {
        Ok(Some(tag)) => String::from_utf8_lossy(&tag).into_owned(),
        other => return tally.fail(format!("{}: no tag: {other:?}", NODES[node])),
    };
    tally
        .accepted
        .lock()
        .unwrap()
        .push((tag.clone(), peer.below_strict, peer.tls.is_some()));
    if tag.starts_with('L') {
        stream(tx, rx, tally, format!("{} accepted {tag}", NODES[node])).await;
    } else if tx.send(Bytes::from_static(b"ack")).await.is_ok() {
        // The dialer closes once it has the answer.
        let _ = rx.recv().await;
    }
}

/// Dials short links from `from` to `to` until the test stops: join, one frame each
/// way, close.
async fn churn(nodes: Arc<Vec<Node>>, from: usize, target: usize, tally: Arc<Tally>) {
    let mut n = 0;
    while !tally.stop.load(Ordering::Relaxed) {
        let (version, endpoint) = nodes[from].dialing();
        let tag = format!("C {from}>{target} v{version} #{n}");
        let counted = nodes[from].listener.metrics().clone();
        match dial(&endpoint, &to(target, &nodes[target].addr).metrics(counted)).await {
            Ok(conn) => {
                tally.joins[tally.step.load(Ordering::SeqCst)].fetch_add(1, Ordering::Relaxed);
                let (mut tx, mut rx) = conn.split();
                let answered = match tx.send(Bytes::from(tag.clone())).await {
                    Ok(()) => matches!(rx.recv().await, Ok(Some(_))),
                    Err(_) => false,
                };
                if !answered {
                    tally.fail(format!("{tag}: joined, then no answer"));
                }
                tx.close(CloseReason::normal()).await;
            }
            Err(e) => tally.fail(format!("{tag}: join failed: {e}")),
        }
        tally
            .churn_version
            .lock()
            .unwrap()
            .insert((from, target), version);
        n += 1;
        tokio::time::sleep(CHURN_PAUSE).await;
    }
}

/// Dials `LONG_PER_PAIR` long links between every ordered pair with each node's current
/// dial settings.
async fn dial_long_links(
    nodes: &Arc<Vec<Node>>,
    step: usize,
    tally: &Arc<Tally>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    for from in 0..NODES.len() {
        for target in (0..NODES.len()).filter(|t| *t != from) {
            for k in 0..LONG_PER_PAIR {
                let (version, endpoint) = nodes[from].dialing();
                let tag = format!("L {from}>{target} v{version} step{step} #{k}");
                let counted = nodes[from].listener.metrics().clone();
                let target_dial = to(target, &nodes[target].addr).metrics(counted);
                match dial(&endpoint, &target_dial).await {
                    Ok(conn) => {
                        tally.joins[step].fetch_add(1, Ordering::Relaxed);
                        let (mut tx, rx) = conn.split();
                        if let Err(e) = tx.send(Bytes::from(tag.clone())).await {
                            tally.fail(format!("{tag}: {e}"));
                            continue;
                        }
                        tasks.push(tokio::spawn(stream(tx, rx, Arc::clone(tally), tag)));
                    }
                    Err(e) => tally.fail(format!("{tag}: join failed: {e}")),
                }
            }
        }
    }
}

/// Waits until every short-link dialer has finished a dial with settings `version`:
/// no dial with older settings is still in flight.
async fn every_dialer_on(version: usize, tally: &Tally) {
    loop {
        let versions = tally.churn_version.lock().unwrap().clone();
        if versions.len() == NODES.len() * (NODES.len() - 1)
            && versions.values().all(|v| *v >= version)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn start(node: usize, tally: &Arc<Tally>) -> Node {
    let config = plaintext(NODES[node]);
    let endpoint = Endpoint::new(config).expect("config");
    let hook_tally = Arc::clone(tally);
    let hook: FailureHook = Arc::new(move |failure| {
        hook_tally
            .refused
            .lock()
            .unwrap()
            .push((node, failure.error.to_string()));
    });
    // Every dial of this test comes from 127.0.0.1: room for all of them.
    let limits = AdmissionLimits {
        new_connection_rate_per_source: 100_000.0,
        new_connection_burst_per_source: 100_000,
        max_unjoined_per_source: 1024,
        ..AdmissionLimits::default()
    };
    let listener = Listener::bind_with_limits("127.0.0.1:0", endpoint.clone(), Some(hook), limits)
        .await
        .expect("bind");
    Node {
        addr: listener.local_addr().to_string(),
        listener,
        // Dials share the listener's replay cache and own nonces.
        dial: RwLock::new((0, endpoint)),
    }
}

async fn migrate(target: Target) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let mut nodes = Vec::new();
    for i in 0..NODES.len() {
        nodes.push(start(i, &tally).await);
    }
    let nodes = Arc::new(nodes);
    let mut tasks = Vec::new();
    let mut acceptors = Vec::new();
    for i in 0..NODES.len() {
        let (n, t) = (Arc::clone(&nodes), Arc::clone(&tally));
        acceptors.push(tokio::spawn(async move {
            loop {
                let (conn, _) = n[i].listener.accept().await;
                tokio::spawn(serve(i, conn, Arc::clone(&t)));
            }
        }));
        for t in (0..NODES.len()).filter(|t| *t != i) {
            let churner = churn(Arc::clone(&nodes), i, t, Arc::clone(&tally));
            tasks.push(tokio::spawn(churner));
        }
    }

    for step in 0..STEPS.len() {
        match step {
            1 => {
                for (i, node) in nodes.iter().enumerate() {
                    let config = target.config(i, Mode::Permissive);
                    node.listener.reconfigure(config).expect("permissive");
                }
            }
            2 => {
                // The node's one settings set: permissive, which its dials ignore.
                for (i, node) in nodes.iter().enumerate() {
                    let mut dial = node.dial.write().unwrap();
                    let next = dial.1.reconfigure(target.config(i, Mode::Permissive));
                    *dial = (1, next.expect("dial settings"));
                }
                every_dialer_on(1, &tally).await;
            }
            3 => {
                for (i, node) in nodes.iter().enumerate() {
                    let config = target.config(i, Mode::Strict);
                    node.listener.reconfigure(config).expect("strict");
                }
            }
            _ => {}
        }
        for node in nodes.iter() {
            let gauge = node.listener.metrics().snapshot().permissive;
            tally.permissive.lock().unwrap().push((step, gauge));
        }
        tally.step.store(step, Ordering::SeqCst);
        dial_long_links(&nodes, step, &tally, &mut tasks).await;
        tokio::time::sleep(STEP_TIME).await;
    }

    // Strict now: a node still on the old settings, or without the secret, is refused.
    let old = Endpoint::new(plaintext("node-9")).expect("old settings");
    match dial(&old, &to(0, &nodes[0].addr)).await {
        Err(LinkError::Link(ConnectionError::Preface(PrefaceError::PeerSpeaksTls))) => {}
        other => tally.fail(format!("a plaintext dialer at a strict node: {other:?}")),
    }
    let mut no_secret = Config::new(CLUSTER, NODES[1]).with_tls(target.tls[1].clone());
    no_secret.mode = Mode::Permissive;
    let no_secret = Endpoint::new(no_secret).expect("no secret");
    let refused = dial(&no_secret, &to(0, &nodes[0].addr)).await;
    if refused.as_ref().err().and_then(LinkError::reject_code) != Some(RejectCode::SecretRequired) {
        tally.fail(format!(
            "a dialer without the secret at a strict node: {refused:?}"
        ));
    }

    tally.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("task");
    }
    // The listeners' sides of the long links finish on their FIN.
    let links = (STEPS.len() * NODES.len() * (NODES.len() - 1) * LONG_PER_PAIR) as u64;
    while tally.long_links_done.load(Ordering::SeqCst) < 2 * links
        && tally.failures.lock().unwrap().is_empty()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for acceptor in acceptors {
        acceptor.abort();
    }
    let snapshots = nodes.iter().map(|n| n.listener.metrics().snapshot());
    tally.metrics.lock().unwrap().extend(snapshots);
    tally
}

#[test]
fn a_cluster_moves_to_tls_and_a_secret_with_no_failed_join_and_no_dropped_link() {
    let ca = TestCa::new("cluster CA");
    let target = Target::new(&ca);
    let tally = bounded("the migration", Duration::from_secs(120), move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(migrate(target))
    });

    let failures = tally.failures.lock().unwrap().clone();
    let accepted = tally.accepted.lock().unwrap().clone();
    let refused = tally.refused.lock().unwrap().clone();
    let joins: Vec<u64> = tally
        .joins
        .iter()
        .map(|j| j.load(Ordering::SeqCst))
        .collect();
    let long = (STEPS.len() * NODES.len() * (NODES.len() - 1) * LONG_PER_PAIR) as u64;
    let sub_strict = accepted.iter().filter(|(_, b, _)| b.is_any()).count();
    eprintln!(
        "migration: {long} long links, {} links in all",
        accepted.len()
    );
    eprintln!(
        "migration: {} frames, in order",
        tally.frames.load(Ordering::SeqCst)
    );
    for (step, joins) in STEPS.iter().zip(&joins) {
        eprintln!("migration: {step}: {joins} joins");
    }
    eprintln!(
        "migration: {sub_strict} links accepted below strict (plaintext, without a join secret)"
    );
    eprintln!(
        "migration: failed joins and dropped links: {}",
        failures.len()
    );

    let metrics = tally.metrics.lock().unwrap().clone();
    for (node, snapshot) in NODES.iter().zip(&metrics) {
        eprintln!("migration: metrics of {node} after the migration:\n{snapshot}");
    }

    assert!(failures.is_empty(), "{failures:#?}");
    // The gauge follows the listener: permissive in steps 1 and 2, strict before and after.
    for (step, permissive) in tally.permissive.lock().unwrap().iter() {
        assert_eq!(*permissive, (1..=2).contains(step), "step {step}");
    }
    // Every link a listener joined below strict is counted, and only those.
    let counted: u64 = metrics.iter().map(|m| m.links_below_strict).sum();
    assert_eq!(counted, sub_strict as u64, "{metrics:#?}");
    // Each node's dials and accepts are counted in its one snapshot.
    let dialed: u64 = metrics.iter().map(|m| m.links_dialed).sum();
    let accepted_links: u64 = metrics.iter().map(|m| m.links_accepted).sum();
    assert_eq!(dialed, accepted_links, "{metrics:#?}");
    assert_eq!(accepted_links, accepted.len() as u64, "{metrics:#?}");
    assert_eq!(tally.long_links_done.load(Ordering::SeqCst), 2 * long);
    assert!(joins.iter().all(|j| *j > 0), "{joins:?}");
    // The only handshakes the listeners gave up on: the two refusals at step 2.
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused.iter().all(|(node, _)| *node == 0), "{refused:#?}");

    // Dialed with the new settings: met the strict ones, over TLS. Dialed with the old:
    // accepted strict (step 0) or below strict in both ways, over plaintext.
    let both = BelowStrict {
        plaintext: true,
        without_secret: true,
    };
    for (tag, below, tls) in &accepted {
        if tag.contains(" v1 ") {
            assert_eq!((*below, *tls), (BelowStrict::default(), true), "{tag}");
        } else {
            assert!(
                !tls && (*below == both || !below.is_any()),
                "{tag}: {below}"
            );
        }
        // Long links dialed with the old settings after the listeners went permissive.
        if tag.starts_with('L') && tag.contains(" v0 step1 ") {
            assert_eq!(*below, both, "{tag}");
        }
        if tag.contains(" v0 step0 ") {
            assert_eq!(*below, BelowStrict::default(), "{tag}");
        }
    }
    assert!(sub_strict >= NODES.len() * (NODES.len() - 1) * LONG_PER_PAIR);
}
