//! The proxy's Prometheus metrics and the small HTTP server on `--metrics-addr`
//! (`/metrics`, `/healthz`, and `/paths`: the path to each peer as text).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::mesh::Mesh;
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

/// Everything the proxy counts.
#[derive(Default)]
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

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Refreshes the path gauges from the mesh.
    pub fn refresh_paths(&self, mesh: &Mesh) {
        self.peer_path.clear();
        self.peer_rtt_seconds.clear();
        for p in mesh.paths() {
            let labels = path_labels(&p.peer, &p.path);
            self.peer_path.get_or_create(&labels).set(1);
            if let Some(rtt) = p.rtt {
                self.peer_rtt_seconds
                    .get_or_create(&labels)
                    .set(rtt.as_secs_f64());
            }
        }
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

/// `peer=direct rtt=0.4ms` lines, one per peer.
pub fn paths_text(mesh: &Mesh) -> String {
    let mut out = String::new();
    for p in mesh.paths() {
        let path = match &p.path {
            Path::Direct => "direct".to_string(),
            Path::Relay(r) => format!("relay via={r}"),
        };
        let rtt = p
            .rtt
            .map(|r| format!(" rtt={:.1}ms", r.as_secs_f64() * 1000.0))
            .unwrap_or_default();
        out.push_str(&format!("{} {path}{rtt}\n", p.peer));
    }
    out
}

/// Serves `/metrics`, `/healthz` and `/paths` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mesh: Mesh,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = metrics.clone();
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let mesh = mesh.clone();
                async move {
                    let (status, body) = match req.uri().path() {
                        "/metrics" => {
                            metrics.refresh_paths(&mesh);
                            (StatusCode::OK, metrics.encode())
                        }
                        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
                        "/paths" => (StatusCode::OK, paths_text(&mesh)),
                        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
                    };
                    Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(body)))
                        .map_err(std::io::Error::other)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
