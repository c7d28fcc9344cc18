//! The harness of `tests/hostile.rs`: one listener of either adapter kind (tokio or
//! blocking) with a failure hook that records every failed handshake, hostile peers on
//! raw `std::net::TcpStream`s, legitimate members dialing with the palisade client of the
//! listener's own adapter, and a reader for what the listener wrote back.
//!
//! Every wait is bounded: a listener that misbehaves fails the test, never hangs it.
#![allow(dead_code)]

/// One `#[test]` per scenario and listener kind: `tokio_listener::NAME` and
/// `blocking_listener::NAME` each run `NAME(Kind)` of the including file.
#[allow(unused_macros)]
macro_rules! for_both_listeners {
    ($($scenario:ident),* $(,)?) => {
        mod tokio_listener {
            $(#[test] fn $scenario() { super::$scenario(super::Kind::Tokio) })*
        }
        mod blocking_listener {
            $(#[test] fn $scenario() { super::$scenario(super::Kind::Blocking) })*
        }
    };
}

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use palisade::core::Connection as CoreConnection;
use palisade::preface::PREFACE;
use palisade::tls::{TlsConfig, TrustAnchors};
use palisade::{
    CloseReason, Config, ConnectionError, Endpoint, FrameDecoder, FrameKind, LinkError, PeerInfo,
    RejectCode, Rejection, SharedSecret,
};
use palisade_driver::{
    AdmissionError, AdmissionLimits, AdmissionStats, FailureHook, HandshakeFailure,
};
use palisade_testkit::certs::{TestCa, TestIdentity};

/// Which adapter runs the listener (and the members that dial it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tokio,
    Blocking,
}

/// How long a refusal may take: far below any handshake deadline used here.
pub const FAST: Duration = Duration::from_secs(1);
/// How late after its handshake deadline a stalled link may be closed.
pub const LATE: Duration = Duration::from_secs(1);
/// Longest a legitimate join may take before the test calls it stuck.
pub const JOIN_BOUND: Duration = Duration::from_secs(15);
/// The members' own handshake timeout.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(15);

pub const CLUSTER: &str = "hostile";
pub const LISTENER_ID: &str = "listener";

// ----- test isolation -----

/// Timing-sensitive tests share the machine; the heavy and the memory-measuring tests
/// run alone.
static MACHINE: RwLock<()> = RwLock::new(());

/// Runs alongside other shared tests.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|p| p.into_inner())
}

/// Runs alone.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().unwrap_or_else(|p| p.into_inner())
}

pub use palisade_testkit::bounded;

/// Polls `check` until it holds or `within` passes.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ----- certificates and settings -----

/// A CA, the listener's certificate, and the cluster secret. Each member gets a
/// certificate naming its node id (`node_id_in_cert` is on by default).
pub struct Cluster {
    pub ca: TestCa,
    pub listener_id: TestIdentity,
    pub secret: SharedSecret,
}

impl Cluster {
    pub fn new() -> Self {
        let ca = TestCa::new("hostile cluster CA");
        Self {
            // Named by its node id, and by the address members dial (verify_hostname).
            listener_id: ca.node_at(LISTENER_ID, "127.0.0.1"),
            ca,
            secret: SharedSecret::new(vec![0x5a; 32]).expect("secret"),
        }
    }

    /// The listener: the cluster secret always, TLS when asked.
    pub fn listener(&self, tls: bool, handshake_timeout: Duration) -> Config {
        let mut c = Config::new(CLUSTER, LISTENER_ID).with_secret(self.secret.clone());
        if tls {
            c = c.with_tls(self.ca.tls(&self.listener_id));
        }
        c.handshake_timeout = handshake_timeout;
        // The first-bytes deadline has tests of its own (tests/admission.rs); here only
        // the join deadline applies.
        c.first_bytes_timeout = handshake_timeout;
        c
    }

    /// A legitimate member called `name`, matching a listener made with the same `tls`;
    /// with TLS its certificate names `name`.
    pub fn member(&self, tls: bool, name: &str) -> Config {
        let mut c = Config::new(CLUSTER, name).with_secret(self.secret.clone());
        if tls {
            c = c.with_tls(self.ca.tls(&self.ca.node(name)));
        }
        c.handshake_timeout = MEMBER_TIMEOUT;
        c
    }

    /// A TLS member called `name` holding `id`, a certificate from the cluster CA that
    /// may name another node id.
    pub fn member_holding(&self, name: &str, id: &TestIdentity) -> Config {
        let mut c = Config::new(CLUSTER, name)
            .with_secret(self.secret.clone())
            .with_tls(self.ca.tls(id));
        c.handshake_timeout = MEMBER_TIMEOUT;
        c
    }

    /// A TLS member that holds the wrong shared secret.
    pub fn wrong_secret(&self, name: &str) -> Config {
        let mut c = self.member(true, name);
        c.keyring = Some(palisade::Keyring::new(
            SharedSecret::new(vec![0xa5; 32]).expect("secret"),
        ));
        c
    }

    /// A node with the right secret whose certificate another CA issued (it trusts the
    /// cluster CA, so it is the listener that refuses it).
    pub fn rogue_cert(&self, rogue: &TestIdentity, name: &str) -> Config {
        let mut c = Config::new(CLUSTER, name).with_secret(self.secret.clone());
        c = c.with_tls(TlsConfig::new(
            rogue.identity(),
            TrustAnchors::CaBundle(vec![self.ca.cert.clone()]),
        ));
        c.handshake_timeout = MEMBER_TIMEOUT;
        c
    }
}

/// What an initiator with `config` writes first: without TLS `PREFACE ‖ HELLO`, with TLS
/// its ClientHello record. Taken from the sans-IO core, so it is the real thing.
pub fn first_flight(config: Config) -> Vec<u8> {
    let endpoint = Endpoint::new(config).expect("config");
    let mut conn = endpoint
        .connect("127.0.0.1", Instant::now(), SystemTime::now())
        .expect("connect");
    let mut out = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Bytes that are no protocol at all (the first byte above 0x7f, so the stream cannot
/// look like TLS, HTTP or palisade). Returns the seed too, for the failure message.
pub fn junk(len: usize) -> (u64, Vec<u8>) {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
        | 1;
    let mut x = seed;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    if let Some(first) = out.first_mut() {
        *first |= 0x80;
    }
    (seed, out)
}

// ----- what the failure hook saw -----

/// One failed handshake as the hook reported it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub peer: SocketAddr,
    /// The link error, when the failure is one.
    pub link: Option<ConnectionError>,
    /// The socket error's kind, when the failure is one.
    pub io: Option<ErrorKind>,
    /// `HandshakeFailure::reject_code()`.
    pub code: Option<RejectCode>,
    /// The admission error, when admission control closed the connection.
    pub admission: Option<AdmissionError>,
    pub text: String,
    pub at: Instant,
}

/// Every failure a listener's hook reported.
#[derive(Debug, Default)]
pub struct Failures {
    seen: Mutex<Vec<Failure>>,
    changed: Condvar,
}

impl Failures {
    pub fn hook(self: &Arc<Self>) -> FailureHook {
        let me = Arc::clone(self);
        Arc::new(move |f: &HandshakeFailure| {
            let (link, io) = match &f.error {
                LinkError::Link(e) => (Some(e.clone()), None),
                LinkError::Io(e) => (None, Some(e.kind())),
                _ => (None, None),
            };
            let admission = match &f.error {
                LinkError::Admission(e) => Some(e.clone()),
                _ => None,
            };
            let failure = Failure {
                peer: f.peer_addr,
                link,
                io,
                code: f.reject_code(),
                admission,
                text: f.to_string(),
                at: Instant::now(),
            };
            me.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(failure);
            me.changed.notify_all();
        })
    }

    pub fn all(&self) -> Vec<Failure> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn wait<T>(
        &self,
        within: Duration,
        mut check: impl FnMut(&[Failure]) -> Option<T>,
    ) -> Option<T> {
        let until = Instant::now() + within;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = check(&seen) {
                return Some(v);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            seen = self
                .changed
                .wait_timeout(seen, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The failure reported for `peer` (exactly one), waiting at most `within`.
    pub fn of(&self, peer: SocketAddr, within: Duration) -> Failure {
        let found = self.wait(within, |seen| seen.iter().find(|f| f.peer == peer).cloned());
        let Some(found) = found else {
            panic!(
                "the hook reported no failure for {peer} within {within:?}; it reported {:#?}",
                self.all()
            );
        };
        let count = self.all().iter().filter(|f| f.peer == peer).count();
        assert_eq!(
            count,
            1,
            "{peer} was reported {count} times: {:#?}",
            self.all()
        );
        found
    }

    /// Waits until `n` failures were reported (and returns them).
    pub fn at_least(&self, n: usize, within: Duration) -> Vec<Failure> {
        self.wait(within, |seen| (seen.len() >= n).then(|| seen.to_vec()))
            .unwrap_or_else(|| {
                panic!(
                    "the hook reported {} failures within {within:?}, expected {n}: {:#?}",
                    self.all().len(),
                    self.all()
                )
            })
    }
}

// ----- the listener -----

/// A joined link of either adapter.
#[derive(Debug)]
pub enum Conn {
    Tokio(palisade::tokio::Connection),
    Blocking(palisade::blocking::Connection),
}

impl Conn {
    pub fn peer(&self) -> &PeerInfo {
        match self {
            Self::Tokio(c) => c.peer(),
            Self::Blocking(c) => c.peer(),
        }
    }
}

#[derive(Debug)]
enum Listener {
    Tokio(palisade::tokio::Listener),
    Blocking(Arc<palisade::blocking::Listener>),
}

/// A listener of one adapter kind with a recording failure hook.
#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    // Dropped before the runtime that runs it.
    listener: Listener,
    rt: Option<tokio::runtime::Runtime>,
    pub local: SocketAddr,
    pub failures: Arc<Failures>,
}

/// Admission limits that stay out of the way of tests about other things, which open
/// hundreds of connections (many of them failing) from 127.0.0.1: no per-source cap
/// below the global one, rates no test reaches. The global cap keeps its default.
pub fn relaxed_limits() -> AdmissionLimits {
    AdmissionLimits {
        max_unjoined_per_source: usize::MAX,
        new_connection_rate_per_source: 1e6,
        new_connection_burst_per_source: 1_000_000,
        failed_join_rate_per_source: 1e6,
        failed_join_burst_per_source: 1_000_000,
        ..AdmissionLimits::default()
    }
}

impl Server {
    /// A listener with [`relaxed_limits`].
    pub fn start(kind: Kind, config: Config) -> Self {
        Self::start_with_limits(kind, config, relaxed_limits())
    }

    pub fn start_with_limits(kind: Kind, config: Config, limits: AdmissionLimits) -> Self {
        let failures = Arc::new(Failures::default());
        let endpoint = Endpoint::new(config).expect("listener config");
        let hook = Some(failures.hook());
        let (listener, rt) = match kind {
            Kind::Tokio => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let l = rt
                    .block_on(palisade::tokio::Listener::bind_with_limits(
                        "127.0.0.1:0",
                        endpoint,
                        hook,
                        limits,
                    ))
                    .expect("bind");
                (Listener::Tokio(l), Some(rt))
            }
            Kind::Blocking => {
                let l = palisade::blocking::Listener::bind_with_limits(
                    "127.0.0.1:0",
                    endpoint,
                    hook,
                    limits,
                )
                .expect("bind");
                (Listener::Blocking(Arc::new(l)), None)
            }
        };
        let local = match &listener {
            Listener::Tokio(l) => l.local_addr(),
            Listener::Blocking(l) => l.local_addr(),
        };
        Self {
            kind,
            listener,
            rt,
            local,
            failures,
        }
    }

    /// `127.0.0.1:port`, as members dial it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.local.port())
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("a tokio listener has a runtime")
    }

    pub fn handshakes_in_progress(&self) -> usize {
        match &self.listener {
            Listener::Tokio(l) => l.handshakes_in_progress(),
            Listener::Blocking(l) => l.handshakes_in_progress(),
        }
    }

    pub fn stats(&self) -> AdmissionStats {
        match &self.listener {
            Listener::Tokio(l) => l.stats(),
            Listener::Blocking(l) => l.stats(),
        }
    }

    /// Dials the listener from source address `from` (in 127.0.0.0/8) with the palisade
    /// client of the listener's adapter.
    pub fn join_from(&self, from: Ipv4Addr, config: Config) -> (Result<Conn, LinkError>, Duration) {
        let endpoint = Endpoint::new(config).expect("member config");
        let start = Instant::now();
        let to = self.local;
        let result = match self.kind {
            Kind::Tokio => self.rt().block_on(async move {
                let attempt = async {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind(SocketAddr::new(from.into(), 0))?;
                    let stream = socket.connect(to).await?;
                    palisade::tokio::connect_stream(
                        &endpoint,
                        stream,
                        &palisade::Dial::new("127.0.0.1:0"),
                    )
                    .await
                    .map(Conn::Tokio)
                };
                tokio::time::timeout(JOIN_BOUND, attempt)
                    .await
                    .expect("a join from a source address did not finish in time")
            }),
            Kind::Blocking => bounded(
                "a blocking join from a source address",
                JOIN_BOUND,
                move || {
                    let stream = connect_from(from, to)?;
                    palisade::blocking::connect_stream(
                        &endpoint,
                        stream,
                        &palisade::Dial::new("127.0.0.1:0"),
                    )
                    .map(Conn::Blocking)
                },
            ),
        };
        (result, start.elapsed())
    }

    /// Asserts that no handshake is left in progress (waiting a little for the last
    /// ones to wind down).
    pub fn assert_no_handshake_left(&self) {
        let ok = eventually(Duration::from_secs(2), || {
            self.handshakes_in_progress() == 0
        });
        assert!(
            ok,
            "{:?} listener: {} handshakes still in progress",
            self.kind,
            self.handshakes_in_progress()
        );
    }

    /// Dials the listener with the palisade client of the listener's adapter.
    pub fn join(&self, config: Config) -> (Result<Conn, LinkError>, Duration) {
        let endpoint = Endpoint::new(config).expect("member config");
        let start = Instant::now();
        let mut all = self.join_all(vec![endpoint], JOIN_BOUND);
        (all.pop().expect("one result"), start.elapsed())
    }

    /// Dials the listener once per endpoint, all at once (tokio tasks or threads).
    /// Results in the order of `endpoints`.
    pub fn join_all(
        &self,
        endpoints: Vec<Endpoint>,
        within: Duration,
    ) -> Vec<Result<Conn, LinkError>> {
        let addr = self.addr();
        let n = endpoints.len();
        match self.kind {
            Kind::Tokio => {
                let rt = self.rt();
                let tasks: Vec<_> = endpoints
                    .into_iter()
                    .map(|ep| {
                        let addr = addr.clone();
                        rt.spawn(async move {
                            palisade::tokio::connect_with(&ep, &addr)
                                .await
                                .map(Conn::Tokio)
                        })
                    })
                    .collect();
                let all = rt.block_on(async move {
                    tokio::time::timeout(within, async move {
                        let mut out = Vec::with_capacity(n);
                        for t in tasks {
                            out.push(t.await.expect("a member task panicked"));
                        }
                        out
                    })
                    .await
                });
                all.unwrap_or_else(|_| panic!("{n} tokio joins did not finish within {within:?}"))
            }
            Kind::Blocking => {
                let (tx, rx) = mpsc::channel();
                let start = Arc::new(Barrier::new(n));
                for (i, ep) in endpoints.into_iter().enumerate() {
                    let (tx, addr, start) = (tx.clone(), addr.clone(), Arc::clone(&start));
                    thread::Builder::new()
                        .name(format!("member-{i}"))
                        .spawn(move || {
                            start.wait();
                            let r =
                                palisade::blocking::connect_with(&ep, &addr).map(Conn::Blocking);
                            let _ = tx.send((i, r));
                        })
                        .expect("member thread");
                }
                drop(tx);
                let until = Instant::now() + within;
                let mut out = BTreeMap::new();
                while out.len() < n {
                    let left = until.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok((i, r)) => {
                            out.insert(i, r);
                        }
                        Err(_) => panic!(
                            "{} of {n} blocking joins did not finish within {within:?}",
                            n - out.len()
                        ),
                    }
                }
                out.into_values().collect()
            }
        }
    }

    /// The next `n` links the listener accepted (joined), waiting at most `within`.
    pub fn accept(&self, n: usize, within: Duration) -> Vec<(Conn, SocketAddr)> {
        match &self.listener {
            Listener::Tokio(l) => self
                .rt()
                .block_on(async {
                    tokio::time::timeout(within, async {
                        let mut out = Vec::with_capacity(n);
                        for _ in 0..n {
                            let (c, a) = l.accept().await;
                            out.push((Conn::Tokio(c), a));
                        }
                        out
                    })
                    .await
                })
                .unwrap_or_else(|_| panic!("the tokio listener accepted fewer than {n} links")),
            Listener::Blocking(l) => {
                let l = Arc::clone(l);
                let (tx, rx) = mpsc::channel();
                thread::spawn(move || {
                    for _ in 0..n {
                        let r = l.accept().map(|(c, a)| (Conn::Blocking(c), a));
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                });
                let until = Instant::now() + within;
                (0..n)
                    .map(|i| {
                        let left = until.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(r) => r.expect("blocking accept"),
                            Err(_) => panic!(
                                "the blocking listener accepted {i} of {n} links within {within:?}"
                            ),
                        }
                    })
                    .collect()
            }
        }
    }

    /// The first thing `conn` receives (a frame, the end, or an error).
    pub fn recv(&self, conn: Conn, within: Duration) -> Result<Option<Bytes>, LinkError> {
        match conn {
            Conn::Tokio(mut c) => self
                .rt()
                .block_on(async { tokio::time::timeout(within, c.recv()).await })
                .unwrap_or_else(|_| panic!("recv did not return within {within:?}")),
            Conn::Blocking(c) => bounded("blocking recv", within, move || c.recv()),
        }
    }

    /// A legitimate member joins (asserted on both ends); returns how long it took.
    pub fn assert_serves(&self, config: Config) -> Duration {
        let name = config.node_id.clone();
        let (joined, took) = self.join(config);
        let conn = joined.unwrap_or_else(|e| {
            panic!(
                "{:?} listener: member {name} could not join: {e}; hook saw {:#?}",
                self.kind,
                self.failures.all()
            )
        });
        assert_eq!(conn.peer().node_id, LISTENER_ID);
        let accepted = self.accept(1, JOIN_BOUND);
        assert_eq!(
            accepted[0].0.peer().node_id,
            name,
            "{:?} listener accepted someone else",
            self.kind
        );
        took
    }

    /// Asserts the hook reported failures for exactly these peers.
    pub fn assert_failures_only_for(&self, peers: &[SocketAddr]) {
        let mut seen: Vec<SocketAddr> = self.failures.all().iter().map(|f| f.peer).collect();
        let mut want = peers.to_vec();
        seen.sort();
        want.sort();
        assert_eq!(
            seen,
            want,
            "{:?} listener: unexpected failure reports: {:#?}",
            self.kind,
            self.failures.all()
        );
    }
}

// ----- hostile peers -----

/// How a raw connection ended.
#[derive(Debug)]
pub struct Closed {
    /// Everything the listener wrote.
    pub reply: Vec<u8>,
    /// From the connect to the end.
    pub after_open: Duration,
    /// From the last write to the end.
    pub after_send: Duration,
    /// Ended with a reset (or another error) rather than EOF.
    pub reset: bool,
}

/// A hostile peer: a plain TCP socket that writes whatever the test says.
#[derive(Debug)]
pub struct Raw {
    pub stream: TcpStream,
    /// Its address, as the listener (and its hook) sees it.
    pub local: SocketAddr,
    /// Just before the connect.
    pub opened: Instant,
    /// After the last write.
    pub sent: Instant,
}

/// A std TCP connection to `to` from source address `from` (std cannot bind before
/// connecting; socket2 can).
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from.into(), 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

impl Raw {
    /// A raw connection from source address `from` (in 127.0.0.0/8).
    pub fn connect_from(server: &Server, from: Ipv4Addr) -> Self {
        let opened = Instant::now();
        let stream = connect_from(from, server.local).expect("raw connect");
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().expect("local addr");
        Self {
            stream,
            local,
            opened,
            sent: opened,
        }
    }

    pub fn connect(server: &Server) -> Self {
        // Before the connect: the listener may accept (and start its handshake clock)
        // before connect() returns here.
        let opened = Instant::now();
        // Generous: a full accept queue makes the kernel retry the SYN after a second.
        let stream =
            TcpStream::connect_timeout(&server.local, Duration::from_secs(5)).expect("raw connect");
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().expect("local addr");
        Self {
            stream,
            local,
            opened,
            sent: opened,
        }
    }

    /// Writes all of `bytes` (the listener must take them).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .set_write_timeout(Some(FAST))
            .expect("write timeout");
        self.stream.write_all(bytes).expect("raw write");
        self.sent = Instant::now();
    }

    /// Writes as much of `bytes` as the listener takes (it may close meanwhile).
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        self.stream
            .set_write_timeout(Some(FAST))
            .expect("write timeout");
        let _ = self.stream.write_all(bytes);
        self.sent = Instant::now();
    }

    /// Reads until the listener closes the connection; fails the test if it is still
    /// open `within` after the connect.
    pub fn read_until_closed(&mut self, within: Duration) -> Closed {
        let until = self.opened + within;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        let reset = loop {
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the listener kept {} open for {within:?} (it wrote {} bytes: {:02x?})",
                self.local,
                reply.len(),
                &reply[..reply.len().min(64)]
            );
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => break false,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        let now = Instant::now();
        Closed {
            reply,
            after_open: now - self.opened,
            after_send: now.saturating_duration_since(self.sent),
            reset,
        }
    }

    /// Reads until the reply holds the preface and `frames` whole frames (the listener
    /// keeps the connection open), within `within` of now.
    pub fn read_frames(&mut self, frames: usize, within: Duration) -> Vec<Said> {
        let until = Instant::now() + within;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if reply.len() >= PREFACE.len() {
                let said = decode_plain_prefix(&reply);
                if said.len() >= frames {
                    return said;
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{frames} frames did not arrive within {within:?}: {reply:02x?}"
            );
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("closed before {frames} frames arrived: {reply:02x?}"),
                Ok(n) => reply.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Waits until at least `n` bytes are waiting to be read (without reading them).
    pub fn wait_unread(&self, n: usize, within: Duration) {
        let mut buf = vec![0u8; n];
        let ok = eventually(within, || {
            self.stream.set_nonblocking(true).expect("nonblocking");
            let r = self.stream.peek(&mut buf);
            self.stream.set_nonblocking(false).expect("blocking");
            matches!(r, Ok(k) if k >= n)
        });
        assert!(ok, "{n} bytes did not arrive within {within:?}");
    }

    /// Whether the listener has closed the connection, without waiting (reads and
    /// discards what it wrote so far).
    pub fn closed_now(&mut self) -> bool {
        let mut b = [0u8; 4096];
        self.stream.set_nonblocking(true).expect("nonblocking");
        let closed = loop {
            match self.stream.read(&mut b) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break e.kind() != ErrorKind::WouldBlock,
            }
        };
        self.stream.set_nonblocking(false).expect("blocking");
        closed
    }

    /// Whether the listener has neither closed the connection nor written to it.
    pub fn untouched(&self) -> bool {
        let mut b = [0u8; 1];
        self.stream.set_nonblocking(true).expect("nonblocking");
        let r = self.stream.peek(&mut b);
        self.stream.set_nonblocking(false).expect("blocking");
        matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
    }
}

/// What a plaintext listener wrote back, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    Reject(Rejection),
    Close(CloseReason),
    Other(FrameKind, usize),
}

/// Decodes a plaintext listener's reply: the preface, then whole frames only.
pub fn decode_plain_reply(reply: &[u8]) -> Vec<Said> {
    let (said, rest) = decode_plain(reply);
    assert!(
        rest.is_empty(),
        "the reply ends inside a frame: {rest:02x?}"
    );
    said
}

/// The whole frames at the start of a plaintext reply.
fn decode_plain_prefix(reply: &[u8]) -> Vec<Said> {
    decode_plain(reply).0
}

fn decode_plain(reply: &[u8]) -> (Vec<Said>, BytesMut) {
    assert!(
        reply.starts_with(&PREFACE),
        "the reply does not open with the palisade preface: {:02x?}",
        &reply[..reply.len().min(32)]
    );
    let mut buf = BytesMut::from(&reply[PREFACE.len()..]);
    let mut dec = FrameDecoder::new(u32::MAX as usize);
    let mut out = Vec::new();
    while let Some(frame) = dec.decode(&mut buf).expect("a well-formed reply") {
        out.push(match frame.kind {
            FrameKind::Reject => Said::Reject(Rejection::decode(&frame.payload).expect("REJECT")),
            FrameKind::Close => Said::Close(CloseReason::decode(&frame.payload).expect("CLOSE")),
            kind => Said::Other(kind, frame.payload.len()),
        });
    }
    (out, buf)
}

/// A TLS listener refusing before TLS is up may say nothing, or a TLS alert record;
/// never plaintext palisade.
pub fn assert_tls_alert_or_nothing(reply: &[u8]) {
    assert!(
        reply.is_empty() || (reply[0] == 0x15 && reply.get(1) == Some(&0x03)),
        "expected nothing or a TLS alert record, got {:02x?}",
        &reply[..reply.len().min(32)]
    );
}

/// A peer that joined for real (the sans-IO core drives the join over a raw socket), so
/// the test can then write anything on the joined, plaintext frame stream.
#[derive(Debug)]
pub struct RawMember {
    pub raw: Raw,
    pub conn: CoreConnection,
}

impl RawMember {
    pub fn join(server: &Server, config: Config) -> Self {
        assert!(config.tls.is_none(), "raw members speak plaintext");
        let endpoint = Endpoint::new(config).expect("config");
        let mut conn = endpoint
            .connect("127.0.0.1", Instant::now(), SystemTime::now())
            .expect("connect");
        let mut raw = Raw::connect(server);
        raw.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let until = Instant::now() + JOIN_BOUND;
        let mut buf = [0u8; 4096];
        loop {
            while let Some(chunk) = conn.poll_transmit() {
                raw.send(&chunk);
            }
            if conn.is_joined() {
                break;
            }
            assert!(
                !conn.is_closed(),
                "the raw join failed: {:?}",
                conn.close_cause()
            );
            assert!(Instant::now() < until, "the raw join took too long");
            match raw.stream.read(&mut buf) {
                Ok(0) => conn.handle_eof(),
                Ok(n) => {
                    let taken = conn.handle_input(&buf[..n], Instant::now());
                    assert_eq!(taken, n, "a join fits the receive window");
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("raw join: {e}"),
            }
        }
        let joined = conn.poll_event();
        assert!(
            matches!(joined, Some(palisade::Event::Joined(_))),
            "the raw join gave {joined:?}"
        );
        Self { raw, conn }
    }

    /// Feeds what the listener wrote after the join into the core; returns its events.
    pub fn interpret(&mut self, reply: &[u8]) -> Vec<palisade::Event> {
        let mut rest = reply;
        while !rest.is_empty() {
            let n = self.conn.handle_input(rest, Instant::now());
            rest = &rest[n..];
            if n == 0 {
                break;
            }
        }
        let mut events = Vec::new();
        while let Some(e) = self.conn.poll_event() {
            events.push(e);
        }
        events
    }
}

// ----- memory -----

/// A field of `/proc/self/status` in KiB (`VmRSS:`, `VmSize:`), where there is one.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system) used by the threads of process `pid` whose names start
/// with one of `names`, from `/proc/<pid>/task/*/stat`.
pub fn thread_cpu_time(pid: u32, names: &[&str]) -> Option<Duration> {
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    let mut ticks = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        if !names.iter().any(|n| name.starts_with(n)) {
            continue;
        }
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let t = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        ticks += t(11)? + t(12)?;
    }
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// Dials `addr` with the palisade client of adapter `kind` (from any thread).
pub fn dial(kind: Kind, addr: &str, config: Config) -> Result<Conn, LinkError> {
    let endpoint = Endpoint::new(config).expect("member config");
    let addr = addr.to_owned();
    bounded("a member's join", JOIN_BOUND, move || match kind {
        Kind::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(palisade::tokio::connect_with(&endpoint, &addr))
            .map(Conn::Tokio),
        Kind::Blocking => palisade::blocking::connect_with(&endpoint, &addr).map(Conn::Blocking),
    })
}
