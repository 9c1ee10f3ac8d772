//! [`Api`]: one typed gRPC client for every kind. Every `<Kind>Service` has the same
//! verbs, so the client calls `/hypermesh.v1.<Kind>Service/<Verb>` through tonic's
//! generic `Grpc` with the prost codec, instead of nine hand-wired generated clients.

use std::marker::PhantomData;
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

use crate::resource::Resource;
use crate::v1::{DeleteRequest, GetRequest, ListRequest, WatchRequest};

/// Largest message a client sends or accepts (the server enforces its own limit).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Why connecting to the apiserver failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse.
    #[error("invalid server address {url:?}: {source}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: tonic::transport::Error,
    },
    /// Nothing answered at the address.
    #[error(
        "cannot reach the apiserver at {url}: {source} (is hm-apiserver running? `make up` starts one)"
    )]
    Unreachable {
        /// The URL as given.
        url: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Connects to the apiserver at `url` (`http://127.0.0.1:7443`).
pub async fn connect(url: &str) -> Result<Channel, ConnectError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|source| ConnectError::InvalidUrl {
            url: url.to_string(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    endpoint
        .connect()
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: url.to_string(),
            source,
        })
}

/// A client for the `<Kind>Service` of `K`.
pub struct Api<K> {
    grpc: tonic::client::Grpc<Channel>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            grpc: self.grpc.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("kind", &std::any::type_name::<K>())
            .finish()
    }
}

impl<K: Resource> Api<K> {
    /// A client over an established channel (channels are cheap to clone and share).
    pub fn new(channel: Channel) -> Self {
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Api {
            grpc,
            kind: PhantomData,
        }
    }

    fn path(method: &str) -> PathAndQuery {
        // Kind service names and verbs are ASCII identifiers, always a valid path.
        PathAndQuery::from_maybe_shared(format!("/{}/{method}", K::SERVICE))
            .unwrap_or_else(|_| PathAndQuery::from_static("/"))
    }

    async fn unary<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("apiserver connection not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(Request::new(request), Self::path(method), codec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Creates `object`; fails with `ALREADY_EXISTS` when the name is taken.
    pub async fn create(&self, object: &K) -> Result<K, Status> {
        self.unary("Create", object.clone()).await
    }

    /// Reads one object.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<K, Status> {
        self.unary(
            "Get",
            GetRequest {
                namespace: namespace.into(),
                name: name.into(),
            },
        )
        .await
    }

    /// Reads one page: items, the list's resource version, and the continue token.
    pub async fn list(&self, request: ListRequest) -> Result<(Vec<K>, u64, String), Status> {
        let list: K::List = self.unary("List", request).await?;
        Ok(K::split_list(list))
    }

    /// Reads every page of a listing (following continue tokens).
    pub async fn list_all(&self, mut request: ListRequest) -> Result<(Vec<K>, u64), Status> {
        let mut all = Vec::new();
        loop {
            let (items, rv, cont) = self.list(request.clone()).await?;
            all.extend(items);
            if cont.is_empty() {
                return Ok((all, rv));
            }
            request.continue_token = cont;
        }
    }

    /// Replaces spec and metadata; fails with `ABORTED` when `resource_version` is stale.
    pub async fn update(&self, object: &K) -> Result<K, Status> {
        self.unary("Update", object.clone()).await
    }

    /// Replaces status only.
    pub async fn update_status(&self, object: &K) -> Result<K, Status> {
        self.unary("UpdateStatus", object.clone()).await
    }

    /// Deletes one object (or marks it for deletion while finalizers remain).
    pub async fn delete(&self, request: DeleteRequest) -> Result<K, Status> {
        self.unary("Delete", request).await
    }

    /// Calls a kind-specific unary method of this kind's service (e.g. `Bind`).
    pub async fn call<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.unary(method, request).await
    }

    /// Streams change events after `request.resource_version`.
    pub async fn watch(&self, request: WatchRequest) -> Result<Streaming<K::WatchEvent>, Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("apiserver connection not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<WatchRequest, K::WatchEvent>::default();
        grpc.server_streaming(Request::new(request), Self::path("Watch"), codec)
            .await
            .map(tonic::Response::into_inner)
    }
}

impl Api<crate::v1::Instance> {
    /// Binds an unbound Instance to `node_name`.
    pub async fn bind(
        &self,
        request: crate::v1::BindRequest,
    ) -> Result<crate::v1::Instance, Status> {
        self.unary("Bind", request).await
    }
}
