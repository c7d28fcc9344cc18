//! A TLS session that is the same, byte for byte, in every run: rustls (ring provider)
//! with seeded randomness, X25519 ephemeral keys drawn from that seed, Ed25519
//! certificates (deterministic signatures) from fixed keys with fixed serials and dates,
//! and a fixed certificate clock. The spec's channel-binding vectors come from it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use palisade_core::tls::pki_types::{ServerName, UnixTime};
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

/// 2026-01-01T00:00:00Z: the clock of every certificate check here.
pub const NOW_UNIX: u64 = 1_767_225_600;

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
    fn complete(
        self: Box<Self>,
        peer: &[u8],
    ) -> Result<rustls::crypto::SharedSecret, rustls::Error> {
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
/// Each call starts the sequence afresh, so every session replays the same; the two
/// small values are leaked because rustls takes them as `&'static`.
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
pub struct Pki {
    pub ca: CertificateDer<'static>,
    /// (chain, PKCS#8 key) of node-a (client) and node-b (server).
    pub nodes: [(Vec<CertificateDer<'static>>, Vec<u8>); 2],
}

impl Pki {
    pub fn new() -> Self {
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

    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(roots)
    }

    pub fn key(&self, i: usize) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.nodes[i].1.clone().into())
    }
}

/// One secret rustls hands its `KeyLog` (an SSLKEYLOGFILE line).
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub label: String,
    pub client_random: Vec<u8>,
    pub secret: Vec<u8>,
}

/// Everything rustls logged.
#[derive(Debug, Default)]
pub struct Captured(pub Mutex<Vec<Logged>>);

impl KeyLog for Captured {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        if let Ok(mut log) = self.0.lock() {
            log.push(Logged {
                label: label.to_owned(),
                client_random: client_random.to_vec(),
                secret: secret.to_vec(),
            });
        }
    }
}

/// A server as palisade configures its acceptor (mutual TLS, extended master secret
/// required, no resumption, no tickets), from seeded randomness.
pub fn server(pki: &Pki, version: &'static SupportedProtocolVersion) -> ServerConnection {
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

/// A client as palisade configures its initiator (mutual TLS, extended master secret
/// required, no resumption), from seeded randomness, dialing `node-b`; its secrets go to
/// `keylog`.
pub fn client(
    pki: &Pki,
    version: &'static SupportedProtocolVersion,
    keylog: Arc<Captured>,
) -> ClientConnection {
    let provider = seeded_provider("palisade exporter vector: client");
    let mut config = ClientConfig::builder_with_details(provider, Arc::new(FixedTime))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_client_auth_cert(pki.nodes[0].0.clone(), pki.key(0))
        .unwrap();
    config.resumption = rustls::client::Resumption::disabled();
    config.require_ems = true;
    config.key_log = keylog;
    let name = ServerName::try_from("node-b").unwrap();
    ClientConnection::new(Arc::new(config), name).unwrap()
}
