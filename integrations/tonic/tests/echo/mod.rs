//! A hand-written gRPC service (what tonic-build would generate, without protoc): the
//! messages are raw bytes (a tiny `Codec`), `Who` answers with the caller's palisade
//! identity, `Chat` echoes every message of a bidirectional stream. Every call is
//! counted.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use tonic::body::BoxBody;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};

pub const WHO: &str = "/palisade.test.Echo/Who";
pub const CHAT: &str = "/palisade.test.Echo/Chat";

/// Messages are their bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// What `Who` answers: `node_id;dns names joined by ',';key id`.
pub fn identity_line<T>(request: &Request<T>) -> Result<String, Status> {
    let peer = palisade_tonic::peer(request)
        .ok_or_else(|| Status::unauthenticated("not a palisade link"))?;
    let names = peer
        .cert_names()
        .map(|n| n.dns.join(","))
        .unwrap_or_default();
    let key = peer.key_id().map(|k| k.to_string()).unwrap_or_default();
    Ok(format!("{};{names};{key}", peer.node_id()))
}

/// The service, with its call counter.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    pub calls: Arc<AtomicUsize>,
}

impl NamedService for Echo {
    const NAME: &'static str = "palisade.test.Echo";
}

struct Who;

impl UnaryService<Bytes> for Who {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let line = identity_line(&request);
        Box::pin(async move { Ok(Response::new(Bytes::from(line?))) })
    }
}

struct Chat;

impl StreamingService<Bytes> for Chat {
    type Response = Bytes;
    type ResponseStream = Streaming<Bytes>;
    type Future = BoxFuture<Response<Streaming<Bytes>>, Status>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            identity_line(&request)?;
            Ok(Response::new(request.into_inner()))
        })
    }
}

impl<B> Service<http::Request<B>> for Echo
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.calls.fetch_add(1, SeqCst);
        match req.uri().path() {
            WHO => Box::pin(async move { Ok(Grpc::new(BytesCodec).unary(Who, req).await) }),
            CHAT => Box::pin(async move { Ok(Grpc::new(BytesCodec).streaming(Chat, req).await) }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}
