//! openraft's network over palisade links: Raft traffic between nodes with mutual TLS,
//! a join secret, live rotation and explained refusals, in a few lines.
//!
//! ```text
//! let dialer = palisade::tokio::Dialer::from_config(config.clone())?;
//! let network = PalisadeNetwork::<MyConfig>::new(my_id, dialer);
//! let raft = openraft::Raft::new(my_id, raft_config, network, log_store, state_machine).await?;
//! let listener = palisade::tokio::Listener::bind(addr, config).await?;
//! let server = RaftServer::start(listener, raft.clone());
//! ```
//!
//! - [`PalisadeNetwork`] is openraft's `RaftNetworkFactory`: one palisade link per peer,
//!   shared by that peer's replication stream and elections, redialed with capped
//!   exponential backoff ([`Backoff`]); each dial expects the target's node id, so a node
//!   answering with another identity is refused during the join.
//! - [`RaftServer`] accepts palisade links and dispatches their RPCs to a `Raft` handle.
//! - [`wire`] documents the frames: `(request id, request)` in postcard, one per DATA frame.
//! - With the `kv` feature, [`kv`] is an in-memory key-value store (log and state
//!   machine) for examples, tests and benchmarks. It turns on openraft's `storage-v2`,
//!   which hides openraft's older `RaftStorage` trait: leave `kv` off in applications.

mod link;
mod network;
mod server;
pub mod wire;

#[cfg(feature = "kv")]
pub mod kv;

pub use link::{Backoff, CallError};
pub use network::{PalisadeNetwork, PeerAddr, PeerClient};
pub use server::RaftServer;
