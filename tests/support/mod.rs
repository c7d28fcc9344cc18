//! Runs any adapter as acceptor or initiator on a thread of its own (each async one
//! inside its own runtime), so every pair of adapters can be tested the same way.
//!
//! - [`link`]: one acceptor against one initiator, both scripted;
//! - [`serve`]: a listener of one adapter serving several accepted links one after
//!   another, recording the handshakes it refused; [`initiate`] dials it.
#![allow(dead_code)]

use std::fmt;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade::{
    CloseReason, Config, Endpoint, HandshakeFailure, LinkError, PeerInfo, RejectCode, Rejection,
};

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

/// Bounds one step of [`serve`] / [`initiate`] (binding, one dial, the whole serve), so
/// a test using them ends within about half a minute even when something hangs.
pub const STEP_LIMIT: Duration = Duration::from_secs(25);

/// Why a side failed: the message, and what the adapter's error said about a refused
/// join.
#[derive(Debug, Clone)]
pub struct SideError {
    pub message: String,
    /// `LinkError::reject_code`: the code of a refused join, whichever side refused.
    pub reject_code: Option<RejectCode>,
    /// `LinkError::rejection`: the REJECT the peer sent, when the peer refused us.
    pub rejection: Option<Rejection>,
}

impl SideError {
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            reject_code: None,
            rejection: None,
        }
    }
}

impl From<LinkError> for SideError {
    fn from(e: LinkError) -> Self {
        Self {
            message: e.to_string(),
            reject_code: e.reject_code(),
            rejection: e.rejection().cloned(),
        }
    }
}

impl From<palisade::ConfigError> for SideError {
    fn from(e: palisade::ConfigError) -> Self {
        LinkError::from(e).into()
    }
}

impl From<String> for SideError {
    fn from(message: String) -> Self {
        Self::msg(message)
    }
}

impl fmt::Display for SideError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = self.reject_code {
            write!(f, " (reject code {code:?})")?;
        }
        Ok(())
    }
}

/// Runs `$script` on the joined async connection `$conn` (inside an async block that
/// returns `Result<_, SideError>`): sends and receives at once, then the initiator
/// closes and the acceptor checks that the stream ends cleanly.
macro_rules! async_converse {
    ($conn:expr, $script:expr, $role:expr) => {{
        let conn = $conn;
        let role: Role = $role;
        let script: Script = $script;
        let peer = conn.peer().clone();
        let (mut tx, mut rx) = conn.split();
        let expect = script.expect;
        let sender = async move {
            for f in script.send {
                tx.send(f).await?;
            }
            Ok::<_, SideError>(tx)
        };
        let receiver = async move {
            let mut received = Vec::new();
            while received.len() < expect {
                match rx.recv().await? {
                    Some(f) => received.push(f),
                    None => break,
                }
            }
            Ok::<_, SideError>((rx, received))
        };
        let (tx, rx) = futures_util::future::join(sender, receiver).await;
        let tx = tx?;
        let (mut rx, received) = rx?;
        match role {
            Role::Initiator => tx.close(CloseReason::default()).await,
            Role::Acceptor => {
                // The initiator closes: the stream ends cleanly.
                let end = rx.recv().await?;
                if let Some(extra) = end {
                    return Err(SideError::msg(format!(
                        "an extra frame after the script: {} bytes",
                        extra.len()
                    )));
                }
                drop(tx);
            }
        }
        Outcome { peer, received }
    }};
}

macro_rules! async_side {
    ($block_on:expr, $adapter:ident, $config:expr, $script:expr, $role:expr, $addr_tx:expr, $addr:expr) => {{
        $block_on(async move {
            let conn = match $role {
                Role::Acceptor => {
                    let listener =
                        palisade::$adapter::Listener::bind("127.0.0.1:0", $config).await?;
                    $addr_tx
                        .send(listener.local_addr())
                        .map_err(|e| e.to_string())?;
                    listener.accept().await.0
                }
                Role::Initiator => palisade::$adapter::connect(&$addr, $config).await?,
            };
            Ok::<_, SideError>(async_converse!(conn, $script, $role))
        })
    }};
}

/// Binds a listener (with a failure hook) and runs one script per accepted link, one
/// link after another.
macro_rules! async_serve {
    ($block_on:expr, $adapter:ident, $config:expr, $scripts:expr, $hook:expr, $addr_tx:expr) => {{
        $block_on(async move {
            let listener = palisade::$adapter::Listener::bind_with(
                "127.0.0.1:0",
                Endpoint::new($config)?,
                Some($hook),
            )
            .await?;
            $addr_tx
                .send(listener.local_addr())
                .map_err(|e| e.to_string())?;
            let mut outcomes = Vec::new();
            for script in $scripts {
                let (conn, _) = listener.accept().await;
                outcomes.push(async_converse!(conn, script, Role::Acceptor));
            }
            Ok::<_, SideError>(outcomes)
        })
    }};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Acceptor,
    Initiator,
}

fn blocking_converse(
    conn: palisade::blocking::Connection,
    script: Script,
    role: Role,
) -> Result<Outcome, SideError> {
    let peer = conn.peer().clone();
    let (tx, rx) = conn.split();
    let expect = script.expect;
    let sender = thread::spawn(move || -> Result<_, SideError> {
        for f in script.send {
            tx.send(f)?;
        }
        Ok(tx)
    });
    let mut received = Vec::new();
    while received.len() < expect {
        match rx.recv()? {
            Some(f) => received.push(f),
            None => break,
        }
    }
    let tx = sender
        .join()
        .map_err(|_| SideError::msg("sender panicked"))??;
    match role {
        Role::Initiator => tx.close(CloseReason::default()),
        Role::Acceptor => {
            if let Some(extra) = rx.recv()? {
                return Err(SideError::msg(format!(
                    "an extra frame after the script: {} bytes",
                    extra.len()
                )));
            }
        }
    }
    Ok(Outcome { peer, received })
}

fn blocking_side(
    config: Config,
    script: Script,
    role: Role,
    addr_tx: mpsc::Sender<SocketAddr>,
    addr: String,
) -> Result<Outcome, SideError> {
    let conn = match role {
        Role::Acceptor => {
            let listener = palisade::blocking::Listener::bind("127.0.0.1:0", config)?;
            addr_tx
                .send(listener.local_addr())
                .map_err(|e| e.to_string())?;
            listener.accept()?.0
        }
        Role::Initiator => palisade::blocking::connect(&addr, config)?,
    };
    blocking_converse(conn, script, role)
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, SideError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SideError::msg(e.to_string()))
}

fn run_side(
    kind: Kind,
    config: Config,
    script: Script,
    role: Role,
    addr_tx: mpsc::Sender<SocketAddr>,
    addr: String,
) -> Result<Outcome, SideError> {
    match kind {
        Kind::Tokio => {
            let rt = tokio_runtime()?;
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
    link_within(acceptor, initiator, server_name, LIMIT)
}

/// [`link`], failing after `limit` (for binding, and again for both sides to finish).
pub fn link_within(
    acceptor: (Kind, Config, Script),
    initiator: (Kind, Config, Script),
    server_name: &str,
    limit: Duration,
) -> (Result<Outcome, String>, Result<Outcome, String>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let (ak, ac, ascript) = acceptor;
    let d = done_tx.clone();
    let unused = addr_tx.clone();
    thread::spawn(move || {
        let r = run_side(ak, ac, ascript, Role::Acceptor, addr_tx, String::new());
        let _ = d.send((Role::Acceptor, r.map_err(|e| e.to_string())));
    });
    let addr = match addr_rx.recv_timeout(limit) {
        Ok(a) => a,
        Err(_) => {
            let (_, r) = done_rx
                .recv_timeout(limit)
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
        let _ = done_tx.send((Role::Initiator, r.map_err(|e| e.to_string())));
    });
    let mut acc = None;
    let mut ini = None;
    let deadline = Instant::now() + limit;
    for _ in 0..2 {
        match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((Role::Acceptor, r)) => acc = Some(r),
            Ok((Role::Initiator, r)) => ini = Some(r),
            Err(_) => break,
        }
    }
    (
        acc.unwrap_or_else(|| Err(format!("the acceptor did not finish within {limit:?}"))),
        ini.unwrap_or_else(|| Err(format!("the initiator did not finish within {limit:?}"))),
    )
}

/// A handshake a [`serve`] listener gave up on, as its failure hook saw it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub peer_addr: SocketAddr,
    pub reject_code: Option<RejectCode>,
    pub message: String,
}

/// A listener started by [`serve`].
#[derive(Debug)]
pub struct Server {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    failures: Arc<Mutex<Vec<Refusal>>>,
    done: mpsc::Receiver<Result<Vec<Outcome>, SideError>>,
}

impl Server {
    /// `host:port` for dialing this server by `host` (the name TLS checks).
    pub fn target(&self, host: &str) -> String {
        format!("{host}:{}", self.addr.port())
    }

    /// The handshakes refused so far (the listener's failure hook).
    pub fn failures(&self) -> Vec<Refusal> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (at most [`STEP_LIMIT`]) until every scripted link has been served; returns
    /// their outcomes in accept order.
    pub fn wait(&self) -> Result<Vec<Outcome>, SideError> {
        self.done.recv_timeout(STEP_LIMIT).unwrap_or_else(|_| {
            Err(SideError::msg(format!(
                "the server did not serve its links within {STEP_LIMIT:?}"
            )))
        })
    }
}

fn serve_on(
    kind: Kind,
    config: Config,
    scripts: Vec<Script>,
    hook: palisade_driver::FailureHook,
    addr_tx: mpsc::Sender<SocketAddr>,
) -> Result<Vec<Outcome>, SideError> {
    match kind {
        Kind::Tokio => {
            let rt = tokio_runtime()?;
            async_serve!(|f| rt.block_on(f), tokio, config, scripts, hook, addr_tx)
        }
        Kind::AsyncStd => async_serve!(
            async_std::task::block_on,
            async_std,
            config,
            scripts,
            hook,
            addr_tx
        ),
        Kind::Smol => async_serve!(smol::block_on, smol, config, scripts, hook, addr_tx),
        Kind::Blocking => {
            let listener = palisade::blocking::Listener::bind_with(
                "127.0.0.1:0",
                Endpoint::new(config)?,
                Some(hook),
            )?;
            addr_tx
                .send(listener.local_addr())
                .map_err(|e| e.to_string())?;
            let mut outcomes = Vec::new();
            for script in scripts {
                let (conn, _) = listener.accept()?;
                outcomes.push(blocking_converse(conn, script, Role::Acceptor)?);
            }
            Ok(outcomes)
        }
    }
}

/// Binds a listener of `kind` on 127.0.0.1 (on a thread and runtime of its own) that
/// accepts `scripts.len()` links one after another, running one script on each as the
/// acceptor. Handshakes it refuses do not count; they are recorded
/// ([`Server::failures`]) and the listener keeps serving.
pub fn serve(kind: Kind, config: Config, scripts: Vec<Script>) -> Result<Server, SideError> {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&failures);
    let hook: palisade_driver::FailureHook = Arc::new(move |f: &HandshakeFailure| {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Refusal {
                peer_addr: f.peer_addr,
                reject_code: f.reject_code(),
                message: f.to_string(),
            });
    });
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(serve_on(kind, config, scripts, hook, addr_tx));
    });
    match addr_rx.recv_timeout(STEP_LIMIT) {
        Ok(addr) => Ok(Server {
            addr,
            failures,
            done: done_rx,
        }),
        Err(_) => Err(done_rx
            .recv_timeout(STEP_LIMIT)
            .unwrap_or_else(|_| Err(SideError::msg("the server neither bound nor failed")))
            .err()
            .unwrap_or_else(|| SideError::msg("the server finished without binding"))),
    }
}

/// Dials `target` with an adapter of `kind` (on a thread and runtime of its own) and
/// runs `script` as the initiator (closing at the end). At most [`STEP_LIMIT`].
pub fn initiate(
    kind: Kind,
    config: Config,
    script: Script,
    target: &str,
) -> Result<Outcome, SideError> {
    let (done_tx, done_rx) = mpsc::channel();
    let target = target.to_owned();
    thread::spawn(move || {
        let (addr_tx, _addr_rx) = mpsc::channel();
        let _ = done_tx.send(run_side(
            kind,
            config,
            script,
            Role::Initiator,
            addr_tx,
            target,
        ));
    });
    done_rx.recv_timeout(STEP_LIMIT).unwrap_or_else(|_| {
        Err(SideError::msg(format!(
            "the initiator did not finish within {STEP_LIMIT:?}"
        )))
    })
}
