//! Prometheus metrics: request counts and latencies per kind and verb, open watches,
//! and the store revision, served as text on `GET /metrics` by the runtime's one
//! telemetry server (with `GET /healthz`), together with what the rest of the process
//! reports (the in-process controllers' counters and health).
//!
//! Without `--metrics-addr` nothing can read them, so the server builds them
//! [`Metrics::disabled`]: requests, watches and handshakes are then not recorded at all
//! (no clock read, no label lookup, no lock), not only left unserved.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use hypermesh_runtime::health::Health;
use hypermesh_runtime::telemetry::{self, Exposition, Telemetry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    verb: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    kind: &'static str,
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabels {
    kind: &'static str,
    /// `cache` (the watch cache answered) or `store`.
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    /// The negotiated key exchange group, or `failed`.
    group: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The apiserver's metrics.
pub struct Metrics {
    /// False: every recording call returns at once (see [`Metrics::disabled`]).
    enabled: bool,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    watches: Family<KindLabels, Gauge>,
    lists: Family<ListLabels, Counter>,
    revision: Gauge<u64, AtomicU64>,
    handshakes: Family<HandshakeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hypermesh_apiserver");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "gRPC requests by kind, verb and status code",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "gRPC request latency by kind and verb (Watch: time to open)",
            latency.clone(),
        );
        let watches = Family::<KindLabels, Gauge>::default();
        registry.register("watches", "open watch streams by kind", watches.clone());
        let lists = Family::<ListLabels, Counter>::default();
        registry.register(
            "list_pages",
            "List pages answered, by kind and source (cache: the watch cache answered a selective List; store: read from the store)",
            lists.clone(),
        );
        let revision = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "store_revision",
            "revision of the last committed write",
            revision.clone(),
        );
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the gRPC port by negotiated key exchange group (group=\"failed\" for handshakes that failed or timed out)",
            handshakes.clone(),
        );
        Metrics {
            enabled: true,
            registry,
            requests,
            latency,
            watches,
            lists,
            revision,
            handshakes,
        }
    }
}

/// Measures one request from creation to [`RequestTimer::finish`] (nothing when the
/// metrics are disabled).
#[derive(Debug)]
pub struct RequestTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    verb: &'static str,
    started: Option<Instant>,
}

impl RequestTimer<'_> {
    /// Records the outcome and returns it unchanged.
    pub fn finish<T>(self, result: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
        let Some(started) = self.started else {
            return result;
        };
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(s) => format!("{:?}", s.code()),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                kind: self.kind,
                verb: self.verb,
                code,
            })
            .inc();
        self.metrics
            .latency
            .get_or_create(&LatencyLabels {
                kind: self.kind,
                verb: self.verb,
            })
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

impl Metrics {
    /// Metrics that record nothing: for an apiserver without `--metrics-addr`.
    pub fn disabled() -> Self {
        Metrics {
            enabled: false,
            ..Metrics::default()
        }
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Starts timing a request.
    pub fn request(&self, kind: &'static str, verb: &'static str) -> RequestTimer<'_> {
        RequestTimer {
            metrics: self,
            kind,
            verb,
            started: self.enabled.then(Instant::now),
        }
    }

    /// Counts a List page of `kind` answered from the watch cache (`from_cache`) or
    /// the store.
    pub fn list_page(&self, kind: &'static str, from_cache: bool) {
        if !self.enabled {
            return;
        }
        let source = if from_cache { "cache" } else { "store" };
        self.lists.get_or_create(&ListLabels { kind, source }).inc();
    }

    /// Counts a completed TLS handshake that negotiated `group` (e.g. `X25519MLKEM768`).
    pub fn tls_handshake(&self, group: &str) {
        if !self.enabled {
            return;
        }
        self.handshakes
            .get_or_create(&HandshakeLabels {
                group: group.to_string(),
            })
            .inc();
    }

    /// Counts a TLS handshake that failed or timed out.
    pub fn tls_handshake_failed(&self) {
        self.tls_handshake("failed");
    }

    /// Counts an open watch until the guard drops.
    pub fn watch_opened(self: &Arc<Self>, kind: &'static str) -> WatchGuard {
        if !self.enabled {
            return WatchGuard {
                metrics: None,
                kind,
            };
        }
        self.watches.get_or_create(&KindLabels { kind }).inc();
        WatchGuard {
            metrics: Some(self.clone()),
            kind,
        }
    }

    /// Appends every metric to `out` (Prometheus text, without the final `# EOF`).
    pub fn write(&self, out: &mut String, store: &dyn Store) {
        self.revision.set(store.current_revision());
        telemetry::write_registry(out, &self.registry);
    }
}

/// Decrements the open-watch gauge when dropped.
#[derive(Debug)]
pub struct WatchGuard {
    metrics: Option<Arc<Metrics>>,
    kind: &'static str,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics
                .watches
                .get_or_create(&KindLabels { kind: self.kind })
                .dec();
        }
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`: the request
/// metrics of `metrics` and the process's [`Telemetry`]; health from
/// [`Health::process`], where the in-process controllers report.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) {
    let requests: Exposition = Arc::new(move |out: &mut String| metrics.write(out, store.as_ref()));
    let parts = vec![requests, Telemetry::process().exposition()];
    telemetry::serve(listener, parts, Health::process(), shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_metrics_record_nothing() {
        for (metrics, recorded) in [(Metrics::default(), true), (Metrics::disabled(), false)] {
            let metrics = Arc::new(metrics);
            let _ = metrics
                .request("Workload", "Get")
                .finish(Ok::<_, tonic::Status>(()));
            metrics.tls_handshake("X25519MLKEM768");
            let watch = metrics.watch_opened("Workload");
            let mut out = String::new();
            telemetry::write_registry(&mut out, &metrics.registry);
            assert_eq!(out.contains("verb=\"Get\""), recorded, "{out}");
            assert_eq!(out.contains("X25519MLKEM768"), recorded, "{out}");
            assert_eq!(
                out.contains("watches{kind=\"Workload\"} 1"),
                recorded,
                "{out}"
            );
            drop(watch);
        }
    }
}
