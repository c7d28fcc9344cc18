//! The harness of `tests/refusal.rs`: peers that record what a palisade node wrote them
//! (plaintext, or TLS driven by hand with rustls), decoded at one instant without
//! waiting; a foreign acceptor that answers a HELLO badly; forged HELLOs; listeners of
//! every adapter; a socket whose peer never reads; and load on every core.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use palisade::frame::{self, FrameDecoder, FrameKind};
use palisade::join::{Auth, JoinHello, JoinWelcome};
use palisade::preface::{PREFACE, PROTOCOL_VERSION};
use palisade::{CloseCode, CloseReason, Config, Endpoint, RejectCode, Rejection, SharedSecret};
use palisade_driver::admission::AdmissionLimits;
use palisade_driver::FailureHook;
use palisade_testkit::certs::{TestCa, TestIdentity};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

pub const CLUSTER: &str = "refusal";
/// Rounds per scenario: the race shows up in some rounds only.
pub const ROUNDS: usize = 12;
/// Longest any one join may take before the test calls it stuck.
pub const BOUND: Duration = Duration::from_secs(10);

// ----- test isolation and load -----

/// The tests load the machine and measure time: one at a time.
pub static ALONE: Mutex<()> = Mutex::new(());

pub fn alone() -> MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Busy threads, one per core, for as long as this lives: a loaded machine is where the
/// driver falls behind the caller.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub use palisade_testkit::bounded;

// ----- settings -----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tokio,
    AsyncStd,
    Smol,
    Blocking,
}

pub struct Cluster {
    ca: TestCa,
    acceptor_id: TestIdentity,
    member_id: TestIdentity,
    secret: SharedSecret,
}

impl Cluster {
    pub fn new() -> Self {
        let ca = TestCa::new("refusal CA");
        Self {
            // Each names its node id (node_id_in_cert) and the acceptor the address it
            // is dialed at (verify_hostname).
            acceptor_id: ca.node_at("listener", "127.0.0.1"),
            member_id: ca.node("dialer"),
            ca,
            secret: SharedSecret::new(vec![0x3c; 32]).expect("secret"),
        }
    }

    pub fn node(&self, name: &str, tls: bool, id: &TestIdentity) -> Config {
        let mut c = Config::new(CLUSTER, name).with_secret(self.secret.clone());
        if tls {
            c = c.with_tls(self.ca.tls(id));
        }
        c.handshake_timeout = BOUND;
        c
    }

    pub fn dialer(&self, tls: bool) -> Config {
        self.node("dialer", tls, &self.member_id)
    }

    pub fn listener(&self, tls: bool) -> Config {
        self.node("listener", tls, &self.acceptor_id)
    }

    /// A rustls client with a member's certificate, for the raw peer of a TLS listener.
    pub fn rustls_client(&self) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert.clone()).expect("CA");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.member_id.key_der.clone()));
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(self.member_id.chain.clone(), key)
            .expect("client certificate");
        Arc::new(client)
    }

    /// A rustls server with the acceptor's certificate, for the foreign acceptor.
    pub fn rustls_server(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.acceptor_id.key_der.clone()));
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.acceptor_id.chain.clone(), key)
            .expect("server certificate");
        server.send_tls13_tickets = 0;
        Arc::new(server)
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ----- what a peer has received -----

/// A frame the peer received, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    Reject(Rejection),
    Close(CloseReason),
    Other(FrameKind),
}

/// Everything a peer's socket held at one moment.
#[derive(Debug, Default)]
pub struct Seen {
    frames: Vec<Said>,
    /// Bytes after the last whole frame.
    partial: usize,
    /// TLS only: the close_notify alert arrived.
    close_notify: bool,
    /// The TCP stream ended (FIN).
    eof: bool,
    /// Anything else: a reset, a TLS error.
    trouble: Option<String>,
}

/// What a failed join owes the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    Reject(RejectCode),
    Close(CloseCode),
}

impl Said {
    pub fn owed(&self) -> Option<Owed> {
        match self {
            Said::Reject(r) => Some(Owed::Reject(r.code)),
            Said::Close(c) => Some(Owed::Close(c.code)),
            Said::Other(_) => None,
        }
    }
}

impl Seen {
    /// Asserts the peer has what it is `owed` and nothing else, then the end of the
    /// stream (TLS: close_notify first).
    pub fn assert_owed(&self, owed: Owed, tls: bool, what: &str) {
        let had: Vec<_> = self.frames.iter().map(Said::owed).collect();
        assert!(
            had == [Some(owed)],
            "{what}: the peer had {had:?} (expected {owed:?}) when the failure was reported: {self:?}"
        );
        assert_eq!(self.partial, 0, "{what}: a frame was cut off: {self:?}");
        assert!(self.trouble.is_none(), "{what}: {self:?}");
        if tls {
            assert!(self.close_notify, "{what}: no close_notify yet: {self:?}");
        }
        assert!(self.eof, "{what}: the stream had not ended yet: {self:?}");
    }
}

/// Takes what `stream` holds right now, without waiting.
pub fn take_now(stream: &TcpStream) -> (Vec<u8>, bool, Option<String>) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let mut reader = stream;
    stream.set_nonblocking(true).expect("nonblocking");
    let (eof, trouble) = loop {
        match reader.read(&mut buf) {
            Ok(0) => break (true, None),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break (false, None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break (false, Some(format!("read: {e}"))),
        }
    };
    stream.set_nonblocking(false).expect("blocking");
    (bytes, eof, trouble)
}

/// Splits a frame stream (after the preface, if `bytes` opens with one) into frames.
pub fn frames_of(bytes: &[u8], seen: &mut Seen) {
    let body = bytes.strip_prefix(&PREFACE[..]).unwrap_or(bytes);
    let mut buf = BytesMut::from(body);
    let mut dec = FrameDecoder::new(1 << 20);
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(f)) => seen.frames.push(match f.kind {
                FrameKind::Reject => {
                    Said::Reject(Rejection::decode(&f.payload).expect("REJECT body"))
                }
                FrameKind::Close => {
                    Said::Close(CloseReason::decode(&f.payload).expect("CLOSE body"))
                }
                kind => Said::Other(kind),
            }),
            Ok(None) => break,
            Err(e) => {
                seen.trouble = Some(format!("frame: {e}"));
                break;
            }
        }
    }
    seen.partial = buf.len();
}

/// What a plaintext peer holds right now.
pub fn seen_plain(stream: &TcpStream) -> Seen {
    let (bytes, eof, trouble) = take_now(stream);
    let mut seen = Seen {
        eof,
        trouble,
        ..Seen::default()
    };
    frames_of(&bytes, &mut seen);
    seen
}

/// What a TLS peer (its socket and session) holds right now.
pub fn seen_tls(stream: &TcpStream, tls: &mut rustls::Connection) -> Seen {
    let (bytes, eof, trouble) = take_now(stream);
    let mut seen = Seen {
        eof,
        trouble,
        ..Seen::default()
    };
    let mut plain = Vec::new();
    let mut rest = &bytes[..];
    loop {
        if !rest.is_empty() {
            if let Err(e) = tls.read_tls(&mut rest) {
                seen.trouble = Some(format!("read_tls: {e}"));
                break;
            }
        }
        if let Err(e) = tls.process_new_packets() {
            seen.trouble = Some(format!("TLS: {e}"));
            break;
        }
        let mut buf = [0u8; 4096];
        match tls.reader().read(&mut buf) {
            Ok(0) => {
                seen.close_notify = true;
                break;
            }
            Ok(n) => plain.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock && !rest.is_empty() => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => {
                seen.trouble = Some(format!("TLS read: {e}"));
                break;
            }
        }
    }
    frames_of(&plain, &mut seen);
    seen
}

// ----- a foreign acceptor that answers with a bad WELCOME -----

/// How the foreign acceptor answers the HELLO.
#[derive(Debug, Clone, Copy)]
pub enum Bad {
    /// A WELCOME with a proof made without the secret: the dialer refuses with 3.
    WrongProof,
    /// A WELCOME without a proof: the dialer refuses with 1.
    NoProof,
    /// A DATA frame instead of a WELCOME: the dialer refuses with 10.
    Data,
    /// Nothing: the dialer's handshake times out and it owes a CLOSE (4).
    Silent,
}

/// The dialer's handshake timeout in the `Silent` rounds.
pub const SILENT_TIMEOUT: Duration = Duration::from_millis(200);

impl Bad {
    pub const ALL: [Bad; 4] = [Bad::WrongProof, Bad::NoProof, Bad::Data, Bad::Silent];

    pub fn owed(self) -> Owed {
        match self {
            Self::WrongProof => Owed::Reject(RejectCode::AuthenticationFailed),
            Self::NoProof => Owed::Reject(RejectCode::SecretRequired),
            Self::Data => Owed::Reject(RejectCode::Malformed),
            Self::Silent => Owed::Close(CloseCode::HandshakeTimeout),
        }
    }
}

/// A peer's end of one link (the socket, and the TLS session when there is one), as the
/// palisade side's failure is reported.
pub struct Recording {
    pub stream: TcpStream,
    pub tls: Option<rustls::Connection>,
}

impl Recording {
    pub fn seen(&mut self) -> Seen {
        match &mut self.tls {
            Some(tls) => seen_tls(&self.stream, tls),
            None => seen_plain(&self.stream),
        }
    }
}

/// The HELLO at the start of `bytes` (the preface, then one whole HELLO frame), if all
/// of it is there.
pub fn hello_in(bytes: &[u8]) -> Option<JoinHello> {
    let body = bytes.strip_prefix(&PREFACE[..])?;
    let mut buf = BytesMut::from(body);
    let f = FrameDecoder::new(1 << 20)
        .decode(&mut buf)
        .expect("the dialer's frames")?;
    assert_eq!(f.kind, FrameKind::Hello, "the dialer's first frame");
    Some(JoinHello::decode(&f.payload).expect("the dialer's HELLO"))
}

/// Accepts one dialer, reads its HELLO, and answers with a bad WELCOME; hands its end of
/// the link to `handover` just before the WELCOME goes out.
pub fn answer_badly(
    listener: &TcpListener,
    tls: Option<Arc<ServerConfig>>,
    bad: Bad,
    handover: Sender<Recording>,
) {
    let (mut stream, _) = listener.accept().expect("accept");
    stream.set_read_timeout(Some(BOUND)).expect("read timeout");
    let mut session = tls.map(|c| ServerConnection::new(c).expect("TLS session"));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let hello = loop {
        if let Some(hello) = hello_in(&got) {
            break hello;
        }
        match &mut session {
            None => {
                let n = stream.read(&mut buf).expect("read HELLO");
                assert!(n > 0, "the dialer left before its HELLO");
                got.extend_from_slice(&buf[..n]);
            }
            Some(s) => {
                s.complete_io(&mut stream).expect("TLS handshake");
                loop {
                    match s.reader().read(&mut buf) {
                        Ok(0) => panic!("the dialer left before its HELLO"),
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("TLS read: {e}"),
                    }
                }
            }
        }
    };
    let welcome = JoinWelcome {
        version: hello.version,
        node_id: "foreign".into(),
        timestamp_ms: unix_ms(),
        nonce: [0x42; 32],
        max_frame: hello.max_frame,
        auth: match bad {
            Bad::WrongProof => hello.auth.map(|a| Auth {
                key_id: a.key_id,
                proof: [0; 32],
            }),
            _ => None,
        },
    };
    let mut reply = BytesMut::from(&PREFACE[..]);
    match bad {
        Bad::WrongProof | Bad::NoProof => {
            frame::encode(FrameKind::Welcome, &welcome.encode(), &mut reply)
        }
        Bad::Data => frame::encode(FrameKind::Data, b"too early", &mut reply),
        Bad::Silent => reply.clear(),
    }
    let wire = match &mut session {
        None => reply.to_vec(),
        Some(s) => {
            s.writer().write_all(&reply).expect("TLS write");
            let mut wire = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut wire).expect("write_tls");
            }
            wire
        }
    };
    let recording = Recording {
        stream: stream.try_clone().expect("clone"),
        tls: session.map(rustls::Connection::Server),
    };
    handover.send(recording).expect("handover");
    stream.write_all(&wire).expect("write WELCOME");
}

// ----- the acceptor side: a listener refuses a HELLO -----

/// A listener of any adapter (kept alive with its runtime).
pub enum Listening {
    Tokio {
        // Dropped before the runtime that runs it.
        listener: palisade::tokio::Listener,
        _rt: tokio::runtime::Runtime,
    },
    AsyncStd(palisade::async_std::Listener),
    Smol(palisade::smol::Listener),
    Blocking(palisade::blocking::Listener),
}

impl Listening {
    /// A listener whose admission control lets one source connect and fail as often as
    /// the test needs: every round's forged HELLO comes from 127.0.0.1, and the default
    /// limits would refuse that source after 40 quick connections or ten failed joins.
    pub fn bind(kind: Kind, endpoint: Endpoint, hook: FailureHook) -> Self {
        let at = "127.0.0.1:0";
        let limits = AdmissionLimits {
            new_connection_rate_per_source: 1e6,
            new_connection_burst_per_source: 1_000_000,
            failed_join_rate_per_source: 1e6,
            failed_join_burst_per_source: 1_000_000,
            ..AdmissionLimits::default()
        };
        match kind {
            Kind::Tokio => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let l = rt
                    .block_on(palisade::tokio::Listener::bind_with_limits(
                        at,
                        endpoint,
                        Some(hook),
                        limits,
                    ))
                    .expect("bind");
                Self::Tokio {
                    listener: l,
                    _rt: rt,
                }
            }
            Kind::AsyncStd => Self::AsyncStd(
                async_std::task::block_on(palisade::async_std::Listener::bind_with_limits(
                    at,
                    endpoint,
                    Some(hook),
                    limits,
                ))
                .expect("bind"),
            ),
            Kind::Smol => Self::Smol(
                smol::block_on(palisade::smol::Listener::bind_with_limits(
                    at,
                    endpoint,
                    Some(hook),
                    limits,
                ))
                .expect("bind"),
            ),
            Kind::Blocking => Self::Blocking(
                palisade::blocking::Listener::bind_with_limits(at, endpoint, Some(hook), limits)
                    .expect("bind"),
            ),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Self::Tokio { listener, .. } => listener.local_addr(),
            Self::AsyncStd(l) => l.local_addr(),
            Self::Smol(l) => l.local_addr(),
            Self::Blocking(l) => l.local_addr(),
        }
    }
}

/// A HELLO that names this cluster's key but carries a proof made without the secret.
pub fn forged_hello(cluster: &Cluster, round: usize) -> Vec<u8> {
    static NONCE: AtomicU64 = AtomicU64::new(1);
    let mut nonce = [0u8; 32];
    nonce[..8].copy_from_slice(&NONCE.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    nonce[8..16].copy_from_slice(&unix_ms().to_be_bytes());
    let hello = JoinHello {
        version: PROTOCOL_VERSION,
        cluster_name: CLUSTER.into(),
        node_id: format!("raw-{round}"),
        timestamp_ms: unix_ms(),
        nonce,
        max_frame: 1 << 20,
        auth: Some(Auth {
            key_id: cluster.secret.key_id(),
            proof: [0; 32],
        }),
    };
    let mut out = BytesMut::from(&PREFACE[..]);
    frame::encode(FrameKind::Hello, &hello.encode(), &mut out);
    out.to_vec()
}

/// A raw peer of a TLS listener: connects, completes the TLS handshake with a member's
/// certificate, and returns the socket with `plain` encrypted, ready to write.
pub fn tls_peer(
    addr: SocketAddr,
    client: &Arc<ClientConfig>,
    plain: &[u8],
) -> (TcpStream, ClientConnection, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, BOUND).expect("raw connect");
    stream.set_read_timeout(Some(BOUND)).expect("read timeout");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut tls = ClientConnection::new(Arc::clone(client), name).expect("TLS session");
    while tls.is_handshaking() {
        tls.complete_io(&mut stream)
            .expect("TLS handshake with the listener");
    }
    tls.writer().write_all(plain).expect("TLS write");
    let mut wire = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut wire).expect("write_tls");
    }
    (stream, tls, wire)
}

// ----- a peer that never reads -----

/// A dialer's socket whose peer never reads, its send buffer already full: the join
/// cannot even send its HELLO.
pub fn clogged_socket() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dialer = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (peer, _) = l.accept().expect("accept");
    dialer.set_nonblocking(true).expect("nonblocking");
    let chunk = vec![0u8; 64 * 1024];
    // The kernel keeps growing the peer's receive buffer for a while (a few MiB): full
    // means no byte taken for 300 ms.
    let until = Instant::now() + BOUND;
    let mut stuck_since: Option<Instant> = None;
    let mut full = false;
    while Instant::now() < until {
        match (&dialer).write(&chunk) {
            Ok(_) => stuck_since = None,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(300) {
                    full = true;
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("filling the socket: {e}"),
        }
    }
    assert!(full, "the socket never filled");
    dialer.set_nonblocking(false).expect("blocking");
    (dialer, peer)
}
