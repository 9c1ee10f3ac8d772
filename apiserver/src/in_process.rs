//! The controllers an apiserver runs in its own process, talking to itself over
//! gRPC like any client: the garbage collector always (in every apiserver), the
//! leader-elected controllers unless `--controllers none`. Their health goes into
//! [`Health::process`] (served on `/healthz`); [`mirror_health`] also reflects it in
//! the gRPC health service.

use hypermesh_controllers::node_lifecycle::NodeLifecycleConfig;
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
    let config = hypermesh_controllers::Config::default();
    run_with_lease(
        channel,
        controllers,
        config.lease_duration,
        config.identity,
        NodeLifecycleConfig::default().eviction_grace,
        shutdown,
    )
    .await;
}

/// [`run`], with the leader Lease lasting `lease_duration` (a dead leader is replaced
/// within it; `--controllers-lease-seconds`), campaigning as `identity` (`hm-apiserver`
/// keeps it in its data dir, [`crate::controller_identity`]), and Instances evicted
/// from an unreachable node `eviction_grace` after it is tainted
/// (`--node-eviction-grace-seconds`).
pub async fn run_with_lease(
    channel: Channel,
    controllers: Controllers,
    lease_duration: std::time::Duration,
    identity: String,
    eviction_grace: std::time::Duration,
    shutdown: CancellationToken,
) {
    let gc = hypermesh_controllers::gc::run(channel.clone(), shutdown.clone());
    match controllers {
        Controllers::All => {
            let config = hypermesh_controllers::Config {
                lease_duration,
                identity,
                ..hypermesh_controllers::Config::default()
            };
            let node_lifecycle = NodeLifecycleConfig {
                eviction_grace,
                ..NodeLifecycleConfig::default()
            };
            tokio::join!(
                gc,
                hypermesh_controllers::run_with_node_lifecycle(
                    channel,
                    config,
                    node_lifecycle,
                    shutdown
                )
            );
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
