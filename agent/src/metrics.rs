//! The agent's Prometheus metrics (heartbeats, registrations, assets), served on
//! `--metrics-addr` (`/metrics`, `/healthz`) by the runtime's telemetry server.

use std::sync::Arc;

use hypermesh_runtime::telemetry::{self, Exposition};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Everything the agent counts.
pub struct AgentMetrics {
    registry: Registry,
    /// Lease renewals that succeeded.
    pub heartbeats: Counter,
    /// Lease renewals or condition updates that failed.
    pub heartbeat_failures: Counter,
    /// Seconds one heartbeat (renewal + condition refresh) took.
    pub heartbeat_seconds: Histogram,
    /// UpdateStatus calls that changed the Node's conditions.
    pub condition_updates: Counter,
    /// Completed Node + Asset registrations.
    pub registrations: Counter,
    /// Registrations that failed (retried).
    pub registration_failures: Counter,
    /// Assets currently registered by this node.
    pub assets: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hypermesh_agent");
        let m = AgentMetrics {
            heartbeats: Counter::default(),
            heartbeat_failures: Counter::default(),
            heartbeat_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            condition_updates: Counter::default(),
            registrations: Counter::default(),
            registration_failures: Counter::default(),
            assets: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("heartbeats", "Lease renewals", m.heartbeats.clone());
        registry.register(
            "heartbeat_failures",
            "Failed Lease renewals or condition updates",
            m.heartbeat_failures.clone(),
        );
        registry.register(
            "heartbeat_seconds",
            "Time one heartbeat took",
            m.heartbeat_seconds.clone(),
        );
        registry.register(
            "condition_updates",
            "Node condition changes written",
            m.condition_updates.clone(),
        );
        registry.register(
            "registrations",
            "Node and Asset registrations completed",
            m.registrations.clone(),
        );
        registry.register(
            "registration_failures",
            "Node and Asset registrations that failed",
            m.registration_failures.clone(),
        );
        registry.register("assets", "Assets registered by this node", m.assets.clone());
        AgentMetrics { registry, ..m }
    }
}

impl AgentMetrics {
    /// These metrics for the telemetry server.
    pub fn exposition(self: &Arc<Self>) -> Exposition {
        let metrics = self.clone();
        Arc::new(move |out: &mut String| telemetry::write_registry(out, &metrics.registry))
    }
}
