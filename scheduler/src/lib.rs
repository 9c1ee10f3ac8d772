//! The scheduler: watches unbound Instances and binds each to the best node that fits.
//!
//! # Layout
//! - [`scheduler`]: the loop — cluster picture, decisions, assumed bindings, Binds in flight.
//! - [`cluster`]: nodes, their assets (GPUs), what is bound where.
//! - [`plugins`]: filters (resources, GPUs, selectors, affinity, taints, privacy,
//!   cordon, readiness, Suspect) and scores (spread, binpack, GPU packing).
//! - [`queue`]: priority queue with back-off for unschedulable Instances.
//! - [`preemption`]: evicting lower-priority Instances for a higher-priority one.
//! - [`gang`]: all-or-nothing placement of a Workload's Instances.
//! - [`report`]: pending reasons as conditions and Events.
//! - [`metrics`]: Prometheus metrics and the `--metrics-addr` endpoint.
//! - [`resources`]: resource arithmetic.

pub mod cluster;
pub mod gang;
pub mod gpus;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod report;
pub mod resources;
pub mod scheduler;

pub use plugins::Profile;
pub use scheduler::{Config, Scheduler};

/// The Lease schedulers elect their leader with, in `hypermesh-system`.
pub const LEADER_LEASE: &str = "hm-scheduler";

/// Runs a scheduler that acts only while it holds the [`LEADER_LEASE`]: several
/// replicas can run, one binds. Returns on `shutdown`.
pub async fn run_elected(
    channel: tonic::transport::Channel,
    config: Config,
    identity: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let config = Config {
        identity: identity.clone(),
        ..config
    };
    let leases = hypermesh_api::Api::<hypermesh_api::v1::Lease>::new(channel.clone());
    let events = hypermesh_runtime::events::EventRecorder::new(
        hypermesh_api::Api::new(channel.clone()),
        "hm-scheduler",
        identity.clone(),
    );
    let elector = hypermesh_runtime::leader::LeaderElector::new(
        leases,
        "hypermesh-system",
        LEADER_LEASE,
        identity,
        std::time::Duration::from_secs(15),
    )
    .with_events(events);
    elector
        .run_while_leader(shutdown, move |term| {
            tracing::info!("leading: scheduling");
            run(channel.clone(), config.clone(), term)
        })
        .await;
}

/// Runs a scheduler against the apiserver behind `channel` until `shutdown`.
pub async fn run(
    channel: tonic::transport::Channel,
    config: Config,
    shutdown: tokio_util::sync::CancellationToken,
) {
    Scheduler::new(&channel, config)
        .run(channel, shutdown)
        .await;
}
