//! The controllers an apiserver runs in its own process, talking to itself over
//! gRPC like any client: the garbage collector always (in every apiserver), the
//! leader-elected controllers unless `--controllers none`. Their health goes into
//! [`Health::process`] (served on `/healthz`); [`mirror_health`] also reflects it in
//! the gRPC health service.

use std::net::SocketAddr;
use std::time::Duration;

use hypermesh_runtime::health::Health;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::info;

/// Which controllers run besides the garbage collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controllers {
    /// Workloads, node lifecycle: leader-elected among apiservers.
    All,
    /// Only the garbage collector.
    None,
}

/// Why the server's own address cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("cannot dial this server at {address}: {source}")]
pub struct SelfChannelError {
    /// The address.
    pub address: SocketAddr,
    /// Why.
    #[source]
    pub source: tonic::transport::Error,
}

/// A channel to this server's gRPC address (loopback when it listens on every
/// interface), connected on first use.
pub fn self_channel(address: SocketAddr) -> Result<Channel, SelfChannelError> {
    let mut target = address;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let endpoint = Endpoint::from_shared(format!("http://{target}"))
        .map_err(|source| SelfChannelError { address, source })?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    Ok(endpoint.connect_lazy())
}

/// Runs the in-process controllers against the server behind `channel` until
/// `shutdown` (then the leader-elected ones release their Lease).
pub async fn run(channel: Channel, controllers: Controllers, shutdown: CancellationToken) {
    let gc = hypermesh_controllers::gc::run(channel.clone(), shutdown.clone());
    match controllers {
        Controllers::All => {
            tokio::join!(gc, hypermesh_controllers::run(channel, shutdown));
        }
        Controllers::None => gc.await,
    }
    info!("in-process controllers stopped");
}

/// Keeps the gRPC health service's overall status (the empty service name) in step
/// with `health`: `NOT_SERVING` while a component is down. Returns on `shutdown`.
pub async fn mirror_health(health: Health, reporter: HealthReporter, shutdown: CancellationToken) {
    let mut changes = health.subscribe();
    loop {
        let status = if health.is_healthy() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}
