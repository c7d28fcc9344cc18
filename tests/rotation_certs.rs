//! Certificate and CA rotation under traffic, three tokio nodes over 127.0.0.1, each
//! listening and linked to the other two, frames streaming both ways on every link the
//! whole time. Each node's files sit in a Kubernetes-style secret volume (`..data`
//! symlink swap); a `FileWatch` per node is checked and the new config given to the
//! listener and the node's dials. Asserted: every new link presents the NEW certificate
//! (its serial, seen from both ends), no link drops, every frame arrives in order, and
//! (CA rotation, with join probes running between all pairs throughout) no join fails.

mod rotation_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::{Reload, Settings};
use palisade_testkit::bounded;
use palisade_testkit::certs::{certs_pem, TestCa, TestIdentity};
use rotation_support::{
    finish_streams, probe_joins, serial_of, start_stream, toml_path, Node, Outcome, Tally, Volume,
};
use tokio::sync::{mpsc, watch};

const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];
const SECRET: &str = "certificate rotation test secret, 32 bytes or more";
/// Every node dials from 127.0.0.1, one source to admission control: its per-source
/// rate would refuse the join probes that a real cluster spreads over many addresses.
const LOOPBACK_LIMITS: &str =
    "new_connection_rate_per_source = 10000.0\nnew_connection_burst_per_source = 10000\n";
const BOUND: Duration = Duration::from_secs(180);

struct Member {
    node: Node,
    volume: Volume,
    /// The certificate and key this node presents now, and its serial.
    identity: TestIdentity,
    serial: Vec<u8>,
    version: u32,
}

impl Member {
    /// Publishes a new set in the volume (the kubelet's swap).
    fn publish(&mut self, identity: &TestIdentity, bundle: &str) {
        self.version += 1;
        self.volume.publish(
            self.version,
            &[
                ("tls.crt", &identity.cert_pem()),
                ("tls.key", &identity.key_pem()),
                ("ca.crt", bundle),
            ],
        );
    }

    /// Publishes and takes a new set; new links present `identity` from now on.
    fn rotate(&mut self, identity: &TestIdentity, bundle: &str) {
        self.publish(identity, bundle);
        self.node.take();
        self.serial = serial_of(&identity.chain[0]);
        self.identity = identity.clone();
    }
}

struct Cluster {
    members: Vec<Member>,
    tally: Arc<Tally>,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    outcomes_rx: Option<mpsc::UnboundedReceiver<Outcome>>,
    links: usize,
}

fn bundle(cas: &[&TestCa]) -> String {
    certs_pem(&cas.iter().map(|ca| ca.cert.clone()).collect::<Vec<_>>())
}

impl Cluster {
    async fn start(name: &str, ca: &TestCa, bundle: &str) -> Self {
        let tally = Arc::new(Tally::default());
        let (stop, stopped) = watch::channel(false);
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let mut members = Vec::new();
        for id in IDS {
            let volume = Volume::new(&format!("{name}-{id}"), &["tls.crt", "tls.key", "ca.crt"]);
            std::fs::write(volume.path("secret"), format!("{SECRET}\n")).unwrap();
            let identity = ca.node(id);
            volume.publish(
                0,
                &[
                    ("tls.crt", &identity.cert_pem()),
                    ("tls.key", &identity.key_pem()),
                    ("ca.crt", bundle),
                ],
            );
            let toml = format!(
                "cluster_name = \"rotation\"\nnode_id = \"{id}\"\nshared_secret_file = {}\n\
                 tls_enabled = true\ntls_cert_file = {}\ntls_key_file = {}\ntls_ca_file = {}\n\
                 reload_interval = \"0\"\n{LOOPBACK_LIMITS}",
                toml_path(&volume.path("secret")),
                toml_path(&volume.path("tls.crt")),
                toml_path(&volume.path("tls.key")),
                toml_path(&volume.path("ca.crt")),
            );
            let settings = Settings::from_toml_str(&toml, None).unwrap();
            let node = Node::start(settings, &tally, &stopped, &outcomes).await;
            members.push(Member {
                node,
                volume,
                serial: serial_of(&identity.chain[0]),
                identity,
                version: 0,
            });
        }
        Self {
            members,
            tally,
            stop,
            stopped,
            outcomes,
            outcomes_rx: Some(outcomes_rx),
            links: 0,
        }
    }

    /// Dials a new streaming link between every ordered pair; each end must present
    /// the certificate its node holds now.
    async fn link_all(&mut self, round: &str) {
        let before = self.tally.accepted.lock().unwrap().len();
        for (i, from) in self.members.iter().enumerate() {
            for (j, to) in self.members.iter().enumerate() {
                if i == j {
                    continue;
                }
                let conn = match from.node.dial(&to.node).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // The acceptor's side of the story arrives through its hook.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let failures = self.tally.failures.lock().unwrap().clone();
                        panic!(
                            "{round}: {} -> {}: {e}\n{failures:#?}",
                            from.node.id, to.node.id
                        )
                    }
                };
                let presented = conn.peer().tls.as_ref().and_then(|t| t.serial());
                assert_eq!(
                    presented.as_ref(),
                    Some(&to.serial),
                    "{round}: {} presented an old certificate to {}",
                    to.node.id,
                    from.node.id
                );
                let name = format!("{round}: {} -> {}", from.node.id, to.node.id);
                start_stream(conn, name, &self.stopped, &self.outcomes, &self.tally);
                self.links += 1;
            }
        }
        // The acceptors saw each dialer's current certificate.
        let expected = before + self.members.len() * (self.members.len() - 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.tally.accepted.lock().unwrap().len() < expected {
            assert!(tokio::time::Instant::now() < deadline, "{round}: accepts");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let accepted = self.tally.accepted.lock().unwrap();
        for (acceptor, peer, serial) in &accepted[before..] {
            let dialer = self.members.iter().find(|m| &m.node.id == peer).unwrap();
            assert_eq!(
                serial.as_ref(),
                Some(&dialer.serial),
                "{round}: {peer} presented an old certificate to {acceptor}"
            );
        }
    }

    /// Stops the streams and asserts every direction of every link delivered all its
    /// frames in order. Returns the frames delivered.
    async fn finish(&mut self) -> u64 {
        let rx = self.outcomes_rx.take().unwrap();
        let (stop, _) = watch::channel(false);
        let stop = std::mem::replace(&mut self.stop, stop);
        finish_streams(stop, rx, self.links).await
    }

    fn assert_no_failures(&self) {
        let failures = self.tally.failures.lock().unwrap();
        assert!(failures.is_empty(), "failed joins: {failures:#?}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn certificates_replaced_by_symlink_swaps_under_traffic_drop_no_link() {
    bounded("certificate rotation", BOUND, || {
        runtime().block_on(async {
            let ca = TestCa::new("rotation CA");
            let ca_pem = bundle(&[&ca]);
            let mut cluster = Cluster::start("rot-certs", &ca, &ca_pem).await;
            cluster.link_all("start").await;
            const SWAPS: u32 = 3;
            for swap in 1..=SWAPS {
                for member in &mut cluster.members {
                    let renewed = ca.node(&member.node.id);
                    member.rotate(&renewed, &ca_pem);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                cluster.link_all(&format!("after swap {swap}")).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let frames = cluster.finish().await;
            cluster.assert_no_failures();
            for member in &cluster.members {
                let stats = member.node.watch.stats();
                assert_eq!((stats.reloads_ok, stats.reloads_failed), (SWAPS as u64, 0));
                assert!(stats.seconds_to_expiry.is_some_and(|s| s > 0));
                // The node's metrics saw the same reloads, and every link it dialed and
                // accepted (each node dials 2 peers per round: start + each swap).
                let metrics = member.node.metrics();
                assert_eq!(
                    (metrics.reloads_ok, metrics.reloads_failed),
                    (SWAPS as u64, 0)
                );
                assert_eq!(metrics.cert_expiry_seconds, stats.seconds_to_expiry);
                assert_eq!(metrics.links_dialed, 2 * (SWAPS as u64 + 1), "{metrics}");
            }
            let joins = cluster.links;
            eprintln!(
                "certificate rotation: 3 nodes, {SWAPS} symlink swaps per node; {} links \
                 ({} dialed after swaps), {frames} frames delivered in order, {joins} joins; \
                 lost: 0 links, 0 frames, 0 joins",
                cluster.links,
                cluster.links - 6,
            );
        })
    });
}

#[test]
fn a_ca_rotation_in_three_steps_fails_no_join_and_drops_no_link() {
    bounded("CA rotation", BOUND, || {
        runtime().block_on(async {
            let (old, new) = (TestCa::new("old CA"), TestCa::new("new CA"));
            let (old_only, both, new_only) =
                (bundle(&[&old]), bundle(&[&old, &new]), bundle(&[&new]));
            let mut cluster = Cluster::start("rot-ca", &old, &old_only).await;
            cluster.link_all("start").await;
            let key_ids = Arc::new(Mutex::new(Vec::new()));
            let mut probes = Vec::new();
            for from in &cluster.members {
                for to in &cluster.members {
                    if from.node.id != to.node.id {
                        probes.push(probe_joins(
                            &from.node,
                            &to.node,
                            Duration::from_millis(25),
                            &cluster.stopped,
                            &cluster.tally,
                            &key_ids,
                        ));
                    }
                }
            }
            let pause = || tokio::time::sleep(Duration::from_millis(150));

            // Step 1: the bundle holds both CAs, node by node (same certificates).
            for member in &mut cluster.members {
                let current = member.identity.clone();
                member.rotate(&current, &both);
                pause().await;
            }

            // Step 2: certificates from the new CA, node by node. Removing the old CA
            // first is refused: the node's own certificate would not verify.
            {
                let a = &mut cluster.members[0];
                let current = a.identity.clone();
                a.publish(&current, &new_only);
                match a.node.check() {
                    Reload::Refused { report } => {
                        let shown = report.to_string();
                        assert!(
                            shown.contains("tls_cert_file")
                                && shown.contains("not issued by any CA"),
                            "{shown}"
                        );
                    }
                    other => panic!("{other:?}"),
                }
            }
            for member in &mut cluster.members {
                let renewed = new.node(&member.node.id);
                member.rotate(&renewed, &both);
                pause().await;
            }
            cluster.link_all("new certificates").await;

            // Step 3: the old CA leaves the bundle, node by node.
            for member in &mut cluster.members {
                let current = member.identity.clone();
                member.rotate(&current, &new_only);
                pause().await;
            }
            cluster.link_all("old CA removed").await;
            pause().await;

            cluster.stop.send(true).unwrap();
            for probe in probes {
                probe.await.unwrap();
            }
            let frames = cluster.finish().await;
            cluster.assert_no_failures();
            let tally = &cluster.tally;
            let joins_ok = tally.joins_ok.load(std::sync::atomic::Ordering::Relaxed);
            assert!(joins_ok > 0);
            for member in &cluster.members {
                let stats = member.node.watch.stats();
                // Step 1, the refused shortcut (node-a only), step 2 and step 3.
                assert_eq!(stats.reloads_ok, 3, "{}", member.node.id);
            }
            eprintln!(
                "CA rotation: 3 nodes, 3 steps node by node; {} links kept streaming, \
                 {frames} frames delivered in order; {} joins ({joins_ok} probes during \
                 the rotation + {} links); lost: 0 links, 0 frames, {} failed joins",
                cluster.links,
                joins_ok as usize + cluster.links,
                cluster.links,
                tally
                    .joins_failed
                    .load(std::sync::atomic::Ordering::Relaxed)
                    + tally
                        .acceptor_failures
                        .load(std::sync::atomic::Ordering::Relaxed),
            );
        })
    });
}
