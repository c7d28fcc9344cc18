//! The accepting side: joined palisade links in, openraft RPCs dispatched to a [`Raft`]
//! handle, responses out on the same link with the request's id.

use std::sync::{Arc, Mutex};

use openraft::{Raft, RaftTypeConfig};
use palisade::tokio::{Connection, Listener};
use tokio::task::{JoinHandle, JoinSet};

use crate::wire::{self, Request, Response};

/// Serves Raft RPCs from every link `listener` accepts. Dropping it (or [`stop`]) stops
/// accepting, closes the listener's port and every link it accepted.
///
/// [`stop`]: RaftServer::stop
#[derive(Debug)]
pub struct RaftServer {
    accept: JoinHandle<()>,
    listener: Arc<Listener>,
    links: Arc<Mutex<JoinSet<()>>>,
}

impl RaftServer {
    /// Starts serving `raft` on `listener`.
    pub fn start<C: RaftTypeConfig>(listener: Listener, raft: Raft<C>) -> Self {
        let listener = Arc::new(listener);
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let (accepting, tasks) = (Arc::clone(&listener), Arc::clone(&links));
        let accept = tokio::spawn(async move {
            loop {
                let (conn, from) = accepting.accept().await;
                tracing::debug!(peer = %conn.peer().node_id, %from, "Raft link joined");
                if let Ok(mut set) = tasks.lock() {
                    // Reap the links that ended, so the set stays the size of the live ones.
                    while set.try_join_next().is_some() {}
                    set.spawn(serve_link(conn, raft.clone()));
                }
            }
        });
        Self {
            accept,
            listener,
            links,
        }
    }

    /// The listener, to `reconfigure` it (new certificates or secret for the next
    /// joins; joined links stay up) or read its metrics.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Stops accepting and closes every link accepted so far. The port is released once
    /// the last handle on the listener is gone (this server holds the only one unless
    /// [`listener`](Self::listener) was cloned out through an `Arc`).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for RaftServer {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut set) = self.links.lock() {
            set.abort_all();
        }
    }
}

/// Answers the RPCs of one link, each in its own task so a slow append does not hold up a
/// vote; the responses share the sending half.
async fn serve_link<C: RaftTypeConfig>(conn: Connection, raft: Raft<C>) {
    let peer = conn.peer().node_id.clone();
    let (send, mut recv) = conn.split();
    let send = Arc::new(tokio::sync::Mutex::new(send));
    let mut calls = JoinSet::new();
    loop {
        let frame = match recv.recv().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "Raft link closed");
                break;
            }
        };
        let (id, request) = match wire::decode::<Request<C>>(&frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "Raft link closed");
                break;
            }
        };
        while calls.try_join_next().is_some() {}
        let (raft, send) = (raft.clone(), Arc::clone(&send));
        calls.spawn(async move {
            let response = match request {
                Request::AppendEntries(r) => {
                    Response::<C>::AppendEntries(raft.append_entries(r).await)
                }
                Request::Vote(r) => Response::Vote(raft.vote(r).await),
                Request::InstallSnapshot(r) => {
                    Response::InstallSnapshot(raft.install_snapshot(r).await)
                }
            };
            match wire::encode(id, &response) {
                Ok(frame) => {
                    let _ = send.lock().await.send(frame).await;
                }
                // The dialer times out on this request; the link stays up for the others.
                Err(e) => tracing::error!(error = %e, "a Raft response was not sent"),
            }
        });
    }
    calls.abort_all();
}
