// Each bench (`mod common;` in inmemory.rs, loopback.rs, memory.rs) uses a subset of
// these helpers, so what one bench leaves unused would be reported as dead code there.
#![allow(dead_code)]

//! Helpers the benches share: the certificates and settings palisade and its rustls
//! baselines are configured from, driving palisade and bare rustls connections in
//! memory, and reading the command line and criterion's files.

pub mod flood;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_core::tls::TlsVersion;
use palisade_core::{Config, Connection, Endpoint, Event, SharedSecret};
use palisade_testkit::certs::{TestCa, TestIdentity};
use palisade_testkit::{SeededRandom, EPOCH_MS};
use rustls::client::Resumption;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

// ---------------------------------------------------------------------------------------
// Certificates and settings

/// The initiator's node name (rustls: the client).
pub const INITIATOR: &str = "node-a";

/// The acceptor's node name and certificate name (rustls: the server), which the
/// initiators dial.
pub const ACCEPTOR: &str = "node-b";

/// The name a rustls client checks the acceptor's certificate against.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(ACCEPTOR).expect("server name")
}

/// The wall clock every connection starts at (inside the test certificates' validity).
pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(EPOCH_MS)
}

/// The join's shared secret, the same on both nodes (as palisade is deployed).
pub fn secret() -> SharedSecret {
    SharedSecret::new(vec![0x42; 32]).expect("a 32-byte secret")
}

/// Certificates for both nodes, from one CA (ECDSA P-256).
pub struct Certs {
    ca: TestCa,
    a: TestIdentity,
    b: TestIdentity,
}

impl Certs {
    /// A CA named `ca_name` and one identity per node.
    pub fn new(ca_name: &str) -> Self {
        let ca = TestCa::new(ca_name);
        let a = ca.node(INITIATOR);
        // The loopback benches dial the acceptor at 127.0.0.1 (verify_hostname).
        let b = ca.node_at(ACCEPTOR, "127.0.0.1");
        Self { ca, a, b }
    }

    /// palisade settings for both nodes (initiator, acceptor); `tls`: mutual TLS 1.3
    /// under the join.
    pub fn palisade(&self, tls: bool) -> (Config, Config) {
        let node = |name: &str, id: &TestIdentity| {
            let config = Config::new("bench", name).with_secret(secret());
            if tls {
                let mut t = self.ca.tls(id);
                t.min_version = TlsVersion::Tls13;
                config.with_tls(t)
            } else {
                config
            }
        };
        (node(INITIATOR, &self.a), node(ACCEPTOR, &self.b))
    }

    /// Bare rustls settings with the same certificates, TLS 1.3 only, configured like
    /// palisade's sessions (no resumption, no tickets, so every handshake is a full
    /// one) and with palisade's cipher suite order, so both stacks negotiate the same
    /// suite (`TLS13_AES_128_GCM_SHA256`): client node-a, server node-b.
    pub fn rustls(&self) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = palisade_core::tls::default_cipher_suites();
        self.rustls_with(provider)
    }

    /// The same with rustls's own defaults (its suite order puts
    /// `TLS13_AES_256_GCM_SHA384` first): what a user of bare rustls gets.
    pub fn rustls_defaults(&self) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
        self.rustls_with(rustls::crypto::ring::default_provider())
    }

    fn rustls_with(
        &self,
        provider: rustls::crypto::CryptoProvider,
    ) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
        let provider = Arc::new(provider);
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert.clone()).expect("CA certificate");
        let roots = Arc::new(roots);
        let key =
            |id: &TestIdentity| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone()));
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .expect("client verifier");
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.b.chain.clone(), key(&self.b))
            .expect("server certificate");
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_client_auth_cert(self.a.chain.clone(), key(&self.a))
            .expect("client certificate");
        client.resumption = Resumption::disabled();
        (Arc::new(client), Arc::new(server))
    }
}

/// An endpoint whose random source is seeded, so runs repeat.
pub fn seeded_endpoint(config: Config, seed: u64) -> Endpoint {
    Endpoint::with_random(config, Arc::new(SeededRandom::new(seed))).expect("config")
}

// ---------------------------------------------------------------------------------------
// Driving palisade connections in memory

/// A fresh, unjoined link: the initiator's connection dialing the acceptor, and the
/// acceptor's.
pub fn link(initiator: &Endpoint, acceptor: &Endpoint, now: Instant) -> (Connection, Connection) {
    let a = initiator.connect(ACCEPTOR, now, wall()).expect("connect");
    let b = acceptor.accept(now, wall()).expect("accept");
    (a, b)
}

/// Offers `bytes` to `conn` until it took all of them, handing each event to `on_event`.
pub fn feed(conn: &mut Connection, bytes: &[u8], now: Instant, on_event: &mut impl FnMut(Event)) {
    let mut off = 0;
    loop {
        let n = conn.handle_input(&bytes[off..], now);
        off += n;
        let mut events = 0;
        while let Some(event) = conn.poll_event() {
            events += 1;
            on_event(event);
        }
        if off == bytes.len() {
            return;
        }
        assert!(n > 0 || events > 0, "the connection stopped taking input");
    }
}

/// The payload bytes an event delivers (frames are dropped as they come); a closed link
/// fails the bench.
fn payload_len(event: Event) -> usize {
    match event {
        Event::Frame(f) => f.len(),
        // A re-join carries no payload (the benches never change settings anyway).
        Event::Joined(_) | Event::Rejoined(_) => 0,
        Event::Closed(cause) => panic!("link closed: {cause}"),
    }
}

/// Moves bytes both ways until neither side has anything to send; returns the payload
/// bytes each side received (`a`, `b`).
pub fn pump(a: &mut Connection, b: &mut Connection, now: Instant) -> (usize, usize) {
    let (mut to_a, mut to_b) = (0, 0);
    loop {
        let mut moved = false;
        while let Some(out) = a.poll_transmit() {
            feed(b, &out, now, &mut |event| to_b += payload_len(event));
            moved = true;
        }
        while let Some(out) = b.poll_transmit() {
            feed(a, &out, now, &mut |event| to_a += payload_len(event));
            moved = true;
        }
        if !moved {
            return (to_a, to_b);
        }
    }
}

/// Runs a link's handshake (TLS if on, then the join) to joined on both sides.
pub fn join(a: &mut Connection, b: &mut Connection, now: Instant) {
    pump(a, b, now);
    assert!(a.is_joined() && b.is_joined(), "the link did not join");
}

// ---------------------------------------------------------------------------------------
// Driving bare rustls connections in memory

/// A new client (node-a) and server (node-b) connection, not yet handshaken.
pub fn rustls_pair(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
) -> (rustls::Connection, rustls::Connection) {
    (
        ClientConnection::new(client.clone(), server_name())
            .expect("client")
            .into(),
        ServerConnection::new(server.clone())
            .expect("server")
            .into(),
    )
}

/// Moves everything `from` wants to write into `to`, draining `to`'s plaintext into
/// `scratch`; returns (socket bytes moved, plaintext bytes read). `wire` keeps its
/// capacity from call to call.
pub fn rustls_transfer(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
    wire: &mut Vec<u8>,
    scratch: &mut [u8],
) -> (usize, usize) {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).expect("write_tls");
    }
    let mut rest = &wire[..];
    let mut plain = 0;
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls");
        to.process_new_packets().expect("TLS error");
        loop {
            match to.reader().read(scratch) {
                Ok(0) => break,
                Ok(n) => plain += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("rustls read: {e}"),
            }
        }
    }
    (wire.len(), plain)
}

/// Moves bytes both ways until neither side has anything to send; returns the plaintext
/// bytes each side received (`c`, `s`).
pub fn rustls_pump(
    c: &mut rustls::Connection,
    s: &mut rustls::Connection,
    wire: &mut Vec<u8>,
    scratch: &mut [u8],
) -> (usize, usize) {
    let (mut to_c, mut to_s) = (0, 0);
    loop {
        let (sent_c, got_s) = rustls_transfer(c, s, wire, scratch);
        let (sent_s, got_c) = rustls_transfer(s, c, wire, scratch);
        to_s += got_s;
        to_c += got_c;
        if sent_c == 0 && sent_s == 0 {
            return (to_c, to_s);
        }
    }
}

/// A bare rustls handshake, both ways until neither side has anything to send.
pub fn rustls_handshake(
    client: &mut rustls::Connection,
    server: &mut rustls::Connection,
    wire: &mut Vec<u8>,
    scratch: &mut [u8],
) {
    rustls_pump(client, server, wire, scratch);
    assert!(
        !client.is_handshaking() && !server.is_handshaking(),
        "the rustls handshake did not complete"
    );
}

/// Writes `data` with as few `write` calls as rustls's send buffer allows, moving the
/// records to `to` whenever the buffer is full; the last records stay in `from` for the
/// caller to move. Returns the plaintext bytes `to` received.
pub fn rustls_write(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
    wire: &mut Vec<u8>,
    scratch: &mut [u8],
    data: &[u8],
) -> usize {
    let mut rest = data;
    let mut got = 0;
    while !rest.is_empty() {
        let n = from.writer().write(rest).expect("rustls write");
        rest = &rest[n..];
        if !rest.is_empty() {
            got += rustls_transfer(from, to, wire, scratch).1;
        }
    }
    got
}

// ---------------------------------------------------------------------------------------
// The command line and criterion's files

/// Whether the command line has `flag`.
pub fn has_arg(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

/// Whether this process benchmarks (`cargo bench`: `--bench`) rather than smoke-tests
/// the routines (`cargo test --benches`, `--test`), lists them (`--list`) or profiles
/// them (`--profile-time`).
pub fn benchmarking() -> bool {
    has_arg("--bench")
        && !has_arg("--test")
        && !has_arg("--list")
        && !std::env::args().any(|a| a.starts_with("--profile-time"))
}

/// Short runs: `PALISADE_BENCH_QUICK=1` (criterion's `--quick` is a flag of its own).
pub fn quick_env() -> bool {
    std::env::var_os("PALISADE_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `target` beside this package's Cargo.toml.
pub fn manifest_target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `default()`.
pub fn target_dir(default: impl FnOnce() -> PathBuf) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(default, PathBuf::from)
}

/// Where criterion keeps its results: `CRITERION_HOME`, else `criterion` in the target
/// directory (`CARGO_TARGET_DIR`, else `default_target()`).
pub fn criterion_dir(default_target: impl FnOnce() -> PathBuf) -> PathBuf {
    match std::env::var_os("CRITERION_HOME") {
        Some(home) => PathBuf::from(home),
        None => target_dir(default_target).join("criterion"),
    }
}

/// Criterion's estimate of one iteration, in nanoseconds, from an `estimates.json`: the
/// slope when criterion sampled linearly, else the mean.
pub fn estimate_ns(estimates_json: &str) -> Option<f64> {
    point_estimate(estimates_json, "slope").or_else(|| point_estimate(estimates_json, "mean"))
}

/// `"point_estimate"` of `key` in criterion's estimates.json (`None` when absent/null).
fn point_estimate(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))?;
    let rest = json.get(at + key.len() + 3..)?;
    if rest.trim_start().starts_with("null") {
        return None;
    }
    let p = rest.find("\"point_estimate\":")?;
    let num = rest.get(p + "\"point_estimate\":".len()..)?;
    let end = num.find([',', '}'])?;
    num.get(..end)?.trim().parse().ok()
}
