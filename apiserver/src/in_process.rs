//! The controllers an apiserver runs in its own process, talking to itself over
//! gRPC like any client: the garbage collector always (in every apiserver), the
//! leader-elected controllers unless `--controllers none`. Their health goes into
//! [`Health::process`] (served on `/healthz`); [`mirror_health`] also reflects it in
//! the gRPC health service.

use hypermesh_runtime::health::Health;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
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
