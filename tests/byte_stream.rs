//! A joined link as a byte stream (`Connection::into_stream`, tokio's `ByteStream`):
//! bytes arrive exactly and in order however they were cut into writes, shutdown is
//! the peer's EOF, the peer's identity is on the stream, tokio-util codecs run over it,
//! small writes are coalesced (few TLS records, few socket writes), writes wait while
//! the send buffer is full and are cut at the peer's max_frame. tokio, and smol for the
//! `futures-io` traits; mutual TLS and a join secret over 127.0.0.1; every test bounded.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use palisade::tokio::ByteStream;
use palisade::{Config, Endpoint, SharedSecret};
use palisade_testkit::certs::TestCa;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Bounds every test.
const BOUND: Duration = Duration::from_secs(60);

fn secret() -> SharedSecret {
    SharedSecret::new(vec![7; 32]).expect("secret")
}

/// Settings for node `id` with a certificate from `ca` for the name `id`.
fn config(ca: &TestCa, id: &str) -> Config {
    Config::new("streams", id)
        .with_tls(ca.tls(&ca.node(id)))
        .with_secret(secret())
}

/// A listener for node "server" and a joined pair of tokio byte streams
/// (client "client" → server).
async fn pair_with(server: Config, client: Config) -> (ByteStream, ByteStream) {
    let listener = palisade::tokio::Listener::bind("127.0.0.1:0", server)
        .await
        .expect("bind");
    let addr = listener.local_addr().to_string();
    let dial = palisade::Dial::new(addr).server_name("server");
    let endpoint = Endpoint::new(client).unwrap();
    let (accepted, dialed) =
        tokio::join!(listener.accept(), palisade::tokio::dial(&endpoint, &dial));
    (
        ByteStream::from(dialed.expect("dial")),
        ByteStream::from(accepted.0),
    )
}

async fn pair() -> (ByteStream, ByteStream) {
    let ca = TestCa::new("stream CA");
    pair_with(config(&ca, "server"), config(&ca, "client")).await
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

/// A deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `len` bytes of a pattern in which every offset has its own value.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

#[test]
fn random_sized_writes_echo_byte_exact() {
    run(async {
        let (mut client, server) = pair().await;
        // The server echoes bytes as they come, however they are cut.
        let echo = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(server);
            tokio::io::copy(&mut r, &mut w).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let data = pattern(1_000_000);
        let sizes: Vec<usize> = {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut left = data.len();
            let mut v = Vec::new();
            while left > 0 {
                let n = (1 + (rng.next() % 20_000) as usize).min(left);
                v.push(n);
                left -= n;
            }
            v
        };
        let (mut r, mut w) = tokio::io::split(&mut client);
        let expected = data.clone();
        let writer = async move {
            let mut at = 0;
            for n in sizes {
                w.write_all(&data[at..at + n]).await.unwrap();
                at += n;
            }
            w.flush().await.unwrap();
        };
        let reader = async move {
            let mut got = vec![0u8; expected.len()];
            r.read_exact(&mut got).await.unwrap();
            assert!(got == expected, "the echo differs from what was written");
        };
        tokio::join!(writer, reader);
        client.shutdown().await.unwrap();
        echo.await.unwrap();
    });
}

#[test]
fn shutdown_is_the_peers_end_of_stream() {
    run(async {
        let (mut client, mut server) = pair().await;
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last words");
        // And the server's further reads stay at the end.
        assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 0);
        // Writing after shutdown is an error, not a silent loss.
        let err = client.write(b"more").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    });
}

#[test]
fn the_peer_identity_is_on_the_stream() {
    run(async {
        let (client, server) = pair().await;
        for (stream, id) in [(&client, "server"), (&server, "client")] {
            let peer = stream.peer();
            assert_eq!(peer.node_id, id);
            assert_eq!(peer.key_id, Some(secret().key_id()));
            let tls = peer.tls.as_ref().expect("TLS peer");
            assert_eq!(tls.names.dns, vec![id.to_string()]);
        }
    });
}

#[test]
fn tokio_util_codecs_run_over_the_stream() {
    use tokio_util::codec::{Framed, LengthDelimitedCodec, LinesCodec};
    run(async {
        let (client, server) = pair().await;
        let mut c = Framed::new(client, LinesCodec::new());
        let mut s = Framed::new(server, LinesCodec::new());
        for i in 0..100 {
            c.send(format!("line {i}")).await.unwrap();
        }
        for i in 0..100 {
            assert_eq!(s.next().await.unwrap().unwrap(), format!("line {i}"));
        }
        s.send("pong".to_string()).await.unwrap();
        assert_eq!(c.next().await.unwrap().unwrap(), "pong");

        let (client, server) = pair().await;
        let mut c = Framed::new(client, LengthDelimitedCodec::new());
        let mut s = Framed::new(server, LengthDelimitedCodec::new());
        let big = bytes::Bytes::from(pattern(300_000));
        c.send(big.clone()).await.unwrap();
        c.send(bytes::Bytes::from_static(b"small")).await.unwrap();
        assert_eq!(s.next().await.unwrap().unwrap(), big);
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"small");
        SinkExt::<bytes::Bytes>::close(&mut c).await.unwrap();
        assert!(
            s.next().await.is_none(),
            "the close is the end of the frames"
        );
    });
}

/// A write larger than the peer's max_frame is cut there (a short write), and
/// `write_all` delivers it whole.
#[test]
fn writes_are_cut_at_the_peers_max_frame() {
    run(async {
        let ca = TestCa::new("stream CA");
        let mut server = config(&ca, "server");
        server.max_frame = 4096;
        let (mut client, mut server) = pair_with(server, config(&ca, "client")).await;
        let data = pattern(10_000);
        assert_eq!(client.write(&data).await.unwrap(), 4096);
        client.write_all(&data[4096..]).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
    });
}

/// A reader that does not read stalls the writer (its writes wait: memory stays bounded
/// by the send buffer, the kernel's buffers and the receiver's window); once it reads,
/// all of a large transfer arrives, in order.
#[test]
fn writes_wait_for_a_slow_reader_and_a_large_transfer_arrives_in_order() {
    const TOTAL: usize = 48 * 1024 * 1024;
    // See tests/backpressure.rs: the two buffers (1 MiB each by default), one read, one
    // driver batch, and the kernel's socket buffers (up to 4 MiB send on Linux).
    const STALL_BOUND: usize = 16 * 1024 * 1024;
    run(async {
        let (mut client, mut server) = pair().await;
        let written = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&written);
        let data = pattern(TOTAL);
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            let mut at = 0;
            while at < TOTAL {
                let n = client.write(&data[at..]).await.unwrap();
                at += n;
                counter.store(at, SeqCst);
            }
            client.shutdown().await.unwrap();
        });
        // Wait until the writer has started, then until it stops making progress.
        while written.load(SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut last = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = written.load(SeqCst);
            if now == last {
                break;
            }
            last = now;
        }
        let stalled_at = written.load(SeqCst);
        eprintln!("writer stalled after {stalled_at} bytes of {TOTAL}");
        assert!(
            stalled_at < STALL_BOUND,
            "{stalled_at} bytes were taken while the reader read nothing"
        );
        let mut got = Vec::with_capacity(TOTAL);
        server.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), TOTAL);
        assert!(got == expected, "the bytes arrived out of order");
    });
}

/// What the dialing node wrote on its socket: the calls and the bytes.
#[derive(Debug, Default)]
struct Written {
    calls: AtomicUsize,
    bytes: Mutex<Vec<u8>>,
}

impl Written {
    /// Counts the TLS records in what was written from byte `from` (a record boundary).
    fn records_since(&self, from: usize) -> usize {
        let bytes = self.bytes.lock().unwrap();
        let mut at = from;
        let mut n = 0;
        while at + 5 <= bytes.len() {
            let len = u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]) as usize;
            at += 5 + len;
            n += 1;
        }
        assert_eq!(
            at,
            bytes.len(),
            "the writes did not end on a record boundary"
        );
        n
    }
}

/// A tokio socket that counts its writes, seen through `futures-io` as the driver wants.
struct Counting(TcpStream, Arc<Written>);

impl futures_util::io::AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        Pin::new(&mut self.0)
            .poll_read(cx, &mut buf)
            .map_ok(|()| buf.filled().len())
    }
}

impl futures_util::io::AsyncWrite for Counting {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.0).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = res {
            this.1.calls.fetch_add(1, SeqCst);
            let mut out = this.1.bytes.lock().unwrap();
            for b in bufs {
                let take = n.min(b.len());
                out.extend_from_slice(&b[..take]);
                n -= take;
            }
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// 10,000 one-byte writes are 10,000 frames, but the send queue packs them into a few
/// TLS records and the driver hands those to the socket in a few writes. How few
/// depends on how often the driver (on another worker) wakes while the writer runs:
/// 3 to 76 of each were seen; the bound (a tenth of the writes) leaves room for a
/// loaded machine and still fails a stream that makes a record per write.
#[test]
fn one_byte_writes_are_coalesced_into_few_records_and_socket_writes() {
    const WRITES: usize = 10_000;
    run(async {
        let ca = TestCa::new("stream CA");
        let listener = palisade::tokio::Listener::bind("127.0.0.1:0", config(&ca, "server"))
            .await
            .unwrap();
        let addr = listener.local_addr();
        let written = Arc::new(Written::default());
        let socket = Counting(
            TcpStream::connect(addr).await.unwrap(),
            Arc::clone(&written),
        );
        let runtime = <palisade::tokio::Tokio as palisade_driver::Net>::current();
        let endpoint = Endpoint::new(config(&ca, "client")).unwrap();
        let dial = palisade::Dial::new(addr.to_string()).server_name("server");
        let (accepted, dialed) = tokio::join!(
            listener.accept(),
            palisade_driver::establish_dialed(&runtime, socket, &endpoint, &dial)
        );
        let mut client = ByteStream::from(dialed.unwrap());
        let mut server = ByteStream::from(accepted.0);
        // What the handshake wrote is not counted.
        let (calls_before, bytes_before) = (
            written.calls.load(SeqCst),
            written.bytes.lock().unwrap().len(),
        );

        for i in 0..WRITES {
            assert_eq!(client.write(&[i as u8]).await.unwrap(), 1);
        }
        client.flush().await.unwrap();
        let mut got = vec![0; WRITES];
        server.read_exact(&mut got).await.unwrap();
        assert!(got.iter().enumerate().all(|(i, b)| *b == i as u8));

        let calls = written.calls.load(SeqCst) - calls_before;
        let records = written.records_since(bytes_before);
        let bytes = written.bytes.lock().unwrap().len() - bytes_before;
        eprintln!(
            "{WRITES} one-byte writes: {records} TLS records, {calls} socket writes, {bytes} bytes on the wire"
        );
        assert!(
            records <= WRITES / 10,
            "{records} TLS records for {WRITES} one-byte writes"
        );
        assert!(
            calls <= WRITES / 10,
            "{calls} socket writes for {WRITES} one-byte writes"
        );
    });
}

/// The same stream through the `futures-io` traits, on smol.
#[test]
fn smol_echoes_through_futures_io() {
    use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
    smol::block_on(async {
        let ca = TestCa::new("stream CA");
        let listener = palisade::smol::Listener::bind("127.0.0.1:0", config(&ca, "server"))
            .await
            .unwrap();
        let dial = palisade::Dial::new(listener.local_addr().to_string()).server_name("server");
        let endpoint = Endpoint::new(config(&ca, "client")).unwrap();
        let accept = async { listener.accept().await.0 };
        let (server, client) =
            futures_util::future::join(accept, palisade::smol::dial(&endpoint, &dial)).await;
        let server = server.into_stream();
        let client = client.unwrap().into_stream();
        assert_eq!(client.peer().node_id, "server");
        let echo = smol::spawn(async move {
            let (r, mut w) = server.split();
            futures_util::io::copy(r, &mut w).await.unwrap();
            w.close().await.unwrap();
        });
        let data = pattern(200_000);
        let (mut r, mut w) = client.split();
        let expected = data.clone();
        let writer = async move {
            for chunk in data.chunks(1000) {
                w.write_all(chunk).await.unwrap();
            }
            w.flush().await.unwrap();
            w
        };
        let reader = async move {
            let mut got = vec![0; expected.len()];
            r.read_exact(&mut got).await.unwrap();
            assert!(got == expected);
            r
        };
        let (mut w, r) = futures_util::future::join(writer, reader).await;
        w.close().await.unwrap();
        drop((r, w));
        let finish = futures_util::future::select(echo, Box::pin(smol::Timer::after(BOUND)));
        assert!(
            matches!(finish.await, futures_util::future::Either::Left(_)),
            "the echo did not end"
        );
    });
}
