//! Write throughput of the 3-node kv store over palisade (mutual TLS, join secret) against
//! the same store over plain TCP (the same postcard frames, length-prefixed, one
//! connection per openraft client), measured in the same run: the ratio is the price of
//! palisade for Raft traffic. 64 writers keep writes in flight on the leader.
//!
//! `cargo bench -p palisade-openraft --bench kv` (10 samples, 5 s each side), or with
//! `PALISADE_BENCH_QUICK=1` (2 s each side).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use palisade_openraft::kv::{KvConfig, KvRaft, LogStore, Set, StateMachine};
use palisade_openraft::wire::{self, Request, Response};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const WRITERS: u64 = 64;

/// Plain TCP: a connection per client, one RPC at a time, `u32` length + the frame.
#[derive(Clone)]
struct TcpNet;

struct TcpClient {
    addr: String,
    conn: Mutex<Option<TcpStream>>,
}

type E = std::io::Error;

async fn write_frame(s: &mut TcpStream, frame: &[u8]) -> Result<(), E> {
    // One write per frame (header and body together), so the baseline pays one
    // syscall per message, not two.
    let mut buf = Vec::with_capacity(4 + frame.len());
    buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    buf.extend_from_slice(frame);
    s.write_all(&buf).await
}

async fn read_frame(s: &mut TcpStream) -> Result<Vec<u8>, E> {
    let mut len = [0; 4];
    s.read_exact(&mut len).await?;
    let mut buf = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

impl TcpClient {
    async fn call(&self, req: Request<KvConfig>) -> Result<Response<KvConfig>, NetworkError> {
        let net =
            |e: &dyn std::fmt::Display| NetworkError::new(&std::io::Error::other(e.to_string()));
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let s = TcpStream::connect(&self.addr).await.map_err(|e| net(&e))?;
            s.set_nodelay(true).map_err(|e| net(&e))?;
            *conn = Some(s);
        }
        let Some(s) = conn.as_mut() else {
            unreachable!()
        };
        let out = async {
            write_frame(s, &wire::encode(1, &req).map_err(std::io::Error::other)?).await?;
            read_frame(s).await
        }
        .await;
        match out {
            Ok(frame) => wire::decode(&frame).map(|(_, r)| r).map_err(|e| net(&e)),
            Err(e) => {
                *conn = None;
                Err(net(&e))
            }
        }
    }
}

impl RaftNetworkFactory<KvConfig> for TcpNet {
    type Network = TcpClient;
    async fn new_client(&mut self, _: u64, node: &BasicNode) -> TcpClient {
        TcpClient {
            addr: node.addr.clone(),
            conn: Mutex::new(None),
        }
    }
}

type R<T, Er = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, Er>>>;

impl RaftNetwork<KvConfig> for TcpClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<KvConfig>,
        _: RPCOption,
    ) -> R<AppendEntriesResponse<u64>> {
        match self.call(Request::AppendEntries(rpc)).await? {
            Response::AppendEntries(Ok(r)) => Ok(r),
            _ => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other("bad response"),
            ))),
        }
    }
    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<KvConfig>,
        _: RPCOption,
    ) -> R<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self.call(Request::InstallSnapshot(rpc)).await? {
            Response::InstallSnapshot(Ok(r)) => Ok(r),
            _ => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other("bad response"),
            ))),
        }
    }
    async fn vote(&mut self, rpc: VoteRequest<u64>, _: RPCOption) -> R<VoteResponse<u64>> {
        match self.call(Request::Vote(rpc)).await? {
            Response::Vote(Ok(r)) => Ok(r),
            _ => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other("bad response"),
            ))),
        }
    }
}

async fn serve_tcp(listener: TcpListener, raft: KvRaft) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let raft = raft.clone();
        tokio::spawn(async move {
            while let Ok(frame) = read_frame(&mut s).await {
                let Ok((id, req)) = wire::decode::<Request<KvConfig>>(&frame) else {
                    break;
                };
                let resp = match req {
                    Request::AppendEntries(r) => {
                        Response::<KvConfig>::AppendEntries(raft.append_entries(r).await)
                    }
                    Request::Vote(r) => Response::Vote(raft.vote(r).await),
                    Request::InstallSnapshot(r) => {
                        Response::InstallSnapshot(raft.install_snapshot(r).await)
                    }
                };
                let Ok(frame) = wire::encode(id, &resp) else {
                    break;
                };
                if write_frame(&mut s, &frame).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Three plain-TCP nodes on 127.0.5.1-3; returns the leader.
async fn tcp_cluster() -> KvRaft {
    let mut rafts: Vec<KvRaft> = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = TcpListener::bind(format!("127.0.5.{id}:0")).await.unwrap();
        members.insert(id, BasicNode::new(listener.local_addr().unwrap()));
        let raft = KvRaft::new(
            id,
            raft_config(),
            TcpNet,
            LogStore::default(),
            StateMachine::default(),
        )
        .await
        .unwrap();
        tokio::spawn(serve_tcp(listener, raft.clone()));
        rafts.push(raft);
    }
    rafts[0].initialize(members).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader = rafts
            .iter()
            .find(|r| r.metrics().borrow().state == openraft::ServerState::Leader);
        if let Some(leader) = leader {
            return leader.clone();
        }
        assert!(Instant::now() < deadline, "no plain-TCP leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three palisade nodes on 127.0.6.1-3; returns the nodes and the leader's index.
async fn palisade_cluster(pki: &Pki) -> (Vec<Node>, usize) {
    let secret = pki.secret("secret", "raft-bench-secret-0123456789abcdefghijkl");
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let name = node_name(id);
        let addr = ip(&format!("127.0.6.{id}"));
        let (cert, key) = pki.issue(&name, addr, "tls");
        let config = config(&name, &cert, &key, &pki.dir.join("ca.crt"), &secret, &[]);
        nodes.push(Node::start(id, addr, 0, config).await);
    }
    let (leader, _) = form(&nodes).await;
    let idx = nodes.iter().position(|n| n.id == leader).unwrap();
    (nodes, idx)
}

/// `iters` writes from `WRITERS` tasks; the time they took.
async fn writes(raft: &KvRaft, iters: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let raft = raft.clone();
        let n = iters / WRITERS + u64::from(w < iters % WRITERS);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let set = Set {
                    key: format!("{w}-{i}"),
                    value: "x".repeat(64),
                };
                raft.client_write(set).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pki = Pki::new("bench");
    let (nodes, leader) = rt.block_on(palisade_cluster(&pki));
    let tcp = rt.block_on(tcp_cluster());
    let mut g = c.benchmark_group("raft_kv_3_nodes_write");
    g.throughput(Throughput::Elements(1));
    let quick = std::env::var_os("PALISADE_BENCH_QUICK").is_some();
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(if quick { 500 } else { 1000 }))
        .measurement_time(Duration::from_secs(if quick { 2 } else { 5 }));
    g.bench_function("plain_tcp", |b| {
        b.iter_custom(|iters| rt.block_on(writes(&tcp, iters)))
    });
    g.bench_function("palisade_mtls_secret", |b| {
        b.iter_custom(|iters| rt.block_on(writes(&nodes[leader].raft, iters)))
    });
    g.finish();
    drop(nodes);
}

criterion_group!(benches, bench);
criterion_main!(benches);
