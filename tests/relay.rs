//! A man in the middle over real sockets (127.0.0.1, tokio): node A dials a relay M,
//! which dials node B and passes the bytes both ways.
//!
//! - Plaintext with the shared secret: M passes the join through untouched, so A and B
//!   join each other; then M injects a DATA frame into the A→B stream, or rewrites one of
//!   A's. B refuses it with the typed frame-authentication error and never hands the
//!   injected payload to the application (PROTOCOL.md §5.7).
//! - TLS: M holds a valid cluster certificate of its own, terminates A's TLS and
//!   re-originates TLS to B, replaying A's HELLO inside it. The join fails with REJECT 3
//!   at B, because A's proof is bound to the A–M session's exporter, not M–B's.
//!
//! Every test is bounded by [`LIMIT`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use palisade::preface::PREFACE_LEN;
use palisade::tls::TlsConfig;
use palisade::{Config, ConnectionError, Endpoint, FrameKind, LinkError, RejectCode, SharedSecret};
use palisade_driver::{FailureHook, HandshakeFailure};
use palisade_testkit::certs::TestCa;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(20);
const INJECTED: &[u8] = b"injected by the relay: shut down the cluster";

fn node(name: &str, tls: Option<TlsConfig>) -> Config {
    let mut c = Config::new("relay", name).with_secret(SharedSecret::new(vec![0x42; 32]).unwrap());
    if let Some(tls) = tls {
        c = c.with_tls(tls);
    }
    c.handshake_timeout = Duration::from_secs(5);
    c
}

fn data_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![FrameKind::Data.to_byte()];
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One whole frame (header included) from a plaintext frame stream.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 5];
    r.read_exact(&mut frame).await?;
    let len = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
    frame.resize(5 + len, 0);
    r.read_exact(&mut frame[5..]).await?;
    Ok(frame)
}

/// Passes a frame stream on frame by frame; `tamper` sees each frame (numbered from 1,
/// the HELLO) and returns the bytes to pass on instead.
async fn forward_frames<R, W>(
    mut from: R,
    mut to: W,
    mut tamper: impl FnMut(usize, Vec<u8>) -> Vec<u8>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; PREFACE_LEN];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    let mut n = 0;
    while let Ok(frame) = read_frame(&mut from).await {
        n += 1;
        to.write_all(&tamper(n, frame)).await?;
        to.flush().await?;
    }
    to.shutdown().await
}

/// Passes bytes on as they come.
async fn forward_bytes<R, W>(mut from: R, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// The relay without TLS: one link from A to B, A→B frames through `tamper`.
async fn plaintext_relay(
    b: std::net::SocketAddr,
    tamper: impl FnMut(usize, Vec<u8>) -> Vec<u8> + Send + 'static,
) -> std::net::SocketAddr {
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = relay.local_addr().unwrap();
    tokio::spawn(async move {
        let (a_sock, _) = relay.accept().await.unwrap();
        let b_sock = TcpStream::connect(b).await.unwrap();
        let (ar, aw) = a_sock.into_split();
        let (br, bw) = b_sock.into_split();
        tokio::join!(forward_frames(ar, bw, tamper), forward_bytes(br, aw))
            .0
            .ok();
    });
    addr
}

/// A and B join through the relay; A sends one genuine frame; returns what B's
/// application got next after it (or the genuine frame itself, if it was rewritten), and
/// what A heard back.
async fn through_plaintext_relay(
    tamper: impl FnMut(usize, Vec<u8>) -> Vec<u8> + Send + 'static,
) -> (
    Vec<Bytes>,
    Option<LinkError>,
    Result<Option<Bytes>, LinkError>,
) {
    let b = palisade::tokio::Listener::bind("127.0.0.1:0", node("node-b", None))
        .await
        .unwrap();
    let relay = plaintext_relay(b.local_addr(), tamper).await;
    let mut a = palisade::tokio::connect(&relay.to_string(), node("node-a", None))
        .await
        .expect("the relay passes the join through: A joins B");
    assert_eq!(a.peer().node_id, "node-b");
    let (mut at_b, _) = b.accept().await;
    assert_eq!(at_b.peer().node_id, "node-a");
    a.send(Bytes::from_static(b"genuine")).await.unwrap();
    let mut delivered = Vec::new();
    // A link that delivered an injected frame and stays open ends the wait after 3 s.
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(3), at_b.recv()).await {
            Ok(Ok(Some(frame))) => delivered.push(frame),
            Ok(Ok(None)) => panic!("B saw a graceful close"),
            Ok(Err(e)) => break Some(e),
            Err(_) => break None,
        }
    };
    let at_a = tokio::time::timeout(Duration::from_secs(3), a.recv())
        .await
        .unwrap_or_else(|_| Ok(Some(Bytes::from_static(b"(A's link is still open)"))));
    (delivered, err, at_a)
}

fn assert_frame_auth_refusal(
    delivered: &[Bytes],
    expect: &[&[u8]],
    err: &Option<LinkError>,
    at_a: &Result<Option<Bytes>, LinkError>,
) {
    assert_eq!(
        delivered, expect,
        "B's application got exactly these frames"
    );
    let err = err.as_ref().expect("B ended the link");
    assert!(
        matches!(err, LinkError::Link(ConnectionError::FrameAuth(_))),
        "B: {err}"
    );
    assert!(err.to_string().contains("failed authentication"), "{err}");
    // B's CLOSE reached A through the relay and verified there (an unauthenticated or
    // altered one would have ended A's link with an error): the adapter reports a close
    // by the peer as the end of the stream, never a frame.
    assert!(
        matches!(at_a, Ok(None)),
        "A: expected B's CLOSE, got {at_a:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_relay_cannot_inject_a_frame_after_the_join() {
    let run = through_plaintext_relay(|n, mut frame| {
        if n == 2 {
            // After A's first frame: an untagged DATA frame, and one with a guessed tag.
            let mut forged = INJECTED.to_vec();
            forged.extend_from_slice(&[0; 16]);
            frame.extend(data_frame(INJECTED));
            frame.extend(data_frame(&forged));
        }
        frame
    });
    let (delivered, err, at_a) = tokio::time::timeout(LIMIT, run).await.expect("bounded");
    assert_frame_auth_refusal(&delivered, &[b"genuine"], &err, &at_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_relay_cannot_rewrite_a_frame_after_the_join() {
    let run = through_plaintext_relay(|n, mut frame| {
        if n == 2 {
            frame[5] = b'G';
        }
        frame
    });
    let (delivered, err, at_a) = tokio::time::timeout(LIMIT, run).await.expect("bounded");
    assert_frame_auth_refusal(&delivered, &[], &err, &at_a);
}

// ----- TLS: the relay holds a valid cluster certificate -----

mod attacker_tls {
    //! The relay's own rustls ends: a server with a certificate the cluster CA issued, and
    //! a client that presents it to B (and, being the attacker, trusts any server).
    use std::sync::Arc;

    use palisade_testkit::certs::{TestCa, TestIdentity};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{ring, CryptoProvider};
    use rustls::pki_types::{
        CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
    };
    use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

    fn key(id: &TestIdentity) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone()))
    }

    pub fn server(ca: &TestCa, id: &TestIdentity) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(id.chain.clone(), key(id))
            .unwrap();
        Arc::new(config)
    }

    pub fn client(id: &TestIdentity) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_client_auth_cert(id.chain.clone(), key(id))
            .unwrap();
        Arc::new(config)
    }

    #[derive(Debug)]
    struct AnyServer(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_relay_with_its_own_cluster_certificate_cannot_pass_the_join_through() {
    let ca = TestCa::new("relay test CA");
    let b_id = ca.node("127.0.0.1");
    let relay_id = ca.node("127.0.0.1");
    let failures: Arc<Mutex<Vec<Option<RejectCode>>>> = Arc::default();
    let seen = Arc::clone(&failures);
    let hook: FailureHook = Arc::new(move |f: &HandshakeFailure| {
        seen.lock().unwrap().push(f.error.reject_code());
    });
    let b = palisade::tokio::Listener::bind_with(
        "127.0.0.1:0",
        Endpoint::new(node("node-b", Some(ca.tls(&b_id)))).unwrap(),
        Some(hook),
    )
    .await
    .unwrap();
    let b_addr = b.local_addr();

    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let (server, client) = (
        attacker_tls::server(&ca, &relay_id),
        attacker_tls::client(&relay_id),
    );
    tokio::spawn(async move {
        let (a_sock, _) = relay.accept().await.unwrap();
        let from_a = tokio_rustls::TlsAcceptor::from(server)
            .accept(a_sock)
            .await
            .expect("A accepts the relay's cluster certificate");
        let b_sock = TcpStream::connect(b_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let to_b = tokio_rustls::TlsConnector::from(client)
            .connect(name, b_sock)
            .await
            .expect("B accepts the relay's cluster certificate");
        let (ar, aw) = tokio::io::split(from_a);
        let (br, bw) = tokio::io::split(to_b);
        // A's preface and HELLO go to B unchanged, inside the relay's own session.
        tokio::join!(forward_bytes(ar, bw), forward_bytes(br, aw));
    });

    let a_tls = ca.tls(&ca.node("node-a"));
    let joined = tokio::time::timeout(
        LIMIT,
        palisade::tokio::connect(&relay_addr.to_string(), node("node-a", Some(a_tls))),
    )
    .await
    .expect("bounded");
    let err = joined.expect_err("the join must fail through a TLS relay");
    assert_eq!(
        err.rejection().map(|r| r.code),
        Some(RejectCode::AuthenticationFailed),
        "A: B's REJECT 3 came back through the relay: {err}"
    );
    // B refused the replayed HELLO itself, and never handed a link to the application.
    let refused = tokio::time::timeout(LIMIT, async {
        loop {
            if let Some(code) = failures.lock().unwrap().first().copied() {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("B reports the failed handshake");
    assert_eq!(refused, Some(RejectCode::AuthenticationFailed));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.accept())
            .await
            .is_err(),
        "B accepted a link through the relay"
    );
}
