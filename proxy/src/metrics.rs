//! The proxy's Prometheus metrics and the small HTTP server on `--metrics-addr`
//! (`/metrics`, `/healthz`, and `/paths`: the path to each peer as text): flows,
//! connections between proxies and their handshake latency, bytes carried over the
//! mesh by path (direct or relay), and the path and RTT to each peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::transport::Path;

/// Labels of the flows counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    /// source, target or relay.
    pub side: String,
    /// connected, refused, unknown_address, ...
    pub result: String,
}

/// Labels of the per-peer path gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// The peer node.
    pub peer: String,
    /// direct or relay.
    pub path: String,
    /// The relay node (empty for direct).
    pub via: String,
}

/// Labels of the mesh bytes counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// `sent` to or `received` from another proxy.
    pub direction: &'static str,
    /// `direct` or `relay` (through a relay, or relayed by this proxy).
    pub path: &'static str,
}

/// Labels of the connection counters and handshake latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SideLabels {
    /// `dial` (this proxy connected) or `accept` (a peer connected to it).
    pub side: &'static str,
}

fn handshake_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Everything the proxy counts.
pub struct Metrics {
    registry: std::sync::Mutex<Registry>,
    /// Flows by side and result.
    pub flows: Family<FlowLabels, Counter>,
    /// Flows being spliced now.
    pub open_flows: Gauge,
    /// Route connections retried on another endpoint.
    pub retries: Counter,
    /// Streams closed for a malformed or late header.
    pub bad_headers: Counter,
    /// QUIC handshakes refused (bad or missing certificate, ...).
    pub handshake_failures: Counter,
    /// Direct dials that failed.
    pub dial_failures: Counter,
    /// 1 while attached to a relay.
    pub relay_attached: Gauge,
    /// 1 per peer and its current path.
    pub peer_path: Family<PathLabels, Gauge>,
    /// RTT of the connection carrying each peer's traffic.
    pub peer_rtt_seconds: Family<PathLabels, Gauge<f64, AtomicU64>>,
    /// SOCKS requests refused before a flow was opened (malformed or unsupported).
    pub socks_errors: Counter,
    /// Bytes carried over QUIC streams to and from other proxies, by direction and path.
    pub mesh_bytes: Family<BytesLabels, Counter>,
    /// QUIC connections to other proxies established, by side.
    pub connections: Family<SideLabels, Counter>,
    /// QUIC connections to other proxies open now (set when scraped).
    pub peer_connections: Gauge,
    /// Seconds each successful QUIC handshake took, by side.
    pub handshake_seconds: Family<SideLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registry: Default::default(),
            flows: Default::default(),
            open_flows: Default::default(),
            retries: Default::default(),
            bad_headers: Default::default(),
            handshake_failures: Default::default(),
            dial_failures: Default::default(),
            relay_attached: Default::default(),
            peer_path: Default::default(),
            peer_rtt_seconds: Default::default(),
            socks_errors: Default::default(),
            mesh_bytes: Default::default(),
            connections: Default::default(),
            peer_connections: Default::default(),
            handshake_seconds: Family::new_with_constructor(handshake_histogram),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// All metrics, registered under the `hypermesh_proxy` prefix.
    pub fn new() -> Arc<Self> {
        let m = Metrics::default();
        let mut r = Registry::with_prefix("hypermesh_proxy");
        r.register("flows", "Flows by side and result", m.flows.clone());
        r.register(
            "open_flows",
            "Flows being carried now",
            m.open_flows.clone(),
        );
        r.register(
            "retries",
            "Route connections retried on another endpoint",
            m.retries.clone(),
        );
        r.register(
            "bad_headers",
            "Streams closed for a malformed or late header",
            m.bad_headers.clone(),
        );
        r.register(
            "handshake_failures",
            "QUIC handshakes refused",
            m.handshake_failures.clone(),
        );
        r.register(
            "dial_failures",
            "Direct dials that failed",
            m.dial_failures.clone(),
        );
        r.register(
            "relay_attached",
            "1 while attached to a relay",
            m.relay_attached.clone(),
        );
        r.register(
            "peer_path",
            "Path in use to each peer (1)",
            m.peer_path.clone(),
        );
        r.register(
            "peer_rtt_seconds",
            "RTT of the connection carrying each peer's traffic",
            m.peer_rtt_seconds.clone(),
        );
        r.register(
            "socks_errors",
            "SOCKS requests refused as malformed or unsupported",
            m.socks_errors.clone(),
        );
        r.register(
            "mesh_bytes",
            "Bytes carried over streams to and from other proxies, by direction and path",
            m.mesh_bytes.clone(),
        );
        r.register(
            "connections",
            "QUIC connections to other proxies established, by side (dial, accept)",
            m.connections.clone(),
        );
        r.register(
            "peer_connections",
            "QUIC connections to other proxies open now",
            m.peer_connections.clone(),
        );
        r.register(
            "handshake_duration_seconds",
            "Time a successful QUIC handshake with another proxy took, by side",
            m.handshake_seconds.clone(),
        );
        for direction in ["sent", "received"] {
            for path in ["direct", "relay"] {
                let _ = m.mesh_bytes.get_or_create(&BytesLabels { direction, path });
            }
        }
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        Arc::new(m)
    }

    /// Counts one flow outcome.
    pub fn flow(&self, side: &str, result: &str) {
        self.flows
            .get_or_create(&FlowLabels {
                side: side.into(),
                result: result.into(),
            })
            .inc();
    }

    /// The (received, sent) byte counters of a stream on `path` (`direct`/`relay`).
    pub fn stream_bytes(&self, path: &'static str) -> (Counter, Counter) {
        let counter = |direction| {
            self.mesh_bytes
                .get_or_create(&BytesLabels { direction, path })
                .clone()
        };
        (counter("received"), counter("sent"))
    }

    /// Counts one established connection on `side` (`dial`/`accept`) whose handshake
    /// took `handshake`.
    pub fn connected(&self, side: &'static str, handshake: std::time::Duration) {
        let labels = SideLabels { side };
        self.connections.get_or_create(&labels).inc();
        self.handshake_seconds
            .get_or_create(&labels)
            .observe(handshake.as_secs_f64());
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Sets the path gauges: one series per peer, `1` on its current path, and its
    /// round-trip time when known.
    pub fn set_paths<'a>(
        &self,
        paths: impl IntoIterator<Item = (&'a str, &'a Path, Option<std::time::Duration>)>,
    ) {
        self.peer_path.clear();
        self.peer_rtt_seconds.clear();
        for (peer, path, rtt) in paths {
            let labels = path_labels(peer, path);
            self.peer_path.get_or_create(&labels).set(1);
            if let Some(rtt) = rtt {
                self.peer_rtt_seconds
                    .get_or_create(&labels)
                    .set(rtt.as_secs_f64());
            }
        }
    }

    /// Appends the metrics to `out` (for the shared telemetry server).
    pub fn write(&self, out: &mut String) {
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        hypermesh_runtime::telemetry::write_registry(out, &registry);
    }
}

/// The `path` label of bytes carried on `path`.
pub fn path_label(path: &Path) -> &'static str {
    match path {
        Path::Direct => "direct",
        Path::Relay(_) => "relay",
    }
}

fn path_labels(peer: &str, path: &Path) -> PathLabels {
    let (path, via) = match path {
        Path::Direct => ("direct", String::new()),
        Path::Relay(r) => ("relay", r.clone()),
    };
    PathLabels {
        peer: peer.into(),
        path: path.into(),
        via,
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
