//! Runs any adapter as acceptor or initiator on a thread of its own (each async one
//! inside its own runtime), so every pair of adapters can be tested the same way.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use palisade::{CloseReason, Config, PeerInfo};

/// Which adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tokio,
    AsyncStd,
    Smol,
    Blocking,
}

pub const KINDS: [Kind; 4] = [Kind::Tokio, Kind::AsyncStd, Kind::Smol, Kind::Blocking];

/// What a side does once joined: send these frames, then receive until the peer closes
/// (acceptor) or receive `expect` frames then close (initiator).
#[derive(Debug, Clone)]
pub struct Script {
    pub send: Vec<Bytes>,
    pub expect: usize,
}

/// What a side saw.
#[derive(Debug)]
pub struct Outcome {
    pub peer: PeerInfo,
    pub received: Vec<Bytes>,
}

/// Bounds every test: a side that takes longer fails the test instead of hanging it.
pub const LIMIT: Duration = Duration::from_secs(60);

macro_rules! async_side {
    ($block_on:expr, $adapter:ident, $config:expr, $script:expr, $role:expr, $addr_tx:expr, $addr:expr) => {{
        $block_on(async move {
            let conn = match $role {
                Role::Acceptor => {
                    let listener = palisade::$adapter::Listener::bind("127.0.0.1:0", $config)
                        .await
                        .map_err(|e| e.to_string())?;
                    $addr_tx
                        .send(listener.local_addr())
                        .map_err(|e| e.to_string())?;
                    listener.accept().await.0
                }
                Role::Initiator => palisade::$adapter::connect(&$addr, $config)
                    .await
                    .map_err(|e| e.to_string())?,
            };
            let peer = conn.peer().clone();
            let (mut tx, mut rx) = conn.split();
            let script: Script = $script;
            let sender = async move {
                for f in script.send {
                    tx.send(f).await.map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(tx)
            };
            let receiver = async move {
                let mut received = Vec::new();
                while received.len() < script.expect {
                    match rx.recv().await.map_err(|e| e.to_string())? {
                        Some(f) => received.push(f),
                        None => break,
                    }
                }
                Ok::<_, String>((rx, received))
            };
            let (tx, rx) = futures_util::future::join(sender, receiver).await;
            let tx = tx?;
            let (mut rx, received) = rx?;
            match $role {
                Role::Initiator => tx.close(CloseReason::default()).await,
                Role::Acceptor => {
                    // The initiator closes: the stream ends cleanly.
                    let end = rx.recv().await.map_err(|e| e.to_string())?;
                    if end.is_some() {
                        return Err(format!("an extra frame after the script: {end:?}"));
                    }
                    drop(tx);
                }
            }
            Ok(Outcome { peer, received })
        })
    }};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Acceptor,
    Initiator,
}

fn blocking_side(
    config: Config,
    script: Script,
    role: Role,
    addr_tx: mpsc::Sender<SocketAddr>,
    addr: String,
) -> Result<Outcome, String> {
    let conn = match role {
        Role::Acceptor => {
            let listener = palisade::blocking::Listener::bind("127.0.0.1:0", config)
                .map_err(|e| e.to_string())?;
            addr_tx
                .send(listener.local_addr())
                .map_err(|e| e.to_string())?;
            listener.accept().map_err(|e| e.to_string())?.0
        }
        Role::Initiator => palisade::blocking::connect(&addr, config).map_err(|e| e.to_string())?,
    };
    let peer = conn.peer().clone();
    let (tx, rx) = conn.split();
    let expect = script.expect;
    let sender = thread::spawn(move || -> Result<_, String> {
        for f in script.send {
            tx.send(f).map_err(|e| e.to_string())?;
        }
        Ok(tx)
    });
    let mut received = Vec::new();
    while received.len() < expect {
        match rx.recv().map_err(|e| e.to_string())? {
            Some(f) => received.push(f),
            None => break,
        }
    }
    let tx = sender.join().map_err(|_| "sender panicked".to_string())??;
    match role {
        Role::Initiator => tx.close(CloseReason::default()),
        Role::Acceptor => {
            if let Some(extra) = rx.recv().map_err(|e| e.to_string())? {
                return Err(format!("an extra frame after the script: {extra:?}"));
            }
        }
    }
    Ok(Outcome { peer, received })
}

fn run_side(
    kind: Kind,
    config: Config,
    script: Script,
    role: Role,
    addr_tx: mpsc::Sender<SocketAddr>,
    addr: String,
) -> Result<Outcome, String> {
    match kind {
        Kind::Tokio => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            async_side!(
                |f| rt.block_on(f),
                tokio,
                config,
                script,
                role,
                addr_tx,
                addr
            )
        }
        Kind::AsyncStd => {
            async_side!(
                async_std::task::block_on,
                async_std,
                config,
                script,
                role,
                addr_tx,
                addr
            )
        }
        Kind::Smol => async_side!(smol::block_on, smol, config, script, role, addr_tx, addr),
        Kind::Blocking => blocking_side(config, script, role, addr_tx, addr),
    }
}

/// Runs `acceptor` and `initiator` adapters against each other over loopback; returns
/// (acceptor's outcome, initiator's outcome). Fails after [`LIMIT`].
pub fn link(
    acceptor: (Kind, Config, Script),
    initiator: (Kind, Config, Script),
    server_name: &str,
) -> (Result<Outcome, String>, Result<Outcome, String>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let (ak, ac, ascript) = acceptor;
    let d = done_tx.clone();
    let unused = addr_tx.clone();
    thread::spawn(move || {
        let r = run_side(ak, ac, ascript, Role::Acceptor, addr_tx, String::new());
        let _ = d.send((Role::Acceptor, r));
    });
    let addr = match addr_rx.recv_timeout(LIMIT) {
        Ok(a) => a,
        Err(_) => {
            let (_, r) = done_rx
                .recv_timeout(LIMIT)
                .expect("acceptor neither bound nor failed");
            return (r, Err("the acceptor never bound".into()));
        }
    };
    drop(unused);
    let (ik, ic, iscript) = initiator;
    let target = format!("{server_name}:{}", addr.port());
    thread::spawn(move || {
        let (tx, _rx) = mpsc::channel();
        let r = run_side(ik, ic, iscript, Role::Initiator, tx, target);
        let _ = done_tx.send((Role::Initiator, r));
    });
    let mut acc = None;
    let mut ini = None;
    for _ in 0..2 {
        match done_rx.recv_timeout(LIMIT) {
            Ok((Role::Acceptor, r)) => acc = Some(r),
            Ok((Role::Initiator, r)) => ini = Some(r),
            Err(_) => break,
        }
    }
    (
        acc.unwrap_or_else(|| Err(format!("the acceptor did not finish within {LIMIT:?}"))),
        ini.unwrap_or_else(|| Err(format!("the initiator did not finish within {LIMIT:?}"))),
    )
}
