//! A 3-node openraft key-value store over palisade (mutual TLS against a cluster CA,
//! each node's certificate for its own IP address, a join secret), on loopback
//! addresses. Each scenario prints the writes committed and lost; the cut prints the
//! election time. The same scenario across network namespaces with veth pairs is
//! `tests/netns.rs` (when root and `ip` work; it says when they do not) and, with the kv
//! example as a user runs it, `integrations/openraft/netns.sh`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Vote};
use palisade::tokio::Dialer;
use palisade_openraft::PalisadeNetwork;
use support::*;

const SECRET: &str = "raft-test-secret-0123456789abcdefghij";
const SECRET_2: &str = "raft-test-secret-rotated-0123456789abcd";
const WRONG: &str = "not-the-cluster-secret-0123456789abcdef";

/// Bounds every scenario.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("the scenario ran past 120 s")
}

/// Starts nodes 1..=3 on `ips` with certificates for those addresses.
async fn cluster(pki: &Pki, ips: [&str; 3], ports: [u16; 3]) -> Vec<Node> {
    let secret = pki.secret("secret", SECRET);
    let mut nodes = Vec::new();
    for (i, (ip_text, port)) in ips.iter().zip(ports).enumerate() {
        let id = i as u64 + 1;
        let name = node_name(id);
        let (cert, key) = pki.issue(&name, ip(ip_text), "tls");
        let config = config(&name, &cert, &key, &pki.dir.join("ca.crt"), &secret, &[]);
        nodes.push(Node::start(id, ip(ip_text), port, config).await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_is_elected_writes_commit_and_a_wrong_secret_node_cannot_disturb() {
    bounded(async {
        let pki = Pki::new("intruder");
        let nodes = cluster(&pki, ["127.0.2.1", "127.0.2.2", "127.0.2.3"], [0; 3]).await;
        let (leader, took) = form(&nodes).await;
        let mut keys = Vec::new();
        for i in 0..20 {
            let key = format!("a{i}");
            assert!(
                write(&nodes, &[], &key, Duration::from_secs(10)).await,
                "{key}"
            );
            keys.push(key);
        }
        let lost = wait_applied(&nodes, &keys, Duration::from_secs(10)).await;
        println!(
            "formed: leader {leader} elected in {took:?}; writes committed {}, lost {}",
            keys.len(),
            lost.len()
        );
        assert!(lost.is_empty(), "lost {lost:?}");

        // Node 4: a certificate from the cluster CA, the wrong secret; it believes it is a
        // member (so it campaigns, term after term) and dials every node.
        let (term, log) = (nodes[0].term(), nodes[0].last_log_index());
        let wrong = pki.secret("wrong", WRONG);
        let (cert, key) = pki.issue("node-4", ip("127.0.2.4"), "tls");
        let config4 = config("node-4", &cert, &key, &pki.dir.join("ca.crt"), &wrong, &[]);
        let intruder = Node::start(4, ip("127.0.2.4"), 0, config4).await;
        let mut members: std::collections::BTreeMap<u64, BasicNode> =
            nodes.iter().map(Node::member).collect();
        members.insert(4, intruder.member().1);
        intruder.raft.initialize(members).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;

        let refused: u64 = nodes
            .iter()
            .map(|n| {
                let guard = n.server.lock().unwrap();
                let s = guard.as_ref().unwrap().listener().metrics().snapshot();
                s.joins_refused.values().sum::<u64>()
            })
            .sum();
        println!(
            "intruder: its term went to {}, the cluster's stayed {term} (now {}); joins \
             refused {refused}; cluster log {log:?} -> {:?}",
            intruder.term(),
            nodes[0].term(),
            nodes[0].last_log_index()
        );
        // Its first election is term 1; every later one failed too.
        assert!(intruder.term() > 1, "the intruder never campaigned again");
        assert!(refused > 0, "no join of the intruder was refused");
        for n in &nodes {
            assert_eq!(n.term(), term, "node {} term moved", n.id);
            assert_eq!(n.last_log_index(), log, "node {} log moved", n.id);
            assert!(n.sm.get("intruder").is_none());
        }
        assert_eq!(nodes[0].leader(), Some(leader));
        assert!(write(&nodes, &[], "after-intruder", Duration::from_secs(10)).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_leader_elects_another_and_no_write_is_lost() {
    bounded(async {
        println!(
            "cluster on loopback 127.0.0.1-3 (the leader's port and links closed); the \
             namespace run (veth, `ip link set down`) is tests/netns.rs"
        );
        let pki = Pki::new("cut");
        let nodes = cluster(&pki, ["127.0.0.1", "127.0.0.2", "127.0.0.3"], [0; 3]).await;
        let (old, _) = form(&nodes).await;
        let mut committed = Vec::new();
        let mut failed = 0;
        let (ok, bad) = batch(&nodes, &[], "before").await;
        committed.extend(ok);
        failed += bad;

        let cut = nodes.iter().find(|n| n.id == old).unwrap();
        let cut_at = Instant::now();
        cut.cut().await;
        let new = wait_leader(&nodes, &[old], Duration::from_secs(20)).await;
        let election = cut_at.elapsed();
        assert_ne!(new, old);
        let (ok, bad) = batch(&nodes, &[old], "during").await;
        committed.extend(ok);
        failed += bad;

        let idx = nodes.iter().position(|n| n.id == old).unwrap();
        let addr: std::net::SocketAddr = nodes[idx].addr.parse().unwrap();
        let name = node_name(old);
        let dir = pki.dir.join(&name);
        let config = config(
            &name,
            &dir.join("tls.crt"),
            &dir.join("tls.key"),
            &pki.dir.join("ca.crt"),
            &pki.dir.join("secret"),
            &[],
        );
        assert_eq!(addr.ip(), nodes[idx].ip);
        nodes[idx].restore(config).await;
        let (ok, bad) = batch(&nodes, &[], "after").await;
        committed.extend(ok);
        failed += bad;

        // Every committed write reaches every node, the old leader included.
        let lost = wait_applied(&nodes, &committed, Duration::from_secs(30)).await;
        println!(
            "cut: leader {old} cut, node {new} elected {election:?} after the cut; writes \
             committed {}, failed {failed}, lost {}; old leader caught up to {} keys",
            committed.len(),
            lost.len(),
            nodes[idx].sm.data().len()
        );
        assert!(lost.is_empty(), "lost {lost:?}");
        assert_eq!(failed, 0, "writes failed");
        let first = nodes[0].sm.data();
        assert!(
            nodes.iter().all(|n| n.sm.data() == first),
            "state machines differ"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_the_secret_rotate_live_with_zero_failed_writes() {
    bounded(async {
        let pki = Pki::new("rotate");
        let nodes = Arc::new(cluster(&pki, ["127.0.3.1", "127.0.3.2", "127.0.3.3"], [0; 3]).await);
        form(&nodes).await;
        let (old, new) = (pki.dir.join("secret"), pki.secret("secret-2", SECRET_2));
        let ca = pki.dir.join("ca.crt");

        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let writer = {
            let (nodes, stop, ok, failed) =
                (nodes.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut keys = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("r{i}");
                    i += 1;
                    if write(&nodes, &[], &key, Duration::from_secs(10)).await {
                        ok.fetch_add(1, Ordering::SeqCst);
                        keys.push(key);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                keys
            })
        };
        // Each step on every node, then every link re-joined on it, writes running.
        let step = |secret: &std::path::Path, accepted: &[&std::path::Path], tag: &str| {
            for n in nodes.iter() {
                let name = node_name(n.id);
                let (cert, key) = pki.issue(&name, n.ip, tag);
                n.reconfigure(config(&name, &cert, &key, &ca, secret, accepted));
            }
        };
        let rejoin = || async {
            for n in nodes.iter() {
                n.net.reconnect().await;
            }
            tokio::time::sleep(Duration::from_millis(700)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        step(&old, &[&new], "tls-a"); // new certificates; the new secret accepted
        rejoin().await;
        step(&new, &[&old], "tls-b"); // the new secret is primary
        rejoin().await;
        step(&new, &[], "tls-c"); // the old secret gone
        rejoin().await;
        let joins_before: u64 = nodes
            .iter()
            .map(|n| n.net.dialer().metrics().snapshot().joins_ok)
            .sum();
        rejoin().await;
        let joins_after: u64 = nodes
            .iter()
            .map(|n| n.net.dialer().metrics().snapshot().joins_ok)
            .sum();
        stop.store(true, Ordering::SeqCst);
        let keys = writer.await.unwrap();
        let lost = wait_applied(&nodes, &keys, Duration::from_secs(20)).await;
        println!(
            "rotation: certificates rotated 3 times, secret rotated (add, switch, remove); \
             writes committed {}, failed {}, lost {}; joins with only the new secret {}",
            ok.load(Ordering::SeqCst),
            failed.load(Ordering::SeqCst),
            lost.len(),
            joins_after - joins_before
        );
        assert!(ok.load(Ordering::SeqCst) > 0);
        assert_eq!(
            failed.load(Ordering::SeqCst),
            0,
            "writes failed during the rotation"
        );
        assert!(lost.is_empty(), "lost {lost:?}");
        assert!(
            joins_after > joins_before,
            "no link re-joined on the new material"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_with_another_id_is_refused() {
    bounded(async {
        let pki = Pki::new("identity");
        let nodes = cluster(&pki, ["127.0.4.1", "127.0.4.2", "127.0.4.3"], [0; 3]).await;
        let name = node_name(1);
        let dir = pki.dir.join(&name);
        let cfg = config(
            &name,
            &dir.join("tls.crt"),
            &dir.join("tls.key"),
            &pki.dir.join("ca.crt"),
            &pki.dir.join("secret"),
            &[],
        );
        let mut net = PalisadeNetwork::<palisade_openraft::kv::KvConfig>::new(
            1,
            Dialer::from_config(cfg).unwrap(),
        )
        .peer_ids(|id| node_name(*id));
        let option = RPCOption::new(Duration::from_secs(5));
        // Node 3's membership entry points at node 2's address.
        let mut wrong = net.new_client(3, &BasicNode::new(&nodes[1].addr)).await;
        let err = wrong
            .vote(VoteRequest::new(Vote::new(1, 1), None), option.clone())
            .await
            .unwrap_err();
        println!("node 2 posing as node 3: {err}");
        assert!(
            matches!(err, openraft::error::RPCError::Unreachable(_)),
            "{err:?}"
        );
        // The right address answers.
        let mut right = net.new_client(2, &BasicNode::new(&nodes[1].addr)).await;
        right
            .vote(VoteRequest::new(Vote::new(1, 1), None), option)
            .await
            .unwrap();
    })
    .await;
}

/// Writes 20 keys `<tag>0..19`, each tried for up to 10 s; returns those committed and
/// the number that failed.
async fn batch(nodes: &[Node], except: &[u64], tag: &str) -> (Vec<String>, usize) {
    let mut ok = Vec::new();
    let mut bad = 0;
    for key in (0..20).map(|i| format!("{tag}{i}")) {
        if write(nodes, except, &key, Duration::from_secs(10)).await {
            ok.push(key);
        } else {
            bad += 1;
        }
    }
    (ok, bad)
}
