//! The 3-node kv store across three network namespaces joined by veth pairs and a
//! bridge, each node a process (this test binary re-run as `netns_node` inside
//! `ip netns exec`) with a certificate for its own 10.78.0.N address: a leader is elected
//! and writes commit; the leader's interface is cut (`ip link set eth0 down`) → a new
//! leader, writes go on → restored → it catches up, no write lost; certificates and the
//! secret rotate live while writes run, zero failed; a node 4 with a cluster-CA
//! certificate and the wrong secret moves neither term nor log. Without root or `ip`
//! it says so and returns: `tests/cluster.rs` runs the same scenario on loopback.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use support::*;

const PREFIX: &str = "@@ ";

fn sh(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The namespaces this test made, removed on drop (their veths go with them).
struct Net(Vec<String>);

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.0 {
            sh(&["netns", "del", ns]);
        }
    }
}

struct Proc {
    id: u64,
    child: Child,
    stdin: ChildStdin,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node's settings file.
fn settings_file(pki: &Pki, id: u64, secret: &Path, accepted: &Path, tag: &str) -> PathBuf {
    let name = node_name(id);
    let (cert, key) = pki.issue(&name, ip(&format!("10.78.0.{id}")), tag);
    let text = format!(
        "cluster_name = \"raft-test\"\nnode_id = {name:?}\nshared_secret_file = {:?}\n\
         accepted_secret_files = [{:?}]\ntls_enabled = true\ntls_trust = \"ca\"\n\
         tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_file = {:?}\n",
        secret.display().to_string(),
        accepted.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
        pki.dir.join("ca.crt").display().to_string()
    );
    let path = pki.dir.join(format!("{name}-{tag}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn cluster_across_network_namespaces() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    let probe = format!("pal-rp-{}", std::process::id());
    if root.ok() != Some(true) || !sh(&["netns", "add", &probe]) {
        println!("network namespaces unavailable (not root, or no `ip netns`): skipped; the same scenario runs on loopback in tests/cluster.rs");
        return;
    }
    sh(&["netns", "del", &probe]);
    let tag = std::process::id() % 100_000;
    let ns: Vec<String> = (0..=4).map(|i| format!("pal-r{tag}-{i}")).collect();
    let _net = Net(ns.clone());
    let bridge = &ns[0];
    assert!(sh(&["netns", "add", bridge]));
    assert!(sh(&["-n", bridge, "link", "add", "br0", "type", "bridge"]));
    assert!(sh(&["-n", bridge, "link", "set", "br0", "up"]));
    for (i, n) in ns.iter().enumerate().skip(1) {
        let (a, b) = (format!("pr{tag}a{i}"), format!("pr{tag}b{i}"));
        assert!(sh(&["netns", "add", n]));
        assert!(sh(&["link", "add", &a, "type", "veth", "peer", "name", &b]));
        assert!(sh(&["link", "set", &a, "netns", n, "name", "eth0"]));
        assert!(sh(&["link", "set", &b, "netns", bridge]));
        assert!(sh(&[
            "-n", bridge, "link", "set", &b, "master", "br0", "up"
        ]));
        assert!(sh(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("10.78.0.{i}/24"),
            "dev",
            "eth0"
        ]));
        assert!(sh(&["-n", n, "link", "set", "eth0", "up"]));
        assert!(sh(&["-n", n, "link", "set", "lo", "up"]));
    }

    let pki = Pki::new("netns");
    let secret = pki.secret("secret", "raft-netns-secret-0123456789abcdefghijkl");
    let accepted = pki.secret("accepted", "");
    let peers = "1=10.78.0.1:7401,2=10.78.0.2:7401,3=10.78.0.3:7401";
    let (tx, rx) = channel::<(u64, String)>();
    let spawn = |id: u64, config: &Path, peers: &str, init: bool| {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns[id as usize]])
            .arg(exe)
            .args(["--ignored", "--exact", "netns_node", "--nocapture"])
            .env("PAL_RAFT_ID", id.to_string())
            .env("PAL_RAFT_CONFIG", config)
            .env("PAL_RAFT_PEERS", peers)
            .env("PAL_RAFT_INIT", if init { "1" } else { "" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(msg) = line.strip_prefix(PREFIX) {
                    let _ = tx.send((id, msg.to_owned()));
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Proc { id, child, stdin }
    };
    let mut nodes: Vec<Proc> = (1..=3)
        .map(|id| {
            spawn(
                id,
                &settings_file(&pki, id, &secret, &accepted, "tls"),
                peers,
                id == 1,
            )
        })
        .collect();
    let mut s = Scenario {
        rx,
        leader: [None; 5],
        term: [0; 5],
        keys: Vec::new(),
        failed: 0,
    };

    let start = Instant::now();
    let leader = s.wait_leader(&[], Duration::from_secs(30));
    println!(
        "netns: leader {leader} elected {:?} after start",
        start.elapsed()
    );
    s.writes(&mut nodes, &[], "a", 20);

    let cut_at = Instant::now();
    assert!(sh(&[
        "-n",
        &ns[leader as usize],
        "link",
        "set",
        "eth0",
        "down"
    ]));
    let new = s.wait_leader(&[leader], Duration::from_secs(30));
    let election = cut_at.elapsed();
    s.writes(&mut nodes, &[leader], "b", 20);
    assert!(sh(&[
        "-n",
        &ns[leader as usize],
        "link",
        "set",
        "eth0",
        "up"
    ]));
    s.writes(&mut nodes, &[], "c", 20);
    let failed_cut = s.failed;

    // Rotation: new certificates everywhere, then the secret: add, switch, remove.
    let steps: [(&str, &[u8], &[u8]); 3] = [
        (
            "tls-a",
            b"raft-netns-secret-0123456789abcdefghijkl",
            b"raft-netns-secret-rotated-0123456789abcd",
        ),
        (
            "tls-b",
            b"raft-netns-secret-rotated-0123456789abcd",
            b"raft-netns-secret-0123456789abcdefghijkl",
        ),
        ("tls-c", b"raft-netns-secret-rotated-0123456789abcd", b""),
    ];
    for (tag, primary, extra) in steps {
        std::fs::write(&secret, primary).unwrap();
        std::fs::write(&accepted, extra).unwrap();
        for n in nodes.iter_mut() {
            let path = settings_file(&pki, n.id, &secret, &accepted, tag);
            writeln!(n.stdin, "rotate {}", path.display()).unwrap();
        }
        s.writes(&mut nodes, &[], tag, 15);
    }
    let failed_rotation = s.failed - failed_cut;

    // Node 4: a cluster-CA certificate, the wrong secret, campaigning.
    let term = s.term[1];
    let wrong = pki.secret("wrong", "not-the-cluster-secret-0123456789abcdef");
    let config4 = settings_file(&pki, 4, &wrong, &pki.secret("none", ""), "tls");
    nodes.push(spawn(
        4,
        &config4,
        &format!("{peers},4=10.78.0.4:7401"),
        true,
    ));
    std::thread::sleep(Duration::from_secs(5));
    s.drain();
    s.writes(&mut nodes, &[4], "d", 5);

    let committed = s.keys.clone();
    let mut lost = 0;
    for n in nodes.iter_mut().filter(|n| n.id <= 3) {
        let id = n.id;
        let deadline = Instant::now() + Duration::from_secs(20);
        let missing = loop {
            writeln!(n.stdin, "keys").unwrap();
            let have = s
                .expect(id, "keys ", Duration::from_secs(5))
                .unwrap_or_default();
            let have: std::collections::HashSet<&str> = have.split(',').collect();
            let missing = committed
                .iter()
                .filter(|k| !have.contains(k.as_str()))
                .count();
            if missing == 0 || Instant::now() > deadline {
                break missing;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        lost = lost.max(missing);
    }
    println!(
        "netns: leader {leader} cut, node {new} elected {election:?} after the cut; writes \
         committed {}, lost {lost}, failed {failed_cut} around the cut, {failed_rotation} \
         during the rotation; node 4's term {}, the cluster's {term} -> {}",
        committed.len(),
        s.term[4],
        s.term[1]
    );
    assert_eq!(lost, 0, "writes lost");
    assert_eq!(s.failed, 0, "writes failed");
    assert_eq!(s.term[1], term, "the intruder moved the cluster's term");
    // Its first election is term 1; every later one failed too.
    assert!(s.term[4] > 1, "the intruder never campaigned again");
}

struct Scenario {
    rx: Receiver<(u64, String)>,
    leader: [Option<u64>; 5],
    term: [u64; 5],
    keys: Vec<String>,
    failed: usize,
}

impl Scenario {
    fn note(&mut self, id: u64, msg: &str) {
        if let Some(rest) = msg.strip_prefix("state ") {
            // "state <term> <leader or ->"
            let mut it = rest.split(' ');
            self.term[id as usize] = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            self.leader[id as usize] = it.next().and_then(|l| l.parse().ok());
        }
    }

    fn drain(&mut self) {
        while let Ok((id, msg)) = self.rx.try_recv() {
            self.note(id, &msg);
        }
    }

    /// The next message from `id` starting with `what` (the rest of it).
    fn expect(&mut self, id: u64, what: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((from, msg)) => {
                    self.note(from, &msg);
                    if from == id {
                        if let Some(rest) = msg.strip_prefix(what) {
                            return Some(rest.to_owned());
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    fn wait_leader(&mut self, except: &[u64], within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            self.drain();
            let live: Vec<u64> = (1..=3).filter(|i| !except.contains(i)).collect();
            let first = self.leader[live[0] as usize];
            if let Some(l) = first {
                if !except.contains(&l) && live.iter().all(|i| self.leader[*i as usize] == Some(l))
                {
                    return l;
                }
            }
            assert!(Instant::now() < deadline, "no leader: {:?}", self.leader);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `n` writes through the leader among the nodes not in `except`, each retried on
    /// another leader for up to 15 s.
    fn writes(&mut self, nodes: &mut [Proc], except: &[u64], tag: &str, n: usize) {
        for i in 0..n {
            let key = format!("{tag}{i}");
            let deadline = Instant::now() + Duration::from_secs(15);
            let ok = loop {
                let leader = self.wait_leader(except, Duration::from_secs(15));
                let node = nodes.iter_mut().find(|p| p.id == leader).unwrap();
                writeln!(node.stdin, "write {key}").unwrap();
                if self
                    .expect(leader, &format!("ok {key}"), Duration::from_secs(5))
                    .is_some()
                {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
            };
            if ok {
                self.keys.push(key);
            } else {
                self.failed += 1;
                // Bounded: a cluster that lost its way fails the test, not the CI clock.
                assert!(self.failed <= 3, "writes keep failing; last {key}");
            }
        }
    }
}

/// One node, run by `cluster_across_network_namespaces` inside a namespace; it takes
/// commands on stdin (`write K`, `keys`, `rotate FILE`) and reports on stdout.
#[test]
#[ignore = "a node process of cluster_across_network_namespaces"]
fn netns_node() {
    let Ok(id) = std::env::var("PAL_RAFT_ID") else {
        return;
    };
    let id: u64 = id.parse().unwrap();
    let config_path = std::env::var("PAL_RAFT_CONFIG").unwrap();
    let peers = std::env::var("PAL_RAFT_PEERS").unwrap();
    let init = std::env::var("PAL_RAFT_INIT").is_ok_and(|v| v == "1");
    let load = |path: &str| {
        let settings = palisade::Settings::load(path).unwrap();
        settings.build(std::time::SystemTime::now()).config.unwrap()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let node = Node::start(id, ip(&format!("10.78.0.{id}")), 7401, load(&config_path)).await;
        if init {
            let members = peers
                .split(',')
                .map(|p| {
                    let (i, a) = p.split_once('=').unwrap();
                    (i.parse::<u64>().unwrap(), openraft::BasicNode::new(a))
                })
                .collect::<std::collections::BTreeMap<_, _>>();
            node.raft.initialize(members).await.unwrap();
        }
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut metrics = node.raft.metrics();
        loop {
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() { return; }
                    let m = metrics.borrow().clone();
                    let leader = m.current_leader.map_or("-".to_owned(), |l| l.to_string());
                    println!("{PREFIX}state {} {leader}", m.current_term);
                }
                line = lines.recv() => {
                    let Some(line) = line else { return };
                    if let Some(key) = line.strip_prefix("write ") {
                        let set = palisade_openraft::kv::Set { key: key.into(), value: "v".into() };
                        let raft = node.raft.clone();
                        let key = key.to_owned();
                        tokio::spawn(async move {
                            let r = tokio::time::timeout(Duration::from_secs(4), raft.client_write(set)).await;
                            if matches!(r, Ok(Ok(_))) { println!("{PREFIX}ok {key}"); }
                        });
                    } else if line == "keys" {
                        let keys: Vec<String> = node.sm.data().into_keys().collect();
                        println!("{PREFIX}keys {}", keys.join(","));
                    } else if let Some(path) = line.strip_prefix("rotate ") {
                        node.reconfigure(load(path));
                        node.net.reconnect().await;
                    }
                }
            }
        }
    });
}
