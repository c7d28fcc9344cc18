//! The dialing side: openraft's [`RaftNetworkFactory`] and [`RaftNetwork`] over palisade.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftTypeConfig};
use palisade::tokio::{Dial, Dialer};

use crate::link::{Backoff, CallError, PeerLink};
use crate::wire::{self, Request, Response};

/// Where a node listens, read from openraft's membership entry for it.
pub trait PeerAddr {
    /// `host:port` to dial (an IP address or a name the peer's certificate holds).
    fn peer_addr(&self) -> &str;
}

impl PeerAddr for BasicNode {
    fn peer_addr(&self) -> &str {
        &self.addr
    }
}

type PeerId<C> = dyn Fn(&<C as RaftTypeConfig>::NodeId) -> String + Send + Sync;

struct Shared<C: RaftTypeConfig> {
    me: C::NodeId,
    dialer: Dialer,
    peer_id: Box<PeerId<C>>,
    backoff: Backoff,
    connect_timeout: Duration,
    source: Option<IpAddr>,
    enabled: Arc<AtomicBool>,
    links: Mutex<HashMap<C::NodeId, Arc<PeerLink>>>,
}

/// openraft's network factory over palisade: one link per peer, shared by every client
/// openraft makes for that peer, dialed through `dialer` (so `Dialer::reconfigure`
/// rotates certificates and secrets for the next dials while joined links stay up).
///
/// Each dial expects the target's palisade node id (by default the Raft node id in
/// decimal, see [`PalisadeNetwork::peer_ids`]): a node answering at that address with
/// another id is refused during the join, before any RPC is sent.
pub struct PalisadeNetwork<C: RaftTypeConfig> {
    shared: Arc<Shared<C>>,
}

impl<C: RaftTypeConfig> Clone for PalisadeNetwork<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for PalisadeNetwork<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PalisadeNetwork")
            .field("me", &self.shared.me)
            .field("dialer", &self.shared.dialer)
            .field("backoff", &self.shared.backoff)
            .finish()
    }
}

impl<C: RaftTypeConfig> PalisadeNetwork<C> {
    /// The network of node `me`, dialing with `dialer`.
    pub fn new(me: C::NodeId, dialer: Dialer) -> Self {
        Self {
            shared: Arc::new(Shared {
                me,
                dialer,
                peer_id: Box::new(|id| id.to_string()),
                backoff: Backoff::default(),
                connect_timeout: Duration::from_secs(1),
                source: None,
                enabled: Arc::new(AtomicBool::new(true)),
                links: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Shared<C>)) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => f(shared),
            None => tracing::warn!("PalisadeNetwork builder called on a shared network; ignored"),
        }
        self
    }

    /// How a Raft node id maps to the palisade node id its peer must prove (its
    /// `node_id` setting), e.g. `|id| format!("raft-{id}")`. Call before cloning.
    pub fn peer_ids(self, f: impl Fn(&C::NodeId) -> String + Send + Sync + 'static) -> Self {
        self.edit(|s| s.peer_id = Box::new(f))
    }

    /// How often a broken link is dialed again. Call before cloning.
    pub fn backoff(self, backoff: Backoff) -> Self {
        self.edit(|s| s.backoff = backoff)
    }

    /// The TCP connect timeout of each dial (default 1 s). Call before cloning.
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.edit(|s| s.connect_timeout = timeout)
    }

    /// Dials from `ip` (the node's own address on a multi-homed host, so peers see
    /// and rate-limit the address it listens on). Call before cloning.
    pub fn source_addr(self, ip: IpAddr) -> Self {
        self.edit(|s| s.source = Some(ip))
    }

    /// The dialer, to `reconfigure` it.
    pub fn dialer(&self) -> &Dialer {
        &self.shared.dialer
    }

    /// Switches this node's outgoing Raft traffic off (every link closed, every RPC
    /// answered `Unreachable`) or on again: maintenance, and tests that cut a node off.
    pub async fn set_enabled(&self, on: bool) {
        self.shared.enabled.store(on, Ordering::SeqCst);
        if !on {
            self.reconnect().await;
        }
    }

    /// Closes every joined link; the next RPC to each peer dials again at once. After
    /// a rotation (`dialer().reconfigure(..)` everywhere), this moves the node's
    /// outgoing links onto the new certificates and secret now rather than when they
    /// next break. RPCs in flight fail and openraft retries them.
    pub async fn reconnect(&self) {
        for link in self.all_links() {
            link.disconnect().await;
        }
    }

    fn all_links(&self) -> Vec<Arc<PeerLink>> {
        match self.shared.links.lock() {
            Ok(l) => l.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn link(&self, target: &C::NodeId, addr: &str) -> Arc<PeerLink> {
        let s = &self.shared;
        let make = || {
            let dial = Dial::new(addr)
                .expect_peer((s.peer_id)(target))
                .connect_timeout(s.connect_timeout);
            Arc::new(PeerLink::new(
                dial,
                s.source,
                s.dialer.clone(),
                s.backoff,
                Arc::clone(&s.enabled),
            ))
        };
        match s.links.lock() {
            Ok(mut links) => Arc::clone(links.entry(target.clone()).or_insert_with(make)),
            Err(_) => make(),
        }
    }
}

impl<C> RaftNetworkFactory<C> for PalisadeNetwork<C>
where
    C: RaftTypeConfig,
    C::Node: PeerAddr,
{
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> PeerClient<C> {
        PeerClient {
            link: self.link(&target, node.peer_addr()),
            me: self.shared.me.clone(),
            target,
        }
    }
}

/// openraft's client for one peer: its RPCs go over the peer's shared link.
pub struct PeerClient<C: RaftTypeConfig> {
    link: Arc<PeerLink>,
    me: C::NodeId,
    target: C::NodeId,
}

impl<C: RaftTypeConfig> fmt::Debug for PeerClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient")
            .field("target", &self.target)
            .finish()
    }
}

/// What an RPC's transport can fail with, before the remote Raft answers.
enum Failed<NID: openraft::NodeId> {
    Timeout(Timeout<NID>),
    Unreachable(Unreachable),
    Network(NetworkError),
}

impl<NID: openraft::NodeId, N: openraft::Node, E: std::error::Error> From<Failed<NID>>
    for RPCError<NID, N, E>
{
    fn from(f: Failed<NID>) -> Self {
        match f {
            Failed::Timeout(t) => RPCError::Timeout(t),
            Failed::Unreachable(u) => RPCError::Unreachable(u),
            Failed::Network(n) => RPCError::Network(n),
        }
    }
}

impl<C: RaftTypeConfig> PeerClient<C> {
    async fn call(
        &self,
        action: RPCTypes,
        request: Request<C>,
        ttl: Duration,
    ) -> Result<Response<C>, Failed<C::NodeId>> {
        let frame = self
            .link
            .call(|id| wire::encode(id, &request), ttl)
            .await
            .map_err(|e| match e {
                CallError::Timeout => Failed::Timeout(Timeout {
                    action,
                    id: self.me.clone(),
                    target: self.target.clone(),
                    timeout: ttl,
                }),
                CallError::Unreachable(_) => Failed::Unreachable(Unreachable::new(&e)),
                CallError::Broken(_) | CallError::Encode(_) => {
                    Failed::Network(NetworkError::new(&e))
                }
            })?;
        wire::decode::<Response<C>>(&frame)
            .map(|(_, r)| r)
            .map_err(|e| Failed::Network(NetworkError::new(&e)))
    }

    fn mismatch(&self) -> Failed<C::NodeId> {
        let e = std::io::Error::other("the peer answered an RPC with another RPC's response");
        Failed::Network(NetworkError::new(&e))
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<C::NodeId, E>,
    ) -> RemoteError<C::NodeId, C::Node, RaftError<C::NodeId, E>> {
        RemoteError::new(self.target.clone(), e)
    }
}

type Rpc<T, C, E = openraft::error::Infallible> = Result<
    T,
    RPCError<
        <C as RaftTypeConfig>::NodeId,
        <C as RaftTypeConfig>::Node,
        RaftError<<C as RaftTypeConfig>::NodeId, E>,
    >,
>;

impl<C: RaftTypeConfig> RaftNetwork<C> for PeerClient<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<C::NodeId>, C> {
        let ttl = option.hard_ttl();
        match self
            .call(RPCTypes::AppendEntries, Request::AppendEntries(rpc), ttl)
            .await?
        {
            Response::AppendEntries(r) => r.map_err(|e| RPCError::RemoteError(self.remote(e))),
            _ => Err(self.mismatch().into()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<C::NodeId>, C, InstallSnapshotError> {
        let ttl = option.hard_ttl();
        match self
            .call(
                RPCTypes::InstallSnapshot,
                Request::InstallSnapshot(rpc),
                ttl,
            )
            .await?
        {
            Response::InstallSnapshot(r) => r.map_err(|e| RPCError::RemoteError(self.remote(e))),
            _ => Err(self.mismatch().into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C::NodeId>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<C::NodeId>, C> {
        let ttl = option.hard_ttl();
        match self.call(RPCTypes::Vote, Request::Vote(rpc), ttl).await? {
            Response::Vote(r) => r.map_err(|e| RPCError::RemoteError(self.remote(e))),
            _ => Err(self.mismatch().into()),
        }
    }
}
