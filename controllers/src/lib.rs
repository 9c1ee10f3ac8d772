//! Controllers that talk to the API like any client, each a reconcile function on
//! the runtime's [`Controller`](hypermesh_runtime::controller::Controller) driver.
//! `hm-apiserver` runs them in-process by default (`--controllers all`); when
//! several apiservers run, the Lease `hypermesh-controllers` in `hypermesh-system`
//! elects the one whose controllers act. The garbage collector runs in every
//! apiserver (its deletes are idempotent), whatever `--controllers` says.
//!
//! # Layout
//! - [`workload`]: keeps `replicas` Instances per Workload, replaces failed ones,
//!   rolls template changes out, and reports status and revision history. Its parts:
//!   [`workload::template`] (hash, stamping Instances), [`workload::plan`] (what to
//!   create and delete, without I/O), [`workload::status`] (counts, conditions,
//!   history) and [`workload::expectations`] (waiting for the cache to catch up).
//! - [`node_lifecycle`]: marks nodes whose heartbeat Lease lapsed `Ready=Unknown`,
//!   taints them `hypermesh.io/unreachable:NoExecute`, and after a grace period
//!   deletes the Instances on them that do not tolerate that.
//! - [`gc`]: garbage collection (owner references) and namespace deletion.
//! - [`routes`]: Route status: the stable global address and the selected endpoints.
//! - [`events`]: recording Events about objects, aggregated (from the runtime crate);
//!   [`event_expiry`] deletes them an hour (`Config::event_ttl`) after they last
//!   happened.
//! - [`run`] / [`run_with`]: the leader-elected controllers.

// Unit tests may unwrap: a panic there is a failed test, not a crash on network input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod event_expiry;
pub mod gc;
pub mod node_lifecycle;
pub mod routes;
pub mod workload;

pub use hypermesh_runtime::events;
pub use hypermesh_runtime::leader::default_identity;

use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_runtime::controller::ControllerMetrics;
use hypermesh_runtime::events::EventRecorder;
use hypermesh_runtime::health::Health;
use hypermesh_runtime::leader::LeaderElector;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::node_lifecycle::NodeLifecycleConfig;

/// Namespace of the controllers' leader-election Lease.
pub const LEASE_NAMESPACE: &str = "hypermesh-system";
/// Name of the controllers' leader-election Lease.
pub const LEASE_NAME: &str = "hypermesh-controllers";

/// How the controllers run.
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica's name in the election (and on the Events it records); unique per
    /// process.
    pub identity: String,
    /// How long the Lease holds without renewal; another replica takes over at most
    /// this long after the leader dies (at once after a clean shutdown).
    pub lease_duration: Duration,
    /// Workloads reconciled at once.
    pub workers: usize,
    /// How long an Event is kept after it last happened.
    pub event_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            workers: 4,
            event_ttl: hypermesh_runtime::events::DEFAULT_EVENT_TTL,
        }
    }
}

/// Runs every controller with the default [`Config`] until `shutdown`.
pub async fn run(channel: Channel, shutdown: CancellationToken) {
    run_with(channel, Config::default(), shutdown).await;
}

/// Runs every controller until `shutdown`, acting only while this replica holds the
/// controllers' Lease. On shutdown the controllers stop first, then the Lease is
/// released so another replica takes over at once.
pub async fn run_with(channel: Channel, config: Config, shutdown: CancellationToken) {
    run_with_node_lifecycle(channel, config, NodeLifecycleConfig::default(), shutdown).await;
}

/// [`run_with`], with the node-lifecycle controller's Lease, startup and eviction
/// graces from `node_lifecycle` (tests shorten them). Health and metrics go to this
/// process's [`Health::process`] and [`ControllerMetrics::process`].
pub async fn run_with_node_lifecycle(
    channel: Channel,
    config: Config,
    node_lifecycle: NodeLifecycleConfig,
    shutdown: CancellationToken,
) {
    run_reporting(
        channel,
        config,
        node_lifecycle,
        Health::process(),
        ControllerMetrics::process(),
        shutdown,
    )
    .await;
}

/// [`run_with_node_lifecycle`], reporting into `health` and `metrics`.
pub async fn run_reporting(
    channel: Channel,
    config: Config,
    node_lifecycle: NodeLifecycleConfig,
    health: Health,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let events = EventRecorder::new(
        Api::new(channel.clone()),
        "leader-election",
        config.identity.clone(),
    );
    let elector = LeaderElector::new(
        Api::new(channel.clone()),
        LEASE_NAMESPACE,
        LEASE_NAME,
        config.identity.clone(),
        config.lease_duration,
    )
    .with_events(events);
    let campaign = CancellationToken::new();
    let leadership = elector.spawn(campaign.clone());
    let (workloads, workload_ctx) = workload::controller(&channel, &config.identity);
    let (nodes, node_ctx) = node_lifecycle::controller(&channel, &config.identity, node_lifecycle);
    let (routes, route_ctx) = routes::controller(&channel);
    let (expiry, expiry_ctx) = event_expiry::controller(&channel, config.event_ttl);
    tokio::join!(
        workloads
            .workers(config.workers)
            .leader(leadership.subscribe())
            .health(health.clone())
            .metrics(metrics.clone())
            .run(workload::reconcile, workload_ctx, shutdown.clone()),
        nodes
            .leader(leadership.subscribe())
            .health(health.clone())
            .metrics(metrics.clone())
            .run(node_lifecycle::reconcile, node_ctx, shutdown.clone()),
        routes
            .leader(leadership.subscribe())
            .health(health.clone())
            .metrics(metrics.clone())
            .run(routes::reconcile, route_ctx, shutdown.clone()),
        expiry
            .leader(leadership.subscribe())
            .health(health)
            .metrics(metrics)
            .run(event_expiry::reconcile, expiry_ctx, shutdown),
    );
    // The controllers have stopped: only now give the Lease up.
    campaign.cancel();
    leadership.stopped().await;
}
