//! A 3-node key-value store on openraft over palisade: mutual TLS against a cluster CA
//! and a join secret, one process per node, each started from its palisade settings file
//! (as `palisade certs init` writes them). See `integrations/openraft/README.md`.
//!
//! ```text
//! kv --config DIR/node-1/palisade.toml --id 1 \
//!    --peers 1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403 --init \
//!    [--write-every 50ms-as-50] [--write-for 20] [--run-for 30] [--out PREFIX]
//! ```
//!
//! Raft node `N` is palisade node id `node-N`: each dial expects that id. The node
//! listens on the settings' `listen`, dials from its IP, watches its certificate, key, CA
//! and secret files (`reload_interval`) and moves its listener and dials onto new ones
//! live. With `--write-every MS` it writes `N-<seq>` every MS milliseconds while it is the
//! leader (for `--write-for` seconds); every second it prints one status line. With
//! `--out PREFIX` it writes at exit the keys it saw committed (`PREFIX.acked`) and the keys
//! its state machine holds (`PREFIX.keys`), one a line, so a script can count lost writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use openraft::{BasicNode, ServerState};
use palisade::tokio::{Dialer, Listener};
use palisade::{Endpoint, FileWatch, Reload, Settings, WatchEvent};
use palisade_openraft::kv::{KvRaft, LogStore, Set, StateMachine};
use palisade_openraft::{PalisadeNetwork, RaftServer};

#[derive(Debug, Default)]
struct Args {
    config: PathBuf,
    id: u64,
    peers: BTreeMap<u64, BasicNode>,
    init: bool,
    write_every: Option<Duration>,
    write_for: Option<Duration>,
    run_for: Option<Duration>,
    out: Option<PathBuf>,
}

fn usage(why: &str) -> ! {
    eprintln!(
        "kv: {why}\nusage: kv --config FILE --id N --peers 1=HOST:PORT,2=...,3=... [--init] \
         [--write-every MS] [--write-for SECS] [--run-for SECS] [--out PREFIX]"
    );
    std::process::exit(2)
}

fn parse() -> Args {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    let secs = |v: String| Duration::from_secs_f64(v.parse().unwrap_or_else(|_| usage(&v)));
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--config" => args.config = value().into(),
            "--id" => {
                args.id = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--id is a number"))
            }
            "--peers" => {
                for peer in value().split(',') {
                    let (id, addr) = peer.split_once('=').unwrap_or_else(|| usage(peer));
                    let id = id.parse().unwrap_or_else(|_| usage(peer));
                    args.peers.insert(id, BasicNode::new(addr));
                }
            }
            "--init" => args.init = true,
            "--write-every" => {
                let ms = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--write-every is ms"));
                args.write_every = Some(Duration::from_millis(ms));
            }
            "--write-for" => args.write_for = Some(secs(value())),
            "--run-for" => args.run_for = Some(secs(value())),
            "--out" => args.out = Some(value().into()),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if args.config.as_os_str().is_empty() || args.id == 0 || args.peers.is_empty() {
        usage("--config, --id and --peers are required");
    }
    args
}

#[tokio::main]
async fn main() {
    let args = parse();
    let (settings, loaded) = Settings::load_checked(&args.config, SystemTime::now());
    let Some(config) = loaded.config else {
        eprintln!("{}", loaded.report);
        std::process::exit(1)
    };
    let listen = settings
        .listen
        .clone()
        .unwrap_or_else(|| usage("the settings file has no `listen`"));
    let endpoint = Endpoint::new(config).unwrap_or_else(|e| usage(&e.to_string()));
    let listener =
        Listener::bind_with_limits(listen.as_str(), endpoint.clone(), None, loaded.limits)
            .await
            .unwrap_or_else(|e| usage(&format!("listen {listen}: {e}")));
    let dialer = Dialer::with_metrics(endpoint, listener.metrics().clone());
    let mut net = PalisadeNetwork::new(args.id, dialer.clone()).peer_ids(|id| format!("node-{id}"));
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        if !addr.ip().is_unspecified() {
            net = net.source_addr(addr.ip());
        }
    }
    let raft_config = openraft::Config {
        cluster_name: settings.cluster_name.clone(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..Default::default()
    };
    let sm = StateMachine::default();
    let raft = KvRaft::new(
        args.id,
        Arc::new(
            raft_config
                .validate()
                .unwrap_or_else(|e| usage(&e.to_string())),
        ),
        net.clone(),
        LogStore::default(),
        sm.clone(),
    )
    .await
    .unwrap_or_else(|e| usage(&e.to_string()));
    let server = Arc::new(RaftServer::start(listener, raft.clone()));

    // New certificates, keys, CA or secret: the next joins use them, both directions.
    // The node's outgoing links then re-join at once, so the new set is proven now
    // rather than at the next broken link.
    let (reloading, dials, relinks) = (Arc::clone(&server), dialer.clone(), net.clone());
    let runtime = tokio::runtime::Handle::current();
    let _watch = FileWatch::new(settings).spawn(move |event| match event {
        WatchEvent::Reload(Reload::Reloaded { config, .. }) => {
            let a = reloading.listener().reconfigure(config.clone());
            let b = dials.reconfigure(config);
            println!(
                "reload taken at {}: listener {a:?}, dialer {b:?}",
                unix_ms()
            );
            let net = relinks.clone();
            runtime.spawn(async move { net.reconnect().await });
        }
        WatchEvent::Reload(Reload::Refused { report }) => println!("reload refused:\n{report}"),
        other => println!("{other:?}"),
    });

    if args.init {
        match raft.initialize(args.peers.clone()).await {
            Ok(()) => println!("node {}: cluster initialized", args.id),
            Err(e) => println!("node {}: not initialized ({e})", args.id),
        }
    }
    run(&args, &raft, &sm).await;
}

async fn run(args: &Args, raft: &KvRaft, sm: &StateMachine) {
    let start = Instant::now();
    let (mut acked, mut failed, mut seq) = (Vec::new(), 0u64, 0u64);
    let mut next_status = start;
    let mut leader = None;
    loop {
        let now = Instant::now();
        let seen = raft.metrics().borrow().current_leader;
        if seen != leader {
            println!("leader changed to {seen:?} at {}", unix_ms());
            leader = seen;
        }
        if args.run_for.is_some_and(|d| now - start >= d) {
            break;
        }
        if now >= next_status {
            let m = raft.metrics().borrow().clone();
            println!(
                "node={} state={:?} term={} leader={:?} applied={:?} keys={} acked={} failed={failed}",
                args.id,
                m.state,
                m.current_term,
                m.current_leader,
                m.last_applied.map(|l| l.index),
                sm.data().len(),
                acked.len()
            );
            next_status = now + Duration::from_secs(1);
        }
        let writing = args.write_every.is_some()
            && args.write_for.is_none_or(|d| now - start < d)
            && raft.metrics().borrow().state == ServerState::Leader;
        if writing {
            seq += 1;
            let key = format!("{}-{seq}", args.id);
            let set = Set {
                key: key.clone(),
                value: format!("written by node {}", args.id),
            };
            match tokio::time::timeout(Duration::from_secs(5), raft.client_write(set)).await {
                Ok(Ok(_)) => acked.push(key),
                _ => {
                    failed += 1;
                    println!("write failed {key} at {}", unix_ms());
                }
            }
        }
        tokio::time::sleep(args.write_every.unwrap_or(Duration::from_millis(100))).await;
    }
    if let Some(out) = &args.out {
        let lines = |keys: Vec<String>| keys.iter().map(|k| format!("{k}\n")).collect::<String>();
        let keys: Vec<String> = sm.data().into_keys().collect();
        let with = |ext: &str| PathBuf::from(format!("{}.{ext}", out.display()));
        std::fs::write(with("acked"), lines(acked)).unwrap_or_else(|e| usage(&e.to_string()));
        std::fs::write(with("keys"), lines(keys)).unwrap_or_else(|e| usage(&e.to_string()));
    }
    let _ = raft.shutdown().await;
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}
