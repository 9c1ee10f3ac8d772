//! The scheduler's Prometheus metrics — queue depth, scheduling attempts by result,
//! Bind latency — and the `--metrics-addr` endpoint (`/metrics`, `/healthz`) served by
//! the runtime's one telemetry server. The metrics outlive leadership terms: a
//! scheduler that loses and regains the leader Lease keeps counting in the same series.

use std::net::SocketAddr;
use std::sync::Arc;

use hypermesh_runtime::health::Health;
use hypermesh_runtime::telemetry::{self, Exposition};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How one scheduling attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// Bound to a node.
    Scheduled,
    /// No node fits (the Instance is parked and retried later).
    Unschedulable,
    /// A node was chosen but binding failed.
    Error,
}

impl AttemptResult {
    fn label(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    /// `active` (waiting for an attempt now) or `unschedulable` (parked).
    queue: &'static str,
}

/// Everything the scheduler counts.
pub struct SchedulerMetrics {
    registry: Registry,
    attempts: Family<ResultLabels, Counter>,
    pending: Family<QueueLabels, Gauge>,
    binding_seconds: Histogram,
}

impl std::fmt::Debug for SchedulerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchedulerMetrics")
    }
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hypermesh_scheduler");
        let attempts = Family::<ResultLabels, Counter>::default();
        let pending = Family::<QueueLabels, Gauge>::default();
        // 500 µs .. ~8 s
        let binding_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 15));
        registry.register(
            "schedule_attempts",
            "Scheduling attempts by result (scheduled, unschedulable, error)",
            attempts.clone(),
        );
        registry.register(
            "pending_instances",
            "Instances waiting for a node, by queue (active, unschedulable)",
            pending.clone(),
        );
        registry.register(
            "binding_duration_seconds",
            "Time one Bind request to the apiserver took",
            binding_seconds.clone(),
        );
        // Every result and queue has a series from the start, so a scraper sees zeros
        // rather than nothing before the first attempt.
        for result in [
            AttemptResult::Scheduled,
            AttemptResult::Unschedulable,
            AttemptResult::Error,
        ] {
            let _ = attempts.get_or_create(&ResultLabels {
                result: result.label(),
            });
        }
        for queue in ["active", "unschedulable"] {
            let _ = pending.get_or_create(&QueueLabels { queue });
        }
        SchedulerMetrics {
            registry,
            attempts,
            pending,
            binding_seconds,
        }
    }
}

impl SchedulerMetrics {
    /// Counts one attempt that ended with `result`.
    pub fn attempt(&self, result: AttemptResult) {
        self.attempts
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Attempts so far that ended with `result`.
    pub fn attempts(&self, result: AttemptResult) -> u64 {
        self.attempts
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .get()
    }

    /// Sets the queue depths.
    pub fn set_pending(&self, active: usize, unschedulable: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.pending
            .get_or_create(&QueueLabels { queue: "active" })
            .set(gauge(active));
        self.pending
            .get_or_create(&QueueLabels {
                queue: "unschedulable",
            })
            .set(gauge(unschedulable));
    }

    /// Records how long one Bind took.
    pub fn observe_binding(&self, seconds: f64) {
        self.binding_seconds.observe(seconds);
    }

    /// These metrics for the telemetry server.
    pub fn exposition(self: &Arc<Self>) -> Exposition {
        let metrics = self.clone();
        Arc::new(move |out: &mut String| telemetry::write_registry(out, &metrics.registry))
    }
}

/// Binds `addr` and serves `metrics` (`/metrics`) and `health` (`/healthz`) on it until
/// `shutdown`; returns the bound address (for port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: &Arc<SchedulerMetrics>,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(telemetry::serve(
        listener,
        vec![metrics.exposition()],
        health,
        shutdown,
    ));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_has_a_series_from_the_start() {
        let m = Arc::new(SchedulerMetrics::default());
        m.attempt(AttemptResult::Scheduled);
        m.set_pending(2, 1);
        let mut out = String::new();
        (m.exposition())(&mut out);
        for line in [
            "hypermesh_scheduler_schedule_attempts_total{result=\"scheduled\"} 1",
            "hypermesh_scheduler_schedule_attempts_total{result=\"unschedulable\"} 0",
            "hypermesh_scheduler_schedule_attempts_total{result=\"error\"} 0",
            "hypermesh_scheduler_pending_instances{queue=\"active\"} 2",
            "hypermesh_scheduler_pending_instances{queue=\"unschedulable\"} 1",
            "hypermesh_scheduler_binding_duration_seconds_count 0",
        ] {
            assert!(out.contains(line), "no {line} in\n{out}");
        }
    }
}
