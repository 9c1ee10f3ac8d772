//! [`serve`]: opens the store, creates the system namespaces and built-in roles,
//! loads (or on first start creates) the cluster CA, starts the garbage collector and
//! the other in-process reactions, and serves every kind's service plus joining, gRPC
//! health and reflection — over TLS 1.3 with client certificates, or plaintext for
//! `--insecure-dev` — until `shutdown`, then drains for a grace period.
//!
//! On first start with TLS the store gets the cluster CA with its key sealed with the
//! encryption key file (`crate::ca`), the data directory `pki/ca.crt` (its certificate),
//! `admin.config` (an admin identity) and `scheduler.config` (the scheduler's).

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

use hypermesh_trust::at_rest::EncryptionKey;
use hypermesh_trust::client_config::ClientConfigFile;

use crate::admission::Chain;
use crate::admission::authorization::Rbac;
use crate::ca::Pki;
use crate::caller::Authentication;
use crate::metrics;
use crate::registry::{Registry, RegistryOptions, ensure_builtin_roles, ensure_system_namespaces};
use crate::store::{Store, StoreError};
use crate::suspect::SuspectReaction;
use crate::tls::Revocations;

mod config;
pub use config::{ADMIN_CONFIG, CONTROLLERS_CONFIG, Config, SCHEDULER_CONFIG, TlsSettings};

/// Largest gRPC message accepted; objects are further limited by
/// `RegistryOptions::max_object_bytes`, which gives a clearer error.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long a write waits for room in the write queue before `RESOURCE_EXHAUSTED`.
const WRITE_QUEUE_WAIT: Duration = Duration::from_secs(2);

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
    /// The cluster CA or its key could not be loaded or created.
    #[error("cluster CA: {0}")]
    Pki(#[from] hypermesh_trust::pki::PkiError),
    /// The cluster CA in the store could not be loaded or created.
    #[error("{0}")]
    Ca(#[from] crate::ca::CaError),
    /// The encryption key file could not be loaded or created.
    #[error("{0}")]
    EncryptionKey(#[from] hypermesh_trust::at_rest::AtRestError),
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(#[from] hypermesh_trust::tls::TlsError),
    /// A client configuration could not be written.
    #[error("{0}")]
    ClientConfig(#[from] hypermesh_trust::client_config::ConfigError),
    /// The audit log could not be opened.
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
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
    rbac: Arc<Rbac>,
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
        let store = config.store.open(&config.data_dir).await?;
        info!(store = config.store.name(), "store open");
        // Writes waiting for the store are bounded by bytes, whatever the backend.
        let store: Arc<dyn Store> = Arc::new(crate::store::bounded::BoundedWrites::new(
            store,
            config.write_queue_bytes,
            WRITE_QUEUE_WAIT,
        ));
        // Secrets are sealed with the key file before they reach the store.
        let key = Arc::new(EncryptionKey::load_or_create(
            &config.encryption_key_path(),
        )?);
        let store: Arc<dyn Store> = Arc::new(crate::store::secrets_at_rest::SecretsAtRest::new(
            store,
            key.clone(),
        ));
        let pki = match &config.tls {
            None => None,
            Some(_) => {
                let ca =
                    crate::ca::load_or_create_shared(&*store, &config.data_dir.join("pki"), &key)
                        .await?;
                info!(pin = %ca.pin(), "cluster CA loaded");
                Some(Arc::new(Pki::new(ca)))
            }
        };
        let rbac = Arc::new(Rbac::default());
        let watch_caches = config.watch_cache.enabled.then(|| {
            Arc::new(crate::watch_cache::WatchCaches::new(
                store.clone(),
                config.watch_cache.clone(),
                shutdown.child_token(),
            ))
        });
        let options = Arc::new(RegistryOptions {
            continue_tokens: Arc::new(crate::registry::ContinueTokens::from_encryption_key(&key)),
            watch_caches,
            rate_limits: Arc::new(crate::limits::RateLimits::new(
                config.rate_limit_qps,
                config.rate_limit_burst,
            )),
            max_image_upload_bytes: config.max_image_upload_bytes,
            max_object_bytes: config.max_object_bytes,
            bookmark_interval: config.bookmark_interval,
            shutdown: shutdown.child_token(),
            // Recorded only when someone can read them.
            metrics: Arc::new(if config.metrics_addr.is_some() {
                crate::metrics::Metrics::default()
            } else {
                crate::metrics::Metrics::disabled()
            }),
            sessions: Arc::default(),
            admission: Arc::new(Chain::new(rbac.clone(), config.proofs.clone())),
            proofs: config.proofs.clone(),
            authentication: if pki.is_some() {
                Authentication::Tls
            } else {
                Authentication::InsecureDev
            },
            pki,
            audit: config
                .audit
                .clone()
                .map(crate::audit::AuditLog::open)
                .transpose()?,
        });
        let init = |s: tonic::Status| ServerError::Init(s.message().to_string());
        let namespaces: Registry<v1::Namespace> = Registry::new(store.clone(), options.clone());
        ensure_system_namespaces(&namespaces).await.map_err(init)?;
        let roles: Registry<v1::Role> = Registry::new(store.clone(), options.clone());
        ensure_builtin_roles(&roles).await.map_err(init)?;
        Ok(ApiServer {
            config,
            store,
            options,
            rbac,
            shutdown,
        })
    }

    /// The cluster CA's pin (`sha256:…`), when the server runs TLS.
    pub fn ca_pin(&self) -> Option<String> {
        self.options.pki.as_ref().map(|p| p.ca.pin())
    }

    /// The URL clients use for `address`: `https://` with TLS, `http://` without; a
    /// wildcard address becomes loopback.
    pub fn url_for(&self, address: SocketAddr) -> String {
        let mut target = address;
        if target.ip().is_unspecified() {
            target.set_ip(match target {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = if self.options.pki.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{target}")
    }

    /// A client target for one of the apiserver's own identities (e.g. the in-process
    /// controllers' `system:controllers`): its certificate is issued once (with
    /// `groups`, recorded like every other) and kept in `<data-dir>/<file>`.
    /// Plaintext when the server runs without TLS.
    pub async fn local_target(
        &self,
        address: SocketAddr,
        file: &str,
        identity: &str,
        groups: &[&str],
    ) -> Result<hypermesh_api::client::Target, ServerError> {
        let url = self.url_for(address);
        if self.options.pki.is_none() {
            return Ok(hypermesh_api::client::Target::insecure(url));
        }
        let path = self.config.data_dir.join(file);
        self.ensure_client_config(&path, &url, identity, groups)
            .await?;
        Ok(ClientConfigFile::load(&path)?.target(&path, None)?)
    }

    /// Writes a client configuration for `identity` at `path` unless one with a
    /// certificate is there, and points it at `url`.
    async fn ensure_client_config(
        &self,
        path: &std::path::Path,
        url: &str,
        identity: &str,
        groups: &[&str],
    ) -> Result<(), ServerError> {
        let Some(pki) = &self.options.pki else {
            return Ok(());
        };
        let mut config = ClientConfigFile::load(path)?;
        if config.client_certificate.is_none() {
            let certificates: Registry<v1::Certificate> =
                Registry::new(self.store.clone(), self.options.clone());
            let (cert_pem, key_pem) =
                crate::join::issue_local(&certificates, pki, identity, groups)
                    .await
                    .map_err(|s| ServerError::Init(s.message().to_string()))?;
            config = ClientConfigFile {
                server: None,
                certificate_authority: Some(pki.ca.certificate_pem().to_string()),
                client_certificate: Some(cert_pem),
                client_key: Some(key_pem),
                servers: Vec::new(),
            };
            info!(path = %path.display(), identity, "wrote client configuration");
        }
        if config.server.as_deref() != Some(url) {
            config.server = Some(url.to_string());
            config.save(path)?;
        }
        Ok(())
    }

    /// Writes `admin.config` and `scheduler.config` into the data directory on first
    /// start (with certificates for `user:admin` in `system:masters` and for
    /// `system:scheduler`), and points existing ones at `address`.
    pub async fn write_client_configs(&self, address: SocketAddr) -> Result<(), ServerError> {
        let url = self.url_for(address);
        let wanted: [(&str, &str, &[&str]); 2] = [
            (ADMIN_CONFIG, "user:admin", &[crate::caller::MASTERS_GROUP]),
            (SCHEDULER_CONFIG, crate::caller::SCHEDULER, &[]),
        ];
        for (file, identity, groups) in wanted {
            let path = self.config.data_dir.join(file);
            self.ensure_client_config(&path, &url, identity, groups)
                .await?;
        }
        Ok(())
    }

    /// Serves on `listener` until shutdown, then drains for the grace period.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServerError> {
        if let Ok(address) = listener.local_addr() {
            self.write_client_configs(address).await?;
        }
        let ApiServer {
            config,
            store,
            options,
            rbac,
            shutdown,
        } = self;
        macro_rules! reg {
            () => {
                Registry::new(store.clone(), options.clone())
            };
        }
        let namespaces: Registry<v1::Namespace> = reg!();
        // A kind's service with its Watch answered from the watch cache.
        macro_rules! cached {
            ($($server:ident)::+, $registry:expr) => {{
                let registry = $registry;
                crate::watch_cache::grpc::CachedWatch::new(
                    with_limits!($($server)::+::new(registry.clone())),
                    registry,
                    MAX_MESSAGE_BYTES,
                )
            }};
        }
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
        let suspect = tokio::spawn(SuspectReaction::new(store.clone()).run(gc_shutdown.clone()));
        tokio::spawn(rbac.follow(store.clone(), gc_shutdown.clone()));
        let tls = match &options.pki {
            None => None,
            Some(pki) => {
                let revocations = Arc::new(Revocations::default());
                tokio::spawn(
                    revocations
                        .clone()
                        .follow(store.clone(), gc_shutdown.clone()),
                );
                let extra = config
                    .tls
                    .as_ref()
                    .map(|t| t.extra_names.clone())
                    .unwrap_or_default();
                let names = crate::tls::serving_names(listener.local_addr().ok(), &extra);
                let server_config = crate::tls::server_config(&pki.ca, names)?;
                Some((Arc::new(server_config), revocations))
            }
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        // NOT_SERVING while an in-process controller is down (restarting after a panic).
        tokio::spawn(crate::in_process::mirror_health(
            hypermesh_runtime::health::Health::process(),
            health.clone(),
            gc_shutdown.clone(),
        ));
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
            .add_service(cached!(
                v1::namespace_service_server::NamespaceServiceServer,
                namespaces
            ))
            .add_service(cached!(v1::node_service_server::NodeServiceServer, reg!()))
            .add_service(cached!(
                v1::asset_service_server::AssetServiceServer,
                reg!()
            ))
            .add_service(cached!(
                v1::workload_service_server::WorkloadServiceServer,
                reg!()
            ))
            .add_service(cached!(
                v1::instance_service_server::InstanceServiceServer,
                reg!()
            ))
            .add_service(cached!(
                v1::route_service_server::RouteServiceServer,
                reg!()
            ))
            // Not from the watch cache's pre-encoded bytes: each reader gets its own
            // copy of a Secret (sealed to a node, or values withheld).
            .add_service(with_limits!(
                v1::secret_service_server::SecretServiceServer::new(reg!())
            ))
            .add_service(cached!(
                v1::lease_service_server::LeaseServiceServer,
                reg!()
            ))
            .add_service(with_limits!(
                v1::agent_tunnel_service_server::AgentTunnelServiceServer::new(
                    crate::sessions::TunnelService { nodes: reg!() }
                )
            ))
            .add_service(cached!(
                v1::event_service_server::EventServiceServer,
                reg!()
            ))
            .add_service(cached!(v1::role_service_server::RoleServiceServer, reg!()))
            .add_service(cached!(
                v1::role_binding_service_server::RoleBindingServiceServer,
                reg!()
            ))
            .add_service(cached!(
                v1::join_token_service_server::JoinTokenServiceServer,
                reg!()
            ))
            .add_service(cached!(
                v1::certificate_service_server::CertificateServiceServer,
                reg!()
            ))
            .add_service(with_limits!(
                v1::usage_service_server::UsageServiceServer::new(crate::usage::UsageService::new(
                    reg!(),
                    reg!()
                ))
            ))
            .add_service(with_limits!(
                v1::version_service_server::VersionServiceServer::new(
                    crate::version::VersionService {
                        namespaces: reg!(),
                        store: config.store.name(),
                    }
                )
            ))
            .add_service(with_limits!(
                v1::access_review_service_server::AccessReviewServiceServer::new(
                    crate::access_review::AccessReviewService { nodes: reg!() }
                )
            ))
            .add_service(with_limits!(
                v1::join_service_server::JoinServiceServer::new(crate::join::JoinService {
                    tokens: reg!(),
                    nodes: reg!(),
                    certificates: reg!(),
                })
            ));

        let local = listener.local_addr().ok();
        info!(address = ?local, data_dir = %config.data_dir.display(), revision = store.current_revision(), tls = tls.is_some(), "serving");
        let drain = shutdown.clone();
        let mut server =
            match tls {
                Some((server_config, revocations)) => {
                    let incoming = crate::tls::incoming(
                        listener,
                        server_config,
                        revocations,
                        options.metrics.clone(),
                        shutdown.child_token(),
                    );
                    tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
                        drain.cancelled().await
                    }))
                }
                None => tokio::spawn(
                    router.serve_with_incoming_shutdown(no_delay(listener), async move {
                        drain.cancelled().await
                    }),
                ),
            };
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
        let _ = suspect.await;
        match result {
            Ok(r) => r.map_err(ServerError::from),
            Err(join) => Err(ServerError::Init(format!("server task failed: {join}"))),
        }
    }
}
