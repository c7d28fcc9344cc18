//! tonic over palisade between two nodes on 127.0.0.1, mutual TLS (the server's
//! certificate names 127.0.0.1, so hostname verification is real) and a join secret:
//! unary and bidirectional streaming RPCs, the caller's identity in the service, no
//! intruder (wrong secret, foreign CA) ever reaching the service, and a certificate
//! rotation on the listener that keeps an open stream while new connections get the
//! new certificate. Every test is bounded in time.

// tonic hands `Status` (176 bytes) back by value throughout its API.
#![allow(clippy::result_large_err)]

mod echo;

use std::future::Future;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use echo::{BytesCodec, Echo, CHAT, WHO};
use palisade_core::tls::{TlsConfig, TrustAnchors};
use palisade_core::{Config, Endpoint, SharedSecret};
use palisade_testkit::certs::{CertSpec, TestCa, TestIdentity};
use palisade_tokio::Listener;
use tokio::sync::mpsc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Server, Uri};
use tonic::{Request, Status, Streaming};

const BOUND: Duration = Duration::from_secs(60);

fn secret(byte: u8) -> SharedSecret {
    SharedSecret::new(vec![byte; 32]).expect("secret")
}

/// The server's certificate: its node name and the address clients dial.
fn server_identity(ca: &TestCa) -> TestIdentity {
    ca.issue(&CertSpec::new("server", &["server", "127.0.0.1"]))
}

fn server_config(ca: &TestCa, identity: &TestIdentity) -> Config {
    Config::new("grpc", "server")
        .with_tls(ca.tls(identity))
        .with_secret(secret(1))
}

fn client_config(ca: &TestCa) -> Config {
    Config::new("grpc", "client")
        .with_tls(ca.tls(&ca.node("client")))
        .with_secret(secret(1))
}

/// A tonic server with the echo service, fed by a palisade listener.
struct Node {
    listener: Arc<Listener>,
    echo: Echo,
    uri: String,
}

impl Node {
    async fn start(config: Config) -> Self {
        let listener = Arc::new(Listener::bind("127.0.0.1:0", config).await.expect("bind"));
        let uri = format!("http://{}", listener.local_addr());
        let echo = Echo::default();
        let server = Server::builder()
            .add_service(echo.clone())
            .serve_with_incoming(palisade_tonic::incoming(Arc::clone(&listener)));
        tokio::spawn(server);
        Self {
            listener,
            echo,
            uri,
        }
    }

    async fn channel(&self, config: Config) -> Result<Channel, tonic::transport::Error> {
        tonic::transport::Endpoint::from_shared(self.uri.clone())
            .unwrap()
            .connect_with_connector(palisade_tonic::connector(Endpoint::new(config).unwrap()))
            .await
    }
}

async fn who(channel: Channel) -> Result<String, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::from_static(WHO);
    let reply = grpc
        .unary(Request::new(Bytes::new()), path, BytesCodec)
        .await?;
    Ok(String::from_utf8(reply.into_inner().to_vec()).expect("utf-8"))
}

/// An open `Chat`: messages go in through the sender, replies come out of the stream.
async fn chat(channel: Channel) -> (mpsc::Sender<Bytes>, Streaming<Bytes>) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let replies = grpc
        .streaming(
            Request::new(outbound),
            PathAndQuery::from_static(CHAT),
            BytesCodec,
        )
        .await
        .expect("chat")
        .into_inner();
    (tx, replies)
}

async fn round_trip(tx: &mpsc::Sender<Bytes>, replies: &mut Streaming<Bytes>, msg: Bytes) {
    tx.send(msg.clone()).await.expect("send");
    let got = replies
        .message()
        .await
        .expect("reply")
        .expect("stream open");
    assert_eq!(got, msg);
}

fn run<F: Future<Output = ()>>(test: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(BOUND, test)
            .await
            .expect("the test did not finish in time")
    });
}

#[test]
fn unary_call_sees_the_callers_palisade_identity() {
    run(async {
        let ca = TestCa::new("grpc CA");
        let node = Node::start(server_config(&ca, &server_identity(&ca))).await;
        let channel = node.channel(client_config(&ca)).await.expect("channel");
        let line = who(channel.clone()).await.expect("who");
        assert_eq!(line, format!("client;client;{}", secret(1).key_id()));
        // Many calls share the one link.
        for _ in 0..20 {
            who(channel.clone()).await.expect("who");
        }
        assert_eq!(node.echo.calls.load(SeqCst), 21);
    });
}

#[test]
fn bidirectional_stream_echoes_in_order() {
    run(async {
        let ca = TestCa::new("grpc CA");
        let node = Node::start(server_config(&ca, &server_identity(&ca))).await;
        let channel = node.channel(client_config(&ca)).await.expect("channel");
        let (tx, mut replies) = chat(channel).await;
        for i in 0..200usize {
            let len = (i * 7919) % 70_000;
            let msg = Bytes::from((0..len).map(|j| (i + j) as u8).collect::<Vec<_>>());
            round_trip(&tx, &mut replies, msg).await;
        }
        // Pipelined: many in flight at once.
        let sender = tokio::spawn(async move {
            for i in 0..500u32 {
                tx.send(Bytes::from(i.to_be_bytes().to_vec()))
                    .await
                    .unwrap();
            }
        });
        for i in 0..500u32 {
            let got = replies.message().await.unwrap().unwrap();
            assert_eq!(got, Bytes::from(i.to_be_bytes().to_vec()));
        }
        sender.await.unwrap();
        // The client's half-close ends the server's echo, and so the replies.
        assert!(replies.message().await.unwrap().is_none());
    });
}

#[test]
fn intruders_never_reach_the_service() {
    run(async {
        let ca = TestCa::new("grpc CA");
        let node = Node::start(server_config(&ca, &server_identity(&ca))).await;

        // A certificate from the cluster CA, but the wrong secret.
        let wrong_secret = client_config(&ca).with_secret(secret(2));
        let err = node.channel(wrong_secret).await.expect_err("wrong secret");
        eprintln!("wrong secret: {err:?}");

        // The right secret, but a certificate from a foreign CA.
        let foreign = TestCa::new("foreign CA");
        let tls = TlsConfig::new(
            foreign.node("client").identity(),
            TrustAnchors::CaBundle(vec![ca.cert.clone()]),
        );
        let foreign_cert = Config::new("grpc", "client")
            .with_tls(tls)
            .with_secret(secret(1));
        let err = node.channel(foreign_cert).await.expect_err("foreign CA");
        eprintln!("foreign CA: {err:?}");

        // Lazily connected channels fail their calls the same way.
        let lazy = tonic::transport::Endpoint::from_shared(node.uri.clone())
            .unwrap()
            .connect_with_connector_lazy(palisade_tonic::connector(
                Endpoint::new(client_config(&ca).with_secret(secret(3))).unwrap(),
            ));
        assert!(who(lazy).await.is_err());

        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            node.echo.calls.load(SeqCst),
            0,
            "an intruder reached the service"
        );
        // The legitimate client still gets through.
        let channel = node.channel(client_config(&ca)).await.expect("channel");
        who(channel).await.expect("who");
        assert_eq!(node.echo.calls.load(SeqCst), 1);
    });
}

#[test]
fn certificate_rotation_keeps_an_open_stream_and_new_links_get_the_new_certificate() {
    run(async {
        let ca = TestCa::new("grpc CA");
        let node = Node::start(server_config(&ca, &server_identity(&ca))).await;

        // A connector that records the serial of the certificate each link was made with.
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let recorder = {
            let seen = Arc::clone(&seen);
            let endpoint = Arc::new(Endpoint::new(client_config(&ca)).unwrap());
            tower::service_fn(move |uri: Uri| {
                let (seen, endpoint) = (Arc::clone(&seen), Arc::clone(&endpoint));
                async move {
                    let io = palisade_tonic::dial(&endpoint, &uri).await?;
                    let tls = io.inner().peer().info.tls.as_ref().expect("TLS");
                    seen.lock().unwrap().push(tls.serial().expect("serial"));
                    Ok::<_, palisade_tokio::Error>(io)
                }
            })
        };
        let endpoint = tonic::transport::Endpoint::from_shared(node.uri.clone()).unwrap();
        let first = endpoint
            .connect_with_connector(recorder.clone())
            .await
            .unwrap();
        let (tx, mut replies) = chat(first).await;
        round_trip(&tx, &mut replies, Bytes::from_static(b"before")).await;

        let renewed = server_identity(&ca);
        node.listener
            .reconfigure(server_config(&ca, &renewed))
            .expect("reconfigure");

        // The open stream carries on over its link.
        for i in 0..50u8 {
            round_trip(&tx, &mut replies, Bytes::from(vec![i; 100])).await;
        }
        // A new connection is made with the new certificate.
        let second = endpoint.connect_with_connector(recorder).await.unwrap();
        assert_eq!(
            who(second).await.unwrap(),
            format!("client;client;{}", secret(1).key_id())
        );
        round_trip(&tx, &mut replies, Bytes::from_static(b"after")).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "one link per channel");
        assert_ne!(
            seen[0], seen[1],
            "the new link still got the old certificate"
        );
        drop(tx);
        assert!(replies.message().await.unwrap().is_none());
    });
}
