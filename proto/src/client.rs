//! [`Api`]: one typed gRPC client for every kind. Every `<Kind>Service` has the same
//! verbs, so the client calls `/hypermesh.v1.<Kind>Service/<Verb>` through tonic's
//! generic `Grpc` with the prost codec, instead of nine hand-wired generated clients.
//!
//! [`connect`] and [`connect_lazy`] open the channel: plaintext for `http://` URLs (a
//! `--insecure-dev` server), TLS with the given rustls configuration for `https://`
//! (TLS is done here, over our own connector, so the configuration — CA, client
//! certificate, TLS 1.3, X25519MLKEM768 — is exactly the one the caller built).
//!
//! A [`Target`] may name several apiservers of one cluster (`url` lists them separated
//! by commas): each new connection dials the one that last worked, then the others in
//! turn, so when an apiserver dies the channel's next connection goes to another. A
//! request in flight on the dead connection fails (`UNAVAILABLE`) and the caller
//! retries; a watch resumes from its last resource version (the runtime's watcher).

use std::marker::PhantomData;
use std::sync::Arc;
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
    /// An `https://` URL without TLS settings.
    #[error(
        "{url} is an https:// URL but no TLS settings were given: use a config file with certificateAuthority, clientCertificate and clientKey (--config or HYPERMESH_CONFIG)"
    )]
    TlsMissing {
        /// The URL as given.
        url: String,
    },
    /// TLS settings with an `http://` URL.
    #[error("{url} is a plaintext http:// URL but TLS settings were given: use https://HOST:PORT")]
    PlaintextWithTls {
        /// The URL as given.
        url: String,
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

/// A client's TLS configuration, replaceable while channels use it: a renewed
/// certificate is used from the next connection on.
#[derive(Clone)]
pub struct ClientTls(Arc<std::sync::RwLock<Arc<rustls::ClientConfig>>>);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Holds `config`.
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        ClientTls(Arc::new(std::sync::RwLock::new(config)))
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<rustls::ClientConfig> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces it (e.g. after a certificate renewal).
    pub fn replace(&self, config: Arc<rustls::ClientConfig>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }
}

/// Where the apiserver is and how to talk to it.
#[derive(Clone)]
pub struct Target {
    /// `https://HOST:PORT` (or `http://` for a `--insecure-dev` server); several
    /// apiservers of one cluster separated by commas (`https://a:7443,https://b:7443`).
    pub url: String,
    /// The TLS configuration for `https://` URLs.
    pub tls: Option<ClientTls>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// A plaintext target (`http://…`).
    pub fn insecure(url: impl Into<String>) -> Self {
        Target {
            url: url.into(),
            tls: None,
        }
    }

    /// A TLS target.
    pub fn tls(url: impl Into<String>, config: Arc<rustls::ClientConfig>) -> Self {
        Target {
            url: url.into(),
            tls: Some(ClientTls::new(config)),
        }
    }

    /// The apiserver URLs `url` lists, in order.
    pub fn urls(&self) -> Vec<&str> {
        join_urls_split(&self.url)
    }
}

fn join_urls_split(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// One `url` for several apiservers (`--server` given more than once, a config's
/// `servers:` list): the URLs joined with commas.
pub fn join_urls<S: AsRef<str>>(urls: &[S]) -> String {
    urls.iter()
        .map(|u| u.as_ref().trim())
        .filter(|u| !u.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

fn endpoint(target: &Target) -> Result<Endpoint, ConnectError> {
    let invalid = |source| ConnectError::InvalidUrl {
        url: target.url.clone(),
        source,
    };
    let urls = target.urls();
    // TLS is ours (the connector below); tonic sees plain HTTP/2. The connector
    // decides which apiserver to dial; every URL must parse.
    let mut first = None;
    for url in &urls {
        let plain = match url.strip_prefix("https://") {
            Some(rest) => format!("http://{rest}"),
            None => (*url).to_string(),
        };
        let endpoint = Endpoint::from_shared(plain).map_err(invalid)?;
        first.get_or_insert(endpoint);
    }
    let endpoint = match first {
        Some(e) => e,
        None => Endpoint::from_shared(String::new()).map_err(invalid)?,
    };
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

fn tls_required(target: &Target) -> Result<Option<ClientTls>, ConnectError> {
    let urls = target.urls();
    let https = urls.iter().filter(|u| u.starts_with("https://")).count();
    if https != 0 && https != urls.len() {
        return Err(ConnectError::PlaintextWithTls {
            url: target.url.clone(),
        });
    }
    match (&target.tls, https > 0) {
        (Some(tls), true) => Ok(Some(tls.clone())),
        (None, false) => Ok(None),
        (None, true) => Err(ConnectError::TlsMissing {
            url: target.url.clone(),
        }),
        (Some(_), false) => Err(ConnectError::PlaintextWithTls {
            url: target.url.clone(),
        }),
    }
}

/// A connection to the apiserver (TLS, or plain TCP for `--insecure-dev`), as hyper
/// wants it.
type ServerIo = hyper_util::rt::TokioIo<ServerStream>;

/// The future of one connection attempt.
type Connecting =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<ServerIo>> + Send>>;

/// TCP, or TLS over TCP.
#[derive(Debug)]
pub enum ServerStream {
    /// A plaintext (`--insecure-dev`) connection.
    Plain(tokio::net::TcpStream),
    /// A TLS connection.
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for ServerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for ServerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects to one apiserver at `url` (TCP, then TLS with `tls` when given, naming
/// the server by the URL's host).
async fn dial(url: &str, tls: Option<&ClientTls>) -> std::io::Result<ServerStream> {
    let invalid = |what: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{url}: {what}"))
    };
    let uri: tonic::codegen::http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    let host = uri.host().ok_or_else(|| invalid("the URL has no host"))?;
    let port = uri.port_u16().unwrap_or(7443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((bare, port)),
    )
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{url}: connect timed out"),
        )
    })??;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(ServerStream::Plain(tcp));
    };
    let name = rustls::pki_types::ServerName::try_from(bare.to_string())
        .map_err(|_| invalid("the URL's host is not a valid server name"))?;
    let connector = tokio_rustls::TlsConnector::from(tls.current());
    Ok(ServerStream::Tls(Box::new(
        connector.connect(name, tcp).await?,
    )))
}

fn owned_urls(target: &Target) -> Vec<String> {
    target.urls().into_iter().map(String::from).collect()
}

/// How long one apiserver gets to accept a TCP connection before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials the target's apiservers: the one that last worked first, then the others in
/// turn, until one connects (the URI tonic passes is ignored: it is the first URL).
fn failover_connector(
    urls: Vec<String>,
    tls: Option<ClientTls>,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = ServerIo,
    Error = std::io::Error,
    Future = Connecting,
> + Clone {
    let urls = Arc::new(urls);
    let current = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tower::service_fn(move |_uri: tonic::codegen::http::Uri| {
        let urls = urls.clone();
        let current = current.clone();
        let tls = tls.clone();
        let fut: Connecting = Box::pin(async move {
            let start = current.load(std::sync::atomic::Ordering::Relaxed);
            let mut last_error = None;
            for step in 0..urls.len() {
                let index = (start + step) % urls.len();
                match dial(&urls[index], tls.as_ref()).await {
                    Ok(stream) => {
                        current.store(index, std::sync::atomic::Ordering::Relaxed);
                        return Ok(hyper_util::rt::TokioIo::new(stream));
                    }
                    Err(e) => last_error = Some(e),
                }
            }
            Err(last_error.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no apiserver URL")
            }))
        });
        fut
    })
}

/// Connects to the apiserver at `target` (the first of its apiservers that answers).
pub async fn connect_to(target: &Target) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(target)?;
    let tls = tls_required(target)?;
    endpoint
        .connect_with_connector(failover_connector(owned_urls(target), tls))
        .await
        .map_err(|source| ConnectError::Unreachable {
            url: target.url.clone(),
            source,
        })
}

/// A channel to `target` that connects on first use (and reconnects after failures,
/// to another of its apiservers when the last one is gone).
pub fn connect_lazy(target: &Target) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(target)?;
    let tls = tls_required(target)?;
    Ok(endpoint.connect_with_connector_lazy(failover_connector(owned_urls(target), tls)))
}

/// Connects to a plaintext (`--insecure-dev`) apiserver at `url` (`http://127.0.0.1:7443`).
pub async fn connect(url: &str) -> Result<Channel, ConnectError> {
    connect_to(&Target::insecure(url)).await
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

    /// Streams the changes made from now on to the objects `request` selects (its
    /// `resource_version` is ignored): reads the current revision with a one-item List
    /// of the same namespace and selectors, then watches after it.
    pub async fn watch_from_now(
        &self,
        request: WatchRequest,
    ) -> Result<Streaming<K::WatchEvent>, Status> {
        let (_, resource_version, _) = self
            .list(ListRequest {
                namespace: request.namespace.clone(),
                label_selector: request.label_selector.clone(),
                field_selector: request.field_selector.clone(),
                limit: 1,
                ..Default::default()
            })
            .await?;
        self.watch(WatchRequest {
            resource_version,
            ..request
        })
        .await
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

impl Api<crate::v1::Asset> {
    /// Asks for a fresh one-time proof challenge for an Asset (see `trust.md`).
    pub async fn challenge(
        &self,
        request: crate::v1::ProofChallengeRequest,
    ) -> Result<crate::v1::ProofChallenge, Status> {
        self.unary("Challenge", request).await
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
