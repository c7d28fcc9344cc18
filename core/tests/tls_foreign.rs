//! palisade against plain rustls peers driven by hand: a client without a certificate,
//! and a man in the middle who holds a valid certificate and relays a HELLO captured on
//! one TLS session into another (the channel binding must make it worthless).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use palisade_core::frame::{FrameDecoder, FrameKind};
use palisade_core::preface::PREFACE;
use palisade_core::tls::pki_types::ServerName;
use palisade_core::tls::TlsError;
use palisade_core::{
    CloseCause, Config, Connection, ConnectionError, Endpoint, Event, JoinError, RejectCode,
    Rejection, SharedSecret,
};
use palisade_testkit::certs::{TestCa, TestIdentity};
use rustls::crypto::ring::default_provider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

fn secret() -> SharedSecret {
    SharedSecret::new(vec![0x42; 32]).unwrap()
}

fn roots(ca: &TestCa) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    Arc::new(roots)
}

fn raw_client(ca: &TestCa, cert: Option<&TestIdentity>, server: &str) -> rustls::Connection {
    let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    let config = match cert {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.identity().key)
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(server.to_owned()).unwrap();
    ClientConnection::new(Arc::new(config), name)
        .unwrap()
        .into()
}

fn raw_server(ca: &TestCa, cert: &TestIdentity) -> rustls::Connection {
    let provider = Arc::new(default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider.clone())
        .build()
        .unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.chain.clone(), cert.identity().key)
        .unwrap();
    ServerConnection::new(Arc::new(config)).unwrap().into()
}

/// A palisade connection and a rustls connection wired back to back.
struct Wire {
    pal: Connection,
    raw: rustls::Connection,
    raw_error: Option<rustls::Error>,
    /// Plaintext the rustls side received.
    raw_plain: Vec<u8>,
    events: Vec<Event>,
    now: Instant,
}

impl Wire {
    fn new(pal: Connection, raw: rustls::Connection) -> Self {
        Self {
            pal,
            raw,
            raw_error: None,
            raw_plain: Vec::new(),
            events: Vec::new(),
            now: Instant::now(),
        }
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(chunk) = self.pal.poll_transmit() {
                moved = true;
                let mut rest = &chunk[..];
                while !rest.is_empty() && self.raw_error.is_none() {
                    if self.raw.read_tls(&mut rest).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Err(e) = self.raw.process_new_packets() {
                        self.raw_error = Some(e);
                    }
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = self.raw.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    self.raw_plain.extend_from_slice(&buf[..n]);
                }
            }
            let mut out = Vec::new();
            while self.raw.wants_write() {
                self.raw.write_tls(&mut out).unwrap();
            }
            if !out.is_empty() {
                moved = true;
                let mut off = 0;
                while off < out.len() {
                    let n = self.pal.handle_input(&out[off..], self.now);
                    off += n;
                    self.drain();
                    if n == 0 {
                        break;
                    }
                }
            }
            self.drain();
            if !moved {
                return;
            }
        }
        panic!("the wire never went quiet");
    }

    fn drain(&mut self) {
        while let Some(e) = self.pal.poll_event() {
            self.events.push(e);
        }
    }

    fn close_cause(&self) -> Option<&CloseCause> {
        self.events.iter().find_map(|e| match e {
            Event::Closed(c) => Some(c),
            _ => None,
        })
    }
}

fn endpoint(ca: &TestCa, name: &str) -> Endpoint {
    let config = Config::new("prod", name)
        .with_secret(secret())
        .with_tls(ca.tls(&ca.node(name)));
    Endpoint::new(config).unwrap()
}

#[test]
fn a_client_without_a_certificate_is_refused_and_told_why() {
    let ca = TestCa::new("cluster CA");
    let acceptor = endpoint(&ca, "node-b")
        .accept(Instant::now(), SystemTime::now())
        .unwrap();
    let mut wire = Wire::new(acceptor, raw_client(&ca, None, "node-b"));
    wire.pump();
    assert!(matches!(
        wire.close_cause(),
        Some(CloseCause::Error(ConnectionError::Tls(
            TlsError::NoClientCertificate
        )))
    ));
    assert_eq!(
        wire.raw_error,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired
        ))
    );
    let msg = wire.close_cause().unwrap().to_string();
    assert!(msg.contains("no client certificate"), "{msg}");
}

/// Splits the preface and the frames out of a plaintext stream.
fn frames(plain: &[u8]) -> Vec<(FrameKind, Vec<u8>)> {
    assert_eq!(
        &plain[..PREFACE.len()],
        &PREFACE[..],
        "stream opens with the preface"
    );
    let mut buf = BytesMut::from(&plain[PREFACE.len()..]);
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut out = Vec::new();
    while let Some(f) = decoder.decode(&mut buf).unwrap() {
        out.push((f.kind, f.payload.to_vec()));
    }
    out
}

#[test]
fn a_hello_relayed_from_another_tls_session_fails_authentication() {
    let ca = TestCa::new("cluster CA");
    // Mallory holds a certificate from the cluster CA (stolen, say) but not the secret.
    let mallory = ca.node("mallory");

    // Session 1: the honest initiator dials Mallory and sends its HELLO.
    let initiator = endpoint(&ca, "node-a")
        .connect("mallory", Instant::now(), SystemTime::now())
        .unwrap();
    let mut s1 = Wire::new(initiator, raw_server(&ca, &mallory));
    s1.pump();
    assert!(s1.raw_error.is_none(), "{:?}", s1.raw_error);
    let captured = frames(&s1.raw_plain);
    let hello = captured
        .iter()
        .find(|(k, _)| *k == FrameKind::Hello)
        .expect("the initiator sent its HELLO to Mallory")
        .1
        .clone();

    // Session 2: Mallory dials the honest acceptor and replays that HELLO, fresh as it is
    // (its timestamp is current and its nonce never seen).
    let acceptor = endpoint(&ca, "node-b")
        .accept(Instant::now(), SystemTime::now())
        .unwrap();
    let mut s2 = Wire::new(acceptor, raw_client(&ca, Some(&mallory), "node-b"));
    s2.pump();
    assert!(!s2.raw.is_handshaking(), "Mallory's TLS session is up");
    let mut relay = BytesMut::from(&PREFACE[..]);
    palisade_core::frame::encode(FrameKind::Hello, &hello, &mut relay);
    s2.raw.writer().write_all(&relay).unwrap();
    s2.pump();

    assert!(!s2.events.iter().any(|e| matches!(e, Event::Joined(_))));
    match s2.close_cause() {
        Some(CloseCause::Error(ConnectionError::Join(JoinError::RefusedPeer(r)))) => {
            assert_eq!(r.code, RejectCode::AuthenticationFailed, "{r}")
        }
        other => panic!("{other:?}"),
    }
    let answer = frames(&s2.raw_plain);
    let reject = answer
        .iter()
        .find(|(k, _)| *k == FrameKind::Reject)
        .expect("Mallory is told");
    assert_eq!(
        Rejection::decode(&reject.1).unwrap().code,
        RejectCode::AuthenticationFailed
    );
}
