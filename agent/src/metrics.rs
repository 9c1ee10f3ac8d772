//! The agent's Prometheus metrics (heartbeats, registrations, assets) and the small
//! HTTP server that serves them on `--metrics-addr` (`/metrics`, `/healthz`).

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<AgentMetrics>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = match request.uri().path() {
                    "/metrics" => Response::builder()
                        .header(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(Bytes::from(metrics.encode()))),
                    "/healthz" => Response::builder().body(Full::new(Bytes::from_static(b"ok\n"))),
                    _ => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"try /metrics or /healthz\n"))),
                };
                async move { response }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
