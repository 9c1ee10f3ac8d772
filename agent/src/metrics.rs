//! The agent's Prometheus metrics (heartbeats and how late they are, registrations,
//! assets, runtime call latency), served on `--metrics-addr` (`/metrics`, `/healthz`)
//! by the runtime's telemetry server.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hypermesh_runtime::telemetry::{self, Exposition};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime_latency::RuntimeLatency;

/// The `kind` of a session the apiserver relays: `logs`, `exec` or `image_import`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub kind: &'static str,
}

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
    /// How late each successful Lease renewal completed against its schedule.
    heartbeat_lag: Histogram,
    /// Seconds since the last successful Lease renewal, set when scraped.
    lease_age: Gauge<f64, AtomicU64>,
    /// When the Lease was last renewed (the agent's start before the first renewal).
    last_renewal: Mutex<Instant>,
    /// Latency of the agent's calls to containerd.
    pub runtime: RuntimeLatency,
    /// Sessions (`hmctl logs`, `exec`, image imports) open now, by kind.
    pub sessions: Family<SessionLabels, Gauge>,
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
            // 1 ms .. ~65 s: a renewal on time is a round trip late; one minutes late
            // means the Lease is about to lapse.
            heartbeat_lag: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            lease_age: Gauge::default(),
            last_renewal: Mutex::new(Instant::now()),
            runtime: RuntimeLatency::default(),
            sessions: Family::default(),
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
        registry.register(
            "heartbeat_lag_seconds",
            "How late each successful Lease renewal completed after its scheduled time",
            m.heartbeat_lag.clone(),
        );
        registry.register(
            "lease_renewal_age_seconds",
            "Seconds since the last successful Lease renewal (since the agent started, before the first)",
            m.lease_age.clone(),
        );
        m.runtime.register(&mut registry);
        registry.register(
            "sessions",
            "Sessions relayed by the apiserver open now (logs, exec, image_import)",
            m.sessions.clone(),
        );
        AgentMetrics { registry, ..m }
    }
}

impl AgentMetrics {
    /// Records a successful Lease renewal of the heartbeat scheduled at `scheduled`.
    pub fn lease_renewed(&self, scheduled: Instant) {
        let now = Instant::now();
        self.heartbeat_lag
            .observe(now.saturating_duration_since(scheduled).as_secs_f64());
        *self
            .last_renewal
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// These metrics for the telemetry server.
    pub fn exposition(self: &Arc<Self>) -> Exposition {
        let metrics = self.clone();
        Arc::new(move |out: &mut String| {
            let last = *metrics
                .last_renewal
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            metrics.lease_age.set(last.elapsed().as_secs_f64());
            telemetry::write_registry(out, &metrics.registry)
        })
    }
}
