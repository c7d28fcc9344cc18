//! The cluster tests' (and the bench's) parts: a cluster CA made with rcgen the way
//! `palisade certs init` makes one, node settings files, and kv nodes over palisade.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, ServerState};
use palisade::tokio::{Dialer, Listener};
use palisade::{Config, Settings};
use palisade_openraft::kv::{KvConfig, KvRaft, LogStore, Set, StateMachine};
use palisade_openraft::{Backoff, PalisadeNetwork, RaftServer};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A cluster CA and a folder for its files (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("palisade-raft-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} cluster CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
        Self {
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    /// Issues `node`'s certificate (DNS name `node`, IP SAN `ip`) into `<node>/<tag>.crt`
    /// and `.key`; returns (cert, key) paths.
    pub fn issue(&self, node: &str, ip: IpAddr, tag: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![node.to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(ip));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let at = self.dir.join(node);
        std::fs::create_dir_all(&at).unwrap();
        let (c, k) = (at.join(format!("{tag}.crt")), at.join(format!("{tag}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Writes a secret file `name` holding `text`.
    pub fn secret(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A node's settings file, as an operator writes it (the keys `palisade certs init`
/// writes), loaded and checked the way a node loads it.
pub fn config(
    node: &str,
    cert: &Path,
    key: &Path,
    ca: &Path,
    secret: &Path,
    accepted: &[&Path],
) -> Config {
    let accepted: Vec<String> = accepted.iter().map(|p| q(p)).collect();
    let text = format!(
        "cluster_name = \"raft-test\"\nnode_id = {node:?}\nshared_secret_file = {}\n\
         accepted_secret_files = [{}]\ntls_enabled = true\ntls_trust = \"ca\"\n\
         tls_cert_file = {}\ntls_key_file = {}\ntls_ca_file = {}\n",
        q(secret),
        accepted.join(", "),
        q(cert),
        q(key),
        q(ca)
    );
    let settings = Settings::from_toml_str(&text, None).unwrap_or_else(|e| panic!("{e:?}"));
    let loaded = settings.build(std::time::SystemTime::now());
    loaded
        .config
        .unwrap_or_else(|| panic!("{node}: {}", loaded.report))
}

pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// Timings short enough for a test, long enough that a loaded 2-core CI machine running
/// debug builds does not miss heartbeats into a spurious election (which would move the
/// term that the intruder test checks).
pub fn raft_config() -> Arc<openraft::Config> {
    let c = openraft::Config {
        cluster_name: "raft-test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 800,
        election_timeout_max: 1600,
        ..Default::default()
    };
    Arc::new(c.validate().unwrap())
}

/// One kv node over palisade.
pub struct Node {
    pub id: u64,
    pub ip: IpAddr,
    pub addr: String,
    pub raft: KvRaft,
    pub sm: StateMachine,
    pub net: PalisadeNetwork<KvConfig>,
    pub server: std::sync::Mutex<Option<RaftServer>>,
}

impl Node {
    /// Binds `ip:port` (0: any port) and starts the Raft node, dialing from `ip`.
    pub async fn start(id: u64, ip: IpAddr, port: u16, config: Config) -> Self {
        let listener = bind(ip, port, &config).await;
        let addr = listener.local_addr().to_string();
        let dialer = Dialer::with_metrics(
            palisade::Endpoint::new(config).unwrap(),
            listener.metrics().clone(),
        );
        let net = PalisadeNetwork::new(id, dialer)
            .peer_ids(|id| node_name(*id))
            .source_addr(ip)
            .backoff(Backoff {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(500),
            });
        let sm = StateMachine::default();
        let raft = KvRaft::new(
            id,
            raft_config(),
            net.clone(),
            LogStore::default(),
            sm.clone(),
        )
        .await
        .unwrap();
        let server = RaftServer::start(listener, raft.clone());
        Self {
            id,
            ip,
            addr,
            raft,
            sm,
            net,
            server: std::sync::Mutex::new(Some(server)),
        }
    }

    pub fn member(&self) -> (u64, BasicNode) {
        (self.id, BasicNode::new(&self.addr))
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    pub fn last_log_index(&self) -> Option<u64> {
        self.raft.metrics().borrow().last_log_index
    }

    /// Cuts the node off: its port closed, every link it accepted or dialed closed, and
    /// its dials refused.
    pub async fn cut(&self) {
        drop(self.server.lock().unwrap().take());
        self.net.set_enabled(false).await;
    }

    /// Reopens its port (the same address) and its dials.
    pub async fn restore(&self, config: Config) {
        let addr: std::net::SocketAddr = self.addr.parse().unwrap();
        let listener = bind(addr.ip(), addr.port(), &config).await;
        *self.server.lock().unwrap() = Some(RaftServer::start(listener, self.raft.clone()));
        self.net.set_enabled(true).await;
    }

    /// New certificates or secrets for the next joins, both directions.
    pub fn reconfigure(&self, config: Config) {
        if let Some(s) = &*self.server.lock().unwrap() {
            s.listener().reconfigure(config.clone()).unwrap();
        }
        self.net.dialer().reconfigure(config).unwrap();
    }
}

/// Binds, retrying while the port of a just-stopped listener is still held.
async fn bind(ip: IpAddr, port: u16, config: &Config) -> Listener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Listener::bind((ip, port), config.clone()).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind {ip}:{port}: {e}"),
        }
    }
}

/// Initializes the cluster from `nodes[0]` and waits for a leader.
pub async fn form(nodes: &[Node]) -> (u64, Duration) {
    let members: BTreeMap<u64, BasicNode> = nodes.iter().map(Node::member).collect();
    let start = Instant::now();
    nodes[0].raft.initialize(members).await.unwrap();
    let leader = wait_leader(nodes, &[], Duration::from_secs(20)).await;
    (leader, start.elapsed())
}

/// Waits until the nodes not in `except` agree on a leader that is one of them.
pub async fn wait_leader(nodes: &[Node], except: &[u64], within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let live: Vec<&Node> = nodes.iter().filter(|n| !except.contains(&n.id)).collect();
        let leaders: Vec<Option<u64>> = live.iter().map(|n| n.leader()).collect();
        if let Some(Some(l)) = leaders.first() {
            if leaders.iter().all(|x| *x == Some(*l))
                && !except.contains(l)
                && live.iter().any(|n| n.id == *l && n.is_leader())
            {
                return *l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader among the live nodes within {within:?}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes `key`, trying the leader the nodes name (skipping `except`) until it commits or
/// `within` passes. Returns whether it committed.
pub async fn write(nodes: &[Node], except: &[u64], key: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let leader = nodes
            .iter()
            .filter(|n| !except.contains(&n.id))
            .find(|n| n.is_leader());
        if let Some(node) = leader {
            let set = Set {
                key: key.to_owned(),
                value: format!("v-{key}"),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok(_)) = tokio::time::timeout(left, node.raft.client_write(set)).await {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Waits until every node has applied every key in `keys`; returns the keys some node
/// still lacks after `within`.
pub async fn wait_applied(nodes: &[Node], keys: &[String], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| nodes.iter().any(|n| n.sm.get(k).is_none()))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn ip(last: &str) -> IpAddr {
    last.parse().unwrap()
}
