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
//! - [`resources`]: resource arithmetic.

pub mod cluster;
pub mod gang;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod report;
pub mod resources;
pub mod scheduler;

pub use plugins::Profile;
pub use scheduler::{Config, Scheduler};

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
