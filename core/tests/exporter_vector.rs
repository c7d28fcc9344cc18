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
//!
//! Run with `PALISADE_PRINT_VECTORS=1` to print the computed values.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use palisade_core::frame::{FrameDecoder, FrameKind};
use palisade_core::join::{initiator_proof, JoinHello, SharedSecret};
use palisade_core::preface::PREFACE;
use palisade_core::tls::{
    Identity, TlsConfig, TrustAnchors, CHANNEL_BINDING_LABEL, CHANNEL_BINDING_LEN,
};
use palisade_core::{Config, Connection, Endpoint};
use rustls::SupportedProtocolVersion;
use seeded_tls::{client, server, Captured, Logged, Pki, NOW_UNIX};

mod seeded_tls;

const SPEC: &str = include_str!("../../docs/PROTOCOL.md");

/// What one replayed session produced.
#[derive(Debug, PartialEq)]
struct Replay {
    /// Every flight, in order: (from the client?, bytes).
    transcript: Vec<(bool, Vec<u8>)>,
    suite: String,
    keylog: Vec<Logged>,
    /// The exporter with palisade's label, no context (`None`), 32 bytes.
    no_context: Vec<u8>,
    /// The same with an empty context (`Some(&[])`).
    empty_context: Vec<u8>,
}

impl Replay {
    fn logged(&self, label: &str) -> &Logged {
        let found = self.keylog.iter().find(|l| l.label == label);
        found.unwrap_or_else(|| panic!("rustls logged {label}"))
    }

    fn secret(&self, label: &str) -> String {
        hex::encode(&self.logged(label).secret)
    }

    /// The 32-byte random of the first flight from one side: the record header (5),
    /// the handshake header (4) and legacy_version (2) precede it.
    fn random(&self, from_client: bool, handshake_type: u8) -> String {
        let (_, flight) = self
            .transcript
            .iter()
            .find(|(c, _)| *c == from_client)
            .unwrap();
        assert_eq!(
            (flight[0], flight[5]),
            (22, handshake_type),
            "a Hello opens the flight"
        );
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
    let mut client: rustls::Connection = client(&pki, version, keylog.clone()).into();
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
    assert_eq!(
        spec_vectors(prefix),
        computed,
        "docs/PROTOCOL.md §9, `{prefix}*`: if the replay is still deterministic but a rustls \
         upgrade changed its handshake bytes, the secrets and outputs change together; print \
         them with PALISADE_PRINT_VECTORS=1 and replace the spec's, then run \
         docs/check_vectors.py"
    );
}

#[test]
fn a_tls13_session_replays_byte_for_byte_and_matches_the_spec_vectors() {
    let replay = replay(&rustls::version::TLS13);
    assert_eq!(
        replay,
        self::replay(&rustls::version::TLS13),
        "deterministic"
    );
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
    assert_eq!(
        replay,
        self::replay(&rustls::version::TLS12),
        "deterministic"
    );
    // RFC 5705: the context (and its length) is mixed in only when one is given.
    assert_ne!(replay.no_context, replay.empty_context);
    let client_random = replay.random(true, 1);
    let logged = &replay.logged("CLIENT_RANDOM").client_random;
    assert_eq!(
        hex::encode(logged),
        client_random,
        "the transcript's random"
    );
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
            assert_eq!(
                &plain[..PREFACE.len()],
                &PREFACE[..],
                "the stream's preface"
            );
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
        assert_eq!(
            proof, expected,
            "{:?}: proof_I over the no-context exporter",
            version.version
        );
        if version.version == rustls::ProtocolVersion::TLSv1_2 {
            let empty = initiator_proof(&secret(), &export(&server, Some(&[])), &hello);
            assert_ne!(proof, empty, "TLS 1.2: not the empty-context exporter");
        }
    }
}
