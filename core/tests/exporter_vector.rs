//! The channel-binding vectors of docs/PROTOCOL.md §9, taken from fixed TLS sessions.
//!
//! A second implementation must compute palisade's exporter value exactly; the trap is
//! that RFC 5705 (TLS 1.2) mixes the context length in only when a context is given, so
//! "no context" and "an empty context" differ there, while in TLS 1.3 they do not. So the
//! spec lists, for one TLS 1.3 and one TLS 1.2 session, the secrets and the outputs with
//! and without an empty context, and this test replays those sessions in memory —
//! deterministically: seeded randomness for rustls, X25519 ephemeral keys from that seed,
//! Ed25519 certificates (deterministic signatures) from fixed keys, and a fixed clock —
//! to show the spec's numbers are what rustls computes. It also shows that palisade's own
//! connection binds with the no-context value.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use palisade_core::frame::{FrameDecoder, FrameKind};
use palisade_core::join::{initiator_proof, JoinHello, SharedSecret};
use palisade_core::preface::PREFACE;
use palisade_core::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use palisade_core::tls::pki_types::{ServerName, UnixTime};
use palisade_core::tls::{
    Identity, TlsConfig, TrustAnchors, CHANNEL_BINDING_LABEL, CHANNEL_BINDING_LEN,
};
use palisade_core::{Config, Connection, Endpoint};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::{
    ring::default_provider, ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom,
    SupportedKxGroup,
};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::time_provider::TimeProvider;
use rustls::{
    ClientConfig, ClientConnection, KeyLog, NamedGroup, RootCertStore, ServerConfig,
    ServerConnection, SupportedProtocolVersion,
};
use sha2::{Digest, Sha256};

const SPEC: &str = include_str!("../../docs/PROTOCOL.md");

/// 2026-01-01T00:00:00Z: the clock of every certificate check here.
const NOW_UNIX: u64 = 1_767_225_600;

/// rustls's randomness: SHA-256(seed ‖ counter) blocks, so each side's client/server
/// random, session id and ephemeral keys are the same in every run.
#[derive(Debug)]
struct SeededRandom {
    seed: &'static str,
    counter: Mutex<u64>,
}

impl SecureRandom for SeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        let mut counter = self.counter.lock().map_err(|_| GetRandomFailed)?;
        for chunk in buf.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(counter.to_be_bytes())
                .finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
            *counter += 1;
        }
        Ok(())
    }
}

/// X25519 whose private keys come from the side's seeded randomness (ring draws its
/// ephemeral keys from the OS and cannot be seeded).
#[derive(Debug)]
struct SeededX25519(&'static SeededRandom);

struct ActiveX25519 {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl SupportedKxGroup for SeededX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut bytes = [0u8; 32];
        self.0.fill(&mut bytes)?;
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(ActiveX25519 { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for ActiveX25519 {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<rustls::crypto::SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| rustls::PeerMisbehaved::InvalidKeyShare)?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(shared.as_bytes().as_slice().into())
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// The ring provider with seeded randomness and seeded X25519 (the only group offered).
fn seeded_provider(seed: &'static str) -> Arc<CryptoProvider> {
    let random: &'static SeededRandom = Box::leak(Box::new(SeededRandom {
        seed,
        counter: Mutex::new(0),
    }));
    let x25519: &'static SeededX25519 = Box::leak(Box::new(SeededX25519(random)));
    Arc::new(CryptoProvider {
        secure_random: random,
        kx_groups: vec![x25519],
        ..default_provider()
    })
}

#[derive(Debug)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(NOW_UNIX)))
    }
}

/// An Ed25519 key from a fixed seed (PKCS#8 v1: the RFC 8410 prefix, then the seed).
fn ed25519(seed: u8) -> KeyPair {
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend([seed; 32]);
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &rcgen::PKCS_ED25519)
        .unwrap()
}

fn params(name: &str, serial: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from(vec![serial]));
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    params
}

/// A CA and the two node certificates it signs, all fixed.
struct Pki {
    ca: CertificateDer<'static>,
    /// (chain, PKCS#8 key) of node-a (client) and node-b (server).
    nodes: [(Vec<CertificateDer<'static>>, Vec<u8>); 2],
}

impl Pki {
    fn new() -> Self {
        let ca_key = ed25519(1);
        let mut ca = params("palisade vector CA", 1);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap().der().clone();
        let issuer = Issuer::new(ca, ca_key);
        let node = |name: &str, seed: u8| {
            let key = ed25519(seed);
            let mut p = params(name, seed);
            p.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &issuer).unwrap().der().clone();
            (vec![cert], key.serialize_der())
        };
        Self {
            ca: ca_cert,
            nodes: [node("node-a", 2), node("node-b", 3)],
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(roots)
    }

    fn key(&self, i: usize) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.nodes[i].1.clone().into())
    }
}

/// Everything rustls hands its `KeyLog`: (label, client_random, secret).
#[derive(Debug, Default)]
struct Captured(Mutex<Vec<(String, Vec<u8>, Vec<u8>)>>);

impl KeyLog for Captured {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        if let Ok(mut log) = self.0.lock() {
            log.push((label.to_owned(), client_random.to_vec(), secret.to_vec()));
        }
    }
}

/// A server as palisade configures its acceptor (mutual TLS, extended master secret
/// required, no resumption, no tickets), from seeded randomness.
fn server(pki: &Pki, version: &'static SupportedProtocolVersion) -> ServerConnection {
    let provider = seeded_provider("palisade exporter vector: server");
    let verifier = WebPkiClientVerifier::builder_with_provider(pki.roots(), provider.clone())
        .build()
        .unwrap();
    let mut config = ServerConfig::builder_with_details(provider, Arc::new(FixedTime))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.nodes[1].0.clone(), pki.key(1))
        .unwrap();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.require_ems = true;
    ServerConnection::new(Arc::new(config)).unwrap()
}

/// What one replayed session produced.
#[derive(Debug, PartialEq)]
struct Replay {
    /// Every flight, in order: (from the client?, bytes).
    transcript: Vec<(bool, Vec<u8>)>,
    suite: String,
    keylog: Vec<(String, Vec<u8>, Vec<u8>)>,
    /// The exporter with palisade's label, no context (`None`), 32 bytes.
    no_context: Vec<u8>,
    /// The same with an empty context (`Some(&[])`).
    empty_context: Vec<u8>,
}

impl Replay {
    fn secret(&self, label: &str) -> String {
        let found = self.keylog.iter().find(|(l, _, _)| l == label);
        hex::encode(&found.unwrap_or_else(|| panic!("rustls logged {label}")).2)
    }

    /// The 32-byte random of the first flight from one side: the record header (5),
    /// the handshake header (4) and legacy_version (2) precede it.
    fn random(&self, from_client: bool, handshake_type: u8) -> String {
        let (_, flight) = self.transcript.iter().find(|(c, _)| *c == from_client).unwrap();
        assert_eq!((flight[0], flight[5]), (22, handshake_type), "a Hello opens the flight");
        hex::encode(&flight[11..43])
    }
}

/// Exports palisade's binding, and the same with an empty context, from one side.
fn export(conn: &rustls::Connection, context: Option<&[u8]>) -> Vec<u8> {
    let mut out = [0u8; CHANNEL_BINDING_LEN];
    conn.export_keying_material(&mut out[..], CHANNEL_BINDING_LABEL, context)
        .unwrap();
    out.to_vec()
}

/// Moves flights between the two sides until both are quiet; returns them in order.
fn pump(client: &mut rustls::Connection, server: &mut rustls::Connection) -> Vec<(bool, Vec<u8>)> {
    let mut transcript = Vec::new();
    for _ in 0..20 {
        let mut moved = false;
        for from_client in [true, false] {
            let (tx, rx) = if from_client {
                (&mut *client, &mut *server)
            } else {
                (&mut *server, &mut *client)
            };
            let mut flight = Vec::new();
            while tx.wants_write() {
                tx.write_tls(&mut flight).unwrap();
            }
            if flight.is_empty() {
                continue;
            }
            moved = true;
            let mut rest = &flight[..];
            while !rest.is_empty() {
                rx.read_tls(&mut rest).unwrap();
                rx.process_new_packets().unwrap();
            }
            transcript.push((from_client, flight));
        }
        if !moved {
            return transcript;
        }
    }
    panic!("the handshake never went quiet");
}

/// One full handshake between a deterministic client and server.
fn replay(version: &'static SupportedProtocolVersion) -> Replay {
    let pki = Pki::new();
    let keylog = Arc::new(Captured::default());
    let provider = seeded_provider("palisade exporter vector: client");
    let mut config = ClientConfig::builder_with_details(provider, Arc::new(FixedTime))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_client_auth_cert(pki.nodes[0].0.clone(), pki.key(0))
        .unwrap();
    config.resumption = rustls::client::Resumption::disabled();
    config.require_ems = true;
    config.key_log = keylog.clone();
    let name = ServerName::try_from("node-b").unwrap();
    let mut client: rustls::Connection = ClientConnection::new(Arc::new(config), name)
        .unwrap()
        .into();
    let mut server: rustls::Connection = server(&pki, version).into();
    let transcript = pump(&mut client, &mut server);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    for context in [None, Some(&[][..])] {
        assert_eq!(export(&client, context), export(&server, context));
    }
    let keylog = std::mem::take(&mut *keylog.0.lock().unwrap());
    Replay {
        transcript,
        suite: format!("{:?}", client.negotiated_cipher_suite().unwrap().suite()),
        keylog,
        no_context: export(&client, None),
        empty_context: export(&client, Some(&[])),
    }
}

/// The `tls12_*` / `tls13_*` lines of the spec's test-vector section. (The frame and
/// join vectors' readers take names of letters and `_` only, so they skip these.)
fn spec_vectors(prefix: &str) -> Vec<(String, String)> {
    let section = SPEC.split("## 9. Test vectors").nth(1).unwrap();
    section
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect()
}

fn check(prefix: &str, computed: Vec<(&str, String)>) {
    let computed: Vec<(String, String)> = computed
        .into_iter()
        .map(|(name, value)| (format!("{prefix}{name}"), value))
        .collect();
    if std::env::var_os("PALISADE_PRINT_VECTORS").is_some() {
        for (name, value) in &computed {
            println!("{name} = {value}");
        }
    }
    assert_eq!(spec_vectors(prefix), computed, "docs/PROTOCOL.md §9, `{prefix}*`");
}

#[test]
fn a_tls13_session_replays_byte_for_byte_and_matches_the_spec_vectors() {
    let replay = replay(&rustls::version::TLS13);
    assert_eq!(replay, self::replay(&rustls::version::TLS13), "deterministic");
    // An absent context is the empty string in TLS 1.3 (RFC 8446 §7.5).
    assert_eq!(replay.no_context, replay.empty_context);
    check(
        "tls13_",
        vec![
            ("suite", replay.suite.clone()),
            ("exporter_master_secret", replay.secret("EXPORTER_SECRET")),
            ("exporter", hex::encode(&replay.no_context)),
            ("exporter_empty_context", hex::encode(&replay.empty_context)),
        ],
    );
}

#[test]
fn a_tls12_session_replays_byte_for_byte_and_matches_the_spec_vectors() {
    let replay = replay(&rustls::version::TLS12);
    assert_eq!(replay, self::replay(&rustls::version::TLS12), "deterministic");
    // RFC 5705: the context (and its length) is mixed in only when one is given.
    assert_ne!(replay.no_context, replay.empty_context);
    let client_random = replay.random(true, 1);
    let logged = &replay.keylog.iter().find(|l| l.0 == "CLIENT_RANDOM").unwrap().1;
    assert_eq!(hex::encode(logged), client_random);
    check(
        "tls12_",
        vec![
            ("suite", replay.suite.clone()),
            ("master_secret", replay.secret("CLIENT_RANDOM")),
            ("client_random", client_random),
            ("server_random", replay.random(false, 2)),
            ("exporter", hex::encode(&replay.no_context)),
            ("exporter_empty_context", hex::encode(&replay.empty_context)),
        ],
    );
}

/// Drives palisade's initiator against the rustls server until the server has read the
/// HELLO; returns the HELLO and the server's session.
fn palisade_hello(version: &'static SupportedProtocolVersion) -> (JoinHello, rustls::Connection) {
    let pki = Pki::new();
    let tls = TlsConfig::new(
        Identity {
            cert_chain: pki.nodes[0].0.clone(),
            key: pki.key(0),
        },
        TrustAnchors::CaBundle(vec![pki.ca.clone()]),
    );
    let config = Config::new("prod", "node-a")
        .with_secret(secret())
        .with_tls(tls);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_UNIX);
    let now = Instant::now();
    let mut pal: Connection = Endpoint::new(config)
        .unwrap()
        .connect("node-b", now, wall)
        .unwrap();
    let mut server: rustls::Connection = server(&pki, version).into();
    let mut plain = Vec::new();
    for _ in 0..20 {
        while let Some(chunk) = pal.poll_transmit() {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                server.read_tls(&mut rest).unwrap();
                server.process_new_packets().unwrap();
            }
        }
        let _ = server.reader().read_to_end(&mut plain);
        let mut out = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        let mut off = 0;
        while off < out.len() {
            let n = pal.handle_input(&out[off..], now);
            assert!(n > 0, "palisade takes the server's bytes");
            off += n;
        }
        while pal.poll_event().is_some() {}
        if plain.len() > PREFACE.len() {
            let mut buf = BytesMut::from(&plain[PREFACE.len()..]);
            if let Some(frame) = FrameDecoder::new(1 << 16).decode(&mut buf).unwrap() {
                assert_eq!(frame.kind, FrameKind::Hello);
                return (JoinHello::decode(&frame.payload).unwrap(), server);
            }
        }
    }
    panic!("palisade never sent its HELLO");
}

fn secret() -> SharedSecret {
    SharedSecret::new(b"palisade test vector secret 0001".to_vec()).unwrap()
}

#[test]
fn palisade_binds_its_proofs_to_the_no_context_exporter() {
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (hello, server) = palisade_hello(version);
        let proof = hello.auth.as_ref().unwrap().proof;
        let expected = initiator_proof(&secret(), &export(&server, None), &hello);
        assert_eq!(proof, expected, "{:?}: proof_I over the no-context exporter", version.version);
        if version.version == rustls::ProtocolVersion::TLSv1_2 {
            let empty = initiator_proof(&secret(), &export(&server, Some(&[])), &hello);
            assert_ne!(proof, empty, "TLS 1.2: not the empty-context exporter");
        }
    }
}
