//! tonic (gRPC over HTTP/2) over palisade links.
//!
//! - Server: [`incoming`] turns a palisade listener into the stream of connections
//!   `tonic::transport::Server::serve_with_incoming` takes. Each connection is a joined
//!   link (mutual TLS, join secret), so nothing that failed the join ever reaches a
//!   service.
//! - The peer's palisade identity (node id, certificate names, key id) is the
//!   connection's connect info: a service reads it with [`peer`] from any request.
//! - Client: [`connector`] makes the `tower::Service<Uri>` that
//!   `tonic::transport::Endpoint::connect_with_connector` dials through: every
//!   connection the channel opens is a palisade link to the URI's `host:port`, the host
//!   being the name TLS checks.
//!
//! A crate rather than an example because tonic's `Connected` trait and palisade's
//! stream belong to different crates: the glue needs a type of its own ([`Link`]).
//! Nothing here depends on protobuf or code generation.
//!
//! ```no_run
//! # async fn run(config: palisade_core::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tonic::transport::{Endpoint, Server};
//!
//! let listener = Arc::new(palisade_tokio::Listener::bind("127.0.0.1:7000", config.clone()).await?);
//! # let routes = tonic::service::Routes::default();
//! let server = Server::builder()
//!     .add_routes(routes) // the services
//!     .serve_with_incoming(palisade_tonic::incoming(listener));
//! tokio::spawn(server);
//!
//! let endpoint = palisade_core::Endpoint::new(config)?;
//! let channel = Endpoint::from_static("http://127.0.0.1:7000")
//!     .connect_with_connector(palisade_tonic::connector(endpoint))
//!     .await?;
//! # drop(channel);
//! # Ok(())
//! # }
//! ```

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{self, Stream};
use hyper_util::rt::TokioIo;
use palisade_core::tls::CertNames;
use palisade_core::{Endpoint, KeyId, PeerInfo};
use palisade_tokio::{ByteStream, Connection, Dial, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::Uri;

/// Who is on the other end of a connection, as the join established it: the connect
/// info of every request that came over a palisade link.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Everything the join revealed (node id, key id, TLS version, suite, certificate).
    pub info: PeerInfo,
    /// The peer's address, when a listener accepted the link.
    pub remote_addr: Option<SocketAddr>,
}

impl Peer {
    /// The node id the peer proved in the join.
    pub fn node_id(&self) -> &str {
        &self.info.node_id
    }

    /// The names in the peer's certificate (when TLS is on).
    pub fn cert_names(&self) -> Option<&CertNames> {
        self.info.tls.as_ref().map(|t| &t.names)
    }

    /// Which shared secret the join used (when there is one).
    pub fn key_id(&self) -> Option<KeyId> {
        self.info.key_id
    }
}

/// The palisade peer of the connection `request` came over; `None` for a request
/// that did not come through [`incoming`].
pub fn peer<T>(request: &tonic::Request<T>) -> Option<&Peer> {
    request.extensions().get::<Peer>()
}

/// A joined palisade link as the byte stream tonic and hyper run on, carrying its
/// peer's identity.
#[derive(Debug)]
pub struct Link {
    stream: ByteStream,
    peer: Peer,
}

impl Link {
    /// `conn` as a stream; `remote_addr` is the peer's address, if known.
    pub fn new(conn: Connection, remote_addr: Option<SocketAddr>) -> Self {
        let peer = Peer {
            info: conn.peer().clone(),
            remote_addr,
        };
        Self {
            stream: ByteStream::from(conn),
            peer,
        }
    }

    /// The peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Connected for Link {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Link {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Link {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The joined links of `listener`, for `Server::serve_with_incoming`. The listener is
/// shared so that its owner can still `reconfigure` it (a certificate rotation) while
/// the server runs; links already joined keep their settings.
///
/// The stream never ends and never yields an error: a connection that fails its join
/// is refused (and reported) by the listener and never reaches tonic.
pub fn incoming(listener: Arc<Listener>) -> impl Stream<Item = Result<Link, io::Error>> {
    stream::unfold(listener, |listener| async move {
        let (conn, addr) = listener.accept().await;
        Some((Ok(Link::new(conn, Some(addr))), listener))
    })
}

/// Dials `uri` (`scheme://host:port`) through palisade with `endpoint`'s settings: the
/// host is the name TLS checks. The link as hyper wants it.
pub async fn dial(endpoint: &Endpoint, uri: &Uri) -> Result<TokioIo<Link>, palisade_tokio::Error> {
    let host = uri.host().unwrap_or_default();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    // An IPv6 literal keeps its brackets in the address, not in the name.
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let addr = if name.contains(':') {
        format!("[{name}]:{port}")
    } else {
        format!("{name}:{port}")
    };
    let conn = palisade_tokio::dial(endpoint, &Dial::new(addr).server_name(name)).await?;
    Ok(TokioIo::new(Link::new(conn, None)))
}

/// The connector for `Endpoint::connect_with_connector`: each connection the channel
/// opens is a palisade link dialed with `endpoint` (see [`dial`]).
pub fn connector(
    endpoint: Endpoint,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<Link>,
    Error = palisade_tokio::Error,
    Future = impl Send + std::future::Future<Output = Result<TokioIo<Link>, palisade_tokio::Error>>,
> + Clone
       + Send
       + 'static {
    let endpoint = Arc::new(endpoint);
    tower::service_fn(move |uri: Uri| {
        let endpoint = Arc::clone(&endpoint);
        async move { dial(&endpoint, &uri).await }
    })
}
