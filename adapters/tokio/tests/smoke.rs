use bytes::Bytes;
use palisade_core::{CloseReason, Config, SharedSecret};
use palisade_testkit::certs::TestCa;
use palisade_tokio::{connect, Listener};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_link_over_loopback() {
    let ca = TestCa::new("ca");
    let secret = SharedSecret::new(vec![7; 32]).unwrap();
    let node = |n: &str| {
        Config::new("c", n)
            .with_secret(secret.clone())
            .with_tls(ca.tls(&ca.node(n)))
    };
    let listener = Listener::bind("127.0.0.1:0", node("node-b")).await.unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await;
        let mut n = 0;
        while let Some(f) = conn.recv().await.unwrap() {
            conn.send(f).await.unwrap();
            n += 1;
        }
        n
    });
    let mut c = connect(&format!("127.0.0.1:{}", addr.port()), node("node-a"))
        .await
        .unwrap();
    assert_eq!(c.peer().node_id, "node-b");
    for i in 0..1000u32 {
        c.send(Bytes::from(i.to_be_bytes().to_vec())).await.unwrap();
    }
    for i in 0..1000u32 {
        assert_eq!(
            c.recv().await.unwrap().unwrap(),
            Bytes::from(i.to_be_bytes().to_vec())
        );
    }
    c.close(CloseReason::default()).await;
    assert_eq!(
        tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap(),
        1000
    );
}
