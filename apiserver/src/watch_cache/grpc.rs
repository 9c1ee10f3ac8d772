//! Sending cached watch events over gRPC as the bytes they were encoded to once: a
//! codec whose encoder copies pre-encoded messages into the frame, and a service
//! wrapper that answers each kind's `Watch` with it while every other method goes
//! to the generated service.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use hypermesh_api::v1::WatchRequest;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use super::watcher::EncodedStream;
use crate::admission::Kind;
use crate::call::Call;
use crate::registry::Registry;

/// Encodes pre-encoded messages (copies them into the frame) and decodes
/// `WatchRequest`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = WatchRequest;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for EncodedCodec {
    type Item = WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        WatchRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("WatchRequest does not decode: {e}")))
    }
}

/// A kind's generated service `S` with its `Watch` served from the watch cache.
#[derive(Clone)]
pub struct CachedWatch<S, K> {
    inner: S,
    registry: Registry<K>,
    max_message_bytes: usize,
}

impl<S, K: Kind> CachedWatch<S, K> {
    /// Wraps `inner`; `registry`'s cache (when enabled) is started now.
    pub fn new(inner: S, registry: Registry<K>, max_message_bytes: usize) -> Self {
        let _ = registry.watch_cache();
        CachedWatch {
            inner,
            registry,
            max_message_bytes,
        }
    }
}

impl<S: NamedService, K> NamedService for CachedWatch<S, K> {
    const NAME: &'static str = S::NAME;
}

struct WatchHandler<K> {
    registry: Registry<K>,
}

impl<K: Kind> ServerStreamingService<WatchRequest> for WatchHandler<K> {
    type Response = Bytes;
    type ResponseStream = EncodedStream;
    type Future = BoxFuture<Response<EncodedStream>, Status>;

    fn call(&mut self, request: Request<WatchRequest>) -> Self::Future {
        let registry = self.registry.clone();
        Box::pin(async move {
            let (call, caller) = Call::start(&registry, "Watch", &request);
            let caller = match caller {
                Ok(c) => c,
                Err(e) => return call.finish(Err(e)),
            };
            if let Err(e) = registry.rate_limit(&caller) {
                return call.finish(Err(e));
            }
            let result = registry.watch_cached(&caller, request.into_inner()).await;
            call.finish(result)
        })
    }
}

impl<S, K> Service<http::Request<Body>> for CachedWatch<S, K>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    S: NamedService,
    K: Kind,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<http::Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let is_watch = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::NAME))
            == Some("/Watch");
        if !is_watch || self.registry.watch_cache().is_none() {
            return Box::pin(self.inner.call(request));
        }
        let handler = WatchHandler {
            registry: self.registry.clone(),
        };
        let limit = self.max_message_bytes;
        Box::pin(async move {
            let mut grpc =
                Grpc::new(EncodedCodec).apply_max_message_size_config(Some(limit), Some(limit));
            Ok(grpc.server_streaming(handler, request).await)
        })
    }
}
