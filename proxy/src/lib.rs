//! The proxy: carries TCP (and UDP) flows to Instances and Routes by their global IPv6
//! address (`fd48:4d00::/32`) across hosts over QUIC, including hosts behind NAT that
//! accept no inbound connections (they keep an outbound connection to a relay).
//!
//! # Layout
//! - [`tls`]: the node's credentials from the agent's state dir and the rustls configs
//!   (TLS 1.3, aws-lc-rs, `X25519MLKEM768` preferred, mutual authentication).
//! - [`transport`]: the quinn endpoint, one connection per peer, dialing.
//! - [`header`]: the fixed-size header opening each stream and the reply byte.
//! - [`catalog`]: Instances, Routes and Nodes learned through the runtime crate's
//!   watcher and reflector, and the lookup index over them.
//! - [`mesh`]: source side (resolve, balance, retry, open a stream), target side
//!   (deliver or relay), and the relay attachment of a NAT'd host.
//! - [`netns`]: connecting from inside an Instance's network namespace.
//! - [`socks`]: the SOCKS5 listener.
//! - [`transparent`]: `hm0`, the nftables redirect and the transparent listener.
//! - [`status`]: the Node annotations other proxies and `hmctl` read.
//! - [`metrics`]: Prometheus metrics (served by the runtime crate's telemetry server).
//! - [`paths`]: the path to each peer, as gauges and the `/paths` page.
//! - [`api`]: the apiserver connection.

pub mod api;
pub mod catalog;
pub mod header;
pub mod mesh;
pub mod metrics;
pub mod netns;
pub mod paths;
pub mod socks;
pub mod status;
pub mod tls;
pub mod transparent;
pub mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_api::v1::Node;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use mesh::RelayChoice;

use crate::catalog::Catalog;
use crate::mesh::Mesh;
use crate::metrics::Metrics;
use crate::netns::Delivery;

/// Default QUIC port.
pub const DEFAULT_QUIC_PORT: u16 = 7446;
/// How long open flows get to finish after shutdown is requested.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// What the proxy needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Apiserver URL.
    pub server: String,
    /// The agent's state dir (credentials in `pki/`).
    pub state_dir: PathBuf,
    /// Where QUIC is accepted (UDP).
    pub listen_quic: SocketAddr,
    /// The endpoint published for other proxies to dial (default: `listen_quic` when it
    /// names a specific address; none for a host behind NAT unless given).
    pub advertise: Option<SocketAddr>,
    /// The relay for a host that accepts no inbound connections.
    pub relay: RelayChoice,
    /// SOCKS5 listener.
    pub socks: Option<SocketAddr>,
    /// Metrics listener.
    pub metrics_addr: Option<SocketAddr>,
    /// Transparent listener; when set, the proxy also sets up `hm0` and the nftables
    /// redirect of TCP to `fd48:4d00::/32` into it.
    pub transparent: Option<SocketAddr>,
    /// containerd's socket (delivery into Instances).
    pub containerd_socket: PathBuf,
}

impl Config {
    /// Defaults for everything but the server and the state dir.
    pub fn new(server: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Config {
            server: server.into(),
            state_dir: state_dir.into(),
            listen_quic: SocketAddr::from(([0, 0, 0, 0], DEFAULT_QUIC_PORT)),
            advertise: None,
            relay: RelayChoice::None,
            socks: None,
            metrics_addr: None,
            transparent: None,
            containerd_socket: "/run/containerd/containerd.sock".into(),
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Credentials missing or invalid.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The QUIC endpoint could not be set up.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// `hm0` or the nftables redirect could not be set up.
    #[error(transparent)]
    Transparent(#[from] transparent::TransparentError),
    /// A TCP listener could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// socks or metrics.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The apiserver could not be reached.
    #[error(transparent)]
    Api(#[from] hypermesh_api::client::ConnectError),
}

/// A proxy with its sockets bound, not yet serving.
#[derive(Debug)]
pub struct Proxy {
    config: Config,
    credentials: tls::NodeCredentials,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    socks: Option<TcpListener>,
    metrics_listener: Option<TcpListener>,
    transparent: Option<TcpListener>,
}

impl Proxy {
    /// Loads the credentials and binds every socket.
    pub async fn bind(config: Config) -> Result<Proxy, ProxyError> {
        tls::install_default_provider();
        let credentials = tls::NodeCredentials::load(&config.state_dir)?;
        let (endpoint, client) = transport::endpoint(&credentials, config.listen_quic)?;
        let socks = match config.socks {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ProxyError::Bind {
                            what: "socks",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                metrics::bind(addr)
                    .await
                    .map_err(|source| ProxyError::Bind {
                        what: "metrics",
                        addr,
                        source,
                    })?,
            ),
            None => None,
        };
        let transparent = match config.transparent {
            Some(addr) => {
                let listener =
                    transparent::bind(addr)
                        .await
                        .map_err(|source| ProxyError::Bind {
                            what: "transparent",
                            addr,
                            source,
                        })?;
                let port = listener
                    .local_addr()
                    .map(|a| a.port())
                    .unwrap_or(addr.port());
                transparent::install(port)?;
                Some(listener)
            }
            None => None,
        };
        Ok(Proxy {
            config,
            credentials,
            endpoint,
            client,
            socks,
            metrics_listener,
            transparent,
        })
    }

    /// This node's name (from its certificate).
    pub fn node_name(&self) -> &str {
        &self.credentials.node_name
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// The bound SOCKS address.
    pub fn socks_addr(&self) -> Option<SocketAddr> {
        self.socks.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The endpoint published for other proxies.
    fn advertise(&self) -> Option<SocketAddr> {
        self.config.advertise.or_else(|| {
            let bound = self.quic_addr()?;
            (!bound.ip().is_unspecified() && self.config.relay == RelayChoice::None)
                .then_some(bound)
        })
    }

    /// Serves until `shutdown`, then drains for at most [`DRAIN_GRACE`].
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ProxyError> {
        let channel = loop {
            match api::connect(&self.config).await {
                Ok(c) => break c,
                Err(e) => tracing::warn!(error = %e, "apiserver unreachable; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let advertise = self.advertise();
        let metrics = Metrics::new();
        let catalog = Catalog::watch(channel.clone(), shutdown.clone());
        let delivery = Delivery::new(self.config.containerd_socket.clone());
        let mesh = Mesh::new(
            self.credentials.node_name.clone(),
            self.endpoint.clone(),
            self.client.clone(),
            catalog,
            delivery,
            metrics.clone(),
            shutdown.clone(),
        );
        info!(
            node = %mesh.node(),
            quic = ?self.quic_addr(),
            ?advertise,
            relay = ?self.config.relay,
            "hm-proxy serving"
        );
        tokio::spawn(mesh.clone().accept_loop());
        if self.config.relay != RelayChoice::None {
            tokio::spawn(mesh.clone().keep_relay(self.config.relay.clone()));
        }
        if let Some(listener) = self.socks {
            tokio::spawn(socks::serve(listener, mesh.clone(), shutdown.clone()));
        }
        if let Some(listener) = self.transparent {
            tokio::spawn(transparent::serve(listener, mesh.clone(), shutdown.clone()));
        }
        if let Some(listener) = self.metrics_listener {
            let exposition: hypermesh_runtime::telemetry::Exposition = {
                let (metrics, mesh) = (Arc::clone(&metrics), mesh.clone());
                Arc::new(move |out: &mut String| {
                    paths::refresh_metrics(&mesh);
                    metrics.write(out);
                })
            };
            let page: hypermesh_runtime::telemetry::Page = {
                let mesh = mesh.clone();
                ("/paths", Arc::new(move || paths::text(&mesh)))
            };
            tokio::spawn(hypermesh_runtime::telemetry::serve_with_pages(
                listener,
                vec![exposition],
                vec![page],
                hypermesh_runtime::health::Health::new(),
                shutdown.clone(),
            ));
        }
        tokio::spawn(status::publish(
            Api::<Node>::new(channel),
            mesh.clone(),
            advertise,
            shutdown.clone(),
        ));
        shutdown.cancelled().await;
        // Drain: no new flows; open ones get the grace period.
        let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
        while metrics.open_flows.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.endpoint.close(
            quinn::VarInt::from_u32(header::codes::SHUTDOWN),
            b"shutdown",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        Ok(())
    }
}

/// Binds and serves until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ProxyError> {
    Proxy::bind(config).await?.serve(shutdown).await
}
