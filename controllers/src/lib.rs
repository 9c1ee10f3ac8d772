//! Controllers that talk to the API like any client. `hm-apiserver` runs them
//! in-process by default (`--controllers all`); when several apiservers run, the
//! Lease `hypermesh-controllers` in `hypermesh-system` elects the one whose
//! controllers act.
//!
//! Garbage collection (owner references) and namespace deletion live in the
//! apiserver itself (`apiserver/src/gc.rs`).
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
//! - [`routes`]: Route status: the stable global address and the selected endpoints.
//! - [`events`]: recording Events about objects.
//! - [`run`] / [`run_with`]: every controller, leader-elected.

// Unit tests may unwrap: a panic there is a failed test, not a crash on network input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod events;
pub mod node_lifecycle;
pub mod routes;
pub mod workload;

use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_runtime::leader::LeaderElector;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
use crate::workload::WorkloadController;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            workers: 4,
        }
    }
}

/// `<hostname>_<pid>_<random>`: unique per process, readable in `hmctl get leases`.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let nonce: u32 = rand::random();
    format!("{host}_{}_{nonce:08x}", std::process::id())
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
/// graces from `node_lifecycle` (tests shorten them).
pub async fn run_with_node_lifecycle(
    channel: Channel,
    config: Config,
    node_lifecycle: NodeLifecycleConfig,
    shutdown: CancellationToken,
) {
    let elector = LeaderElector::new(
        Api::new(channel.clone()),
        LEASE_NAMESPACE,
        LEASE_NAME,
        config.identity.clone(),
        config.lease_duration,
    );
    elector
        .run_while_leader(shutdown, |term| {
            let workloads =
                WorkloadController::new(channel.clone(), &config.identity, config.workers);
            let nodes = NodeLifecycleController::new(
                channel.clone(),
                &config.identity,
                node_lifecycle.clone(),
            );
            let routes = routes::RouteController::new(channel.clone());
            async move {
                tokio::join!(
                    workloads.run(term.clone()),
                    nodes.run(term.clone()),
                    routes.run(term)
                );
            }
        })
        .await;
}
