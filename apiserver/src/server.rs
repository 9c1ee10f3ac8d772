//! [`serve`]: opens the store, creates the system namespaces, starts the garbage
//! collector and serves every kind's service plus gRPC health and reflection until
//! `shutdown`, then drains for a grace period.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::v1;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::{info, warn};

use crate::admission::Chain;
use crate::caller::Authentication;
use crate::gc::GarbageCollector;
use crate::metrics;
use crate::registry::{Registry, RegistryOptions, ensure_system_namespaces};
use crate::store::redb::{RedbOptions, RedbStore};
use crate::store::{Store, StoreError};
use crate::suspect::SuspectReaction;

/// Largest gRPC message accepted; objects are further limited by
/// `RegistryOptions::max_object_bytes`, which gives a clearer error.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How the apiserver runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the embedded store keeps `store.redb`.
    pub data_dir: PathBuf,
    /// Store tuning.
    pub store: RedbOptions,
    /// Largest object accepted, in encoded bytes.
    pub max_object_bytes: usize,
    /// How often watches asking for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Where to serve `/metrics` and `/healthz` over HTTP; `None` disables them.
    pub metrics_addr: Option<SocketAddr>,
}

impl Config {
    /// Defaults with the store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let registry = RegistryOptions::default();
        Config {
            data_dir: data_dir.into(),
            store: RedbOptions::default(),
            max_object_bytes: registry.max_object_bytes,
            bookmark_interval: registry.bookmark_interval,
            shutdown_grace: Duration::from_secs(5),
            metrics_addr: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// Creating the system namespaces failed.
    #[error("cannot initialise the store: {0}")]
    Init(String),
    /// gRPC reflection could not load the API descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics address could not be bound.
    #[error("cannot listen for metrics on {address}: {source}")]
    MetricsListen {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

macro_rules! with_limits {
    ($server:expr) => {
        $server
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };
}

/// Accepted connections with Nagle's algorithm off: tonic's `tcp_nodelay` only applies
/// to listeners it binds itself, and without it small responses wait ~40 ms for
/// delayed ACKs.
fn no_delay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    ApiServer::open(config, shutdown)
        .await?
        .serve(listener)
        .await
}

/// An apiserver whose store is open and initialised, ready to serve.
pub struct ApiServer {
    config: Config,
    store: Arc<dyn Store>,
    options: Arc<RegistryOptions>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("config", &self.config)
            .finish()
    }
}

impl ApiServer {
    /// Opens the store in `config.data_dir` and creates the system namespaces.
    pub async fn open(config: Config, shutdown: CancellationToken) -> Result<Self, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(
            &config.data_dir.join("store.redb"),
            config.store.clone(),
        )?);
        let options = Arc::new(RegistryOptions {
            max_object_bytes: config.max_object_bytes,
            bookmark_interval: config.bookmark_interval,
            shutdown: shutdown.child_token(),
            metrics: Arc::default(),
            sessions: Arc::default(),
            admission: Arc::new(Chain::standard()),
            authentication: Authentication::InsecureDev,
        });
        let namespaces: Registry<v1::Namespace> = Registry::new(store.clone(), options.clone());
        ensure_system_namespaces(&namespaces)
            .await
            .map_err(|s| ServerError::Init(s.message().to_string()))?;
        Ok(ApiServer {
            config,
            store,
            options,
            shutdown,
        })
    }

    /// Serves on `listener` until shutdown, then drains for the grace period.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServerError> {
        let ApiServer {
            config,
            store,
            options,
            shutdown,
        } = self;
        macro_rules! reg {
            () => {
                Registry::new(store.clone(), options.clone())
            };
        }
        let namespaces: Registry<v1::Namespace> = reg!();
        if let Some(address) = config.metrics_addr {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| ServerError::MetricsListen { address, source })?;
            info!(address = ?listener.local_addr().ok(), "serving /metrics");
            tokio::spawn(metrics::serve_metrics(
                listener,
                options.metrics.clone(),
                store.clone(),
                shutdown.child_token(),
            ));
        }
        let gc_shutdown = shutdown.child_token();
        let gc = tokio::spawn(GarbageCollector::new(store.clone()).run(gc_shutdown.clone()));
        let suspect = tokio::spawn(SuspectReaction::new(store.clone()).run(gc_shutdown.clone()));

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        for kind in hypermesh_api::resource::KIND_INFOS {
            health
                .set_service_status(kind.service, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hypermesh_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hypermesh_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let router = Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(with_limits!(
                v1::namespace_service_server::NamespaceServiceServer::new(namespaces)
            ))
            .add_service(with_limits!(
                v1::node_service_server::NodeServiceServer::new(reg!())
            ))
            .add_service(with_limits!(
                v1::asset_service_server::AssetServiceServer::new(reg!())
            ))
            .add_service(with_limits!(
                v1::workload_service_server::WorkloadServiceServer::new(reg!())
            ))
            .add_service(with_limits!(
                v1::instance_service_server::InstanceServiceServer::new(reg!())
            ))
            .add_service(with_limits!(
                v1::route_service_server::RouteServiceServer::new(reg!())
            ))
            .add_service(with_limits!(
                v1::secret_service_server::SecretServiceServer::new(reg!())
            ))
            .add_service(with_limits!(
                v1::lease_service_server::LeaseServiceServer::new(reg!())
            ))
            .add_service(with_limits!(
                v1::agent_tunnel_service_server::AgentTunnelServiceServer::new(
                    crate::sessions::TunnelService { nodes: reg!() }
                )
            ))
            .add_service(with_limits!(
                v1::event_service_server::EventServiceServer::new(reg!())
            ));

        let local = listener.local_addr().ok();
        info!(address = ?local, data_dir = %config.data_dir.display(), revision = store.current_revision(), "serving");
        let drain = shutdown.clone();
        let mut server = tokio::spawn(router.serve_with_incoming_shutdown(
            no_delay(listener),
            async move { drain.cancelled().await },
        ));
        let result = tokio::select! {
            result = &mut server => result,
            () = shutdown.cancelled() => {
                health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
                info!(grace = ?config.shutdown_grace, "shutting down: draining requests");
                match tokio::time::timeout(config.shutdown_grace, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        warn!("requests still running after the grace period; closing them");
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        gc_shutdown.cancel();
        let _ = gc.await;
        let _ = suspect.await;
        match result {
            Ok(r) => r.map_err(ServerError::from),
            Err(join) => Err(ServerError::Init(format!("server task failed: {join}"))),
        }
    }
}
