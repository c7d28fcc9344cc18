//! A shared-secret rotation across three tokio nodes through its three steps (add the
//! new secret as accepted everywhere → make it primary everywhere → remove the old),
//! each step applied node by node by changing file CONTENTS only (the settings name
//! `shared_secret_file` and one `accepted_secret_files` entry throughout), taken by each
//! node's `FileWatch` and given to its listener and its dials, while join probes run
//! continuously between all pairs. Asserted: zero failed joins, and the key id joins
//! use after each step. 127.0.0.1, plaintext with the secret, bounded.

mod rotation_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::settings::key_id_of;
use palisade::{Config, KeyId, RejectCode, Reload, Settings, SharedSecret};
use palisade_testkit::bounded;
use rotation_support::{probe_joins, toml_path, Node, Tally, Volume};
use tokio::sync::{mpsc, watch};

const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];
const OLD: &str = "the old cluster secret, at least 32 bytes long";
const NEW: &str = "the new cluster secret, at least 32 bytes long too";

/// All dials come from 127.0.0.1: one source to admission control and to the replay
/// cache, which a real cluster spreads over its nodes' addresses.
const LOOPBACK_LIMITS: &str = "new_connection_rate_per_source = 10000.0\n\
     new_connection_burst_per_source = 10000\nreplay_cache_per_source = 16384\n";

struct Member {
    node: Node,
    current: PathBuf,
    accepted: PathBuf,
}

impl Member {
    /// Rewrites the secret files in place (as an operator or a config tool would).
    fn write(&self, current: Option<&str>, accepted: Option<&str>) {
        if let Some(text) = current {
            std::fs::write(&self.current, format!("{text}\n")).unwrap();
        }
        if let Some(text) = accepted {
            std::fs::write(&self.accepted, format!("{text}\n")).unwrap();
        }
    }
}

/// Joins every ordered pair once; each join must use `expected`'s key id.
async fn assert_joins_use(members: &[Member], expected: &str, step: &str) {
    for from in members {
        for to in members {
            if from.node.id == to.node.id {
                continue;
            }
            let conn = from
                .node
                .dial(&to.node)
                .await
                .unwrap_or_else(|e| panic!("{step}: {} -> {}: {e}", from.node.id, to.node.id));
            assert_eq!(
                conn.peer().key_id,
                Some(key_id_of(expected)),
                "{step}: {} -> {}",
                from.node.id,
                to.node.id
            );
            conn.close(palisade::CloseReason::default()).await;
        }
    }
}

#[test]
fn a_secret_rotation_in_three_steps_by_file_contents_fails_no_join() {
    bounded("secret rotation", Duration::from_secs(180), || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Removed when the test ends, passed or not.
            let dir = Volume::new("rot-secrets", &[]);
            let tally = Arc::new(Tally::default());
            let (stop, stopped) = watch::channel(false);
            let (outcomes, _outcomes) = mpsc::unbounded_channel();
            let mut members = Vec::new();
            for id in IDS {
                let at = dir.path(id);
                std::fs::create_dir_all(&at).unwrap();
                let (current, accepted) = (at.join("shared-secret"), at.join("accepted-secret"));
                std::fs::write(&current, format!("{OLD}\n")).unwrap();
                std::fs::write(&accepted, "").unwrap();
                let toml = format!(
                    "cluster_name = \"rotation\"\nnode_id = \"{id}\"\n\
                     shared_secret_file = {}\naccepted_secret_files = [{}]\n\
                     reload_interval = \"0\"\n{LOOPBACK_LIMITS}",
                    toml_path(&current),
                    toml_path(&accepted),
                );
                let settings = Settings::from_toml_str(&toml, None).unwrap();
                let node = Node::start(settings, &tally, &stopped, &outcomes).await;
                members.push(Member { node, current, accepted });
            }
            let key_ids: Arc<Mutex<Vec<Option<KeyId>>>> = Arc::default();
            let mut probes = Vec::new();
            for from in &members {
                for to in &members {
                    if from.node.id != to.node.id {
                        probes.push(probe_joins(&from.node, &to.node, Duration::from_millis(10), &stopped, &tally, &key_ids));
                    }
                }
            }
            let pause = || tokio::time::sleep(Duration::from_millis(150));
            assert_joins_use(&members, OLD, "start").await;

            // Step 1: the new secret accepted everywhere, node by node.
            for member in &mut members {
                member.write(None, Some(NEW));
                member.node.take();
                pause().await;
            }
            assert_joins_use(&members, OLD, "step 1").await;

            // Step 2: the new secret primary everywhere, the old one accepted. Half
            // done (both files hold the new secret) is refused and the node keeps the
            // step 1 set; done, it is taken.
            {
                let a = &mut members[0];
                a.write(Some(NEW), None);
                match a.node.check() {
                    Reload::Refused { report } => {
                        let shown = report.to_string();
                        assert!(shown.contains("accepted_secret_files") && shown.contains("already in the keyring"), "{shown}");
                    }
                    other => panic!("{other:?}"),
                }
                pause().await;
            }
            for member in &mut members {
                member.write(Some(NEW), Some(OLD));
                member.node.take();
                pause().await;
            }
            assert_joins_use(&members, NEW, "step 2").await;

            // Step 3: the old secret removed everywhere (the accepted file emptied).
            for member in &mut members {
                member.write(None, Some(""));
                member.node.take();
                pause().await;
            }
            assert_joins_use(&members, NEW, "step 3").await;

            stop.send(true).unwrap();
            for probe in probes {
                probe.await.unwrap();
            }
            let failures = tally.failures.lock().unwrap().clone();
            assert!(failures.is_empty(), "failed joins: {failures:#?}");
            let lost = tally.joins_failed.load(Ordering::Relaxed)
                + tally.acceptor_failures.load(Ordering::Relaxed);
            let stats: Vec<_> = members.iter().map(|m| m.node.watch.stats()).collect();
            assert_eq!((stats[0].reloads_ok, stats[0].reloads_failed), (3, 1));
            assert_eq!((stats[1].reloads_ok, stats[1].reloads_failed), (3, 0));

            // The old secret is gone: a node still holding only it is refused.
            let stale = Config::new("rotation", "stale")
                .with_secret(SharedSecret::new(OLD.as_bytes().to_vec()).unwrap());
            let refused = palisade::tokio::connect(&members[0].node.addr, stale).await;
            assert_eq!(refused.err().and_then(|e| e.reject_code()), Some(RejectCode::UnknownKey));

            let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
            for id in key_ids.lock().unwrap().iter() {
                let name = match id {
                    Some(id) if *id == key_id_of(OLD) => "old",
                    Some(id) if *id == key_id_of(NEW) => "new",
                    _ => "other",
                };
                *by_key.entry(name.into()).or_default() += 1;
            }
            assert!(!by_key.contains_key("other"), "{by_key:?}");
            let probes_ok = tally.joins_ok.load(Ordering::Relaxed);
            eprintln!(
                "secret rotation: 3 nodes, 3 steps node by node (plus one half-done step refused); \
                 {} joins during the rotation ({probes_ok} probes by key id {by_key:?} + 24 checked \
                 rounds); lost: {lost} failed joins",
                probes_ok + 24,
            );
        })
    });
}
