//! The one side HTTP server of every component (`--metrics-addr`): `GET /metrics`
//! (OpenMetrics text when the scraper asks for it, the classic Prometheus text format
//! otherwise; see [`format`]) and `GET /healthz` (`200 ok` or `503` naming the
//! components that are down), plus [`Telemetry`], a metrics registry and a
//! [`Health`] for parts of a process that report without being handed one.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::health::Health;

pub mod format;

/// Writes a component's metrics (without the final `# EOF`, added by the server).
pub type Exposition = Arc<dyn Fn(&mut String) + Send + Sync>;

/// An extra plain-text page of a component (e.g. the proxy's `/paths`): its path and
/// what renders it.
pub type Page = (&'static str, Arc<dyn Fn() -> String + Send + Sync>);

/// Appends `registry`'s metrics to `out` in the text format (without `# EOF`).
pub fn write_registry(out: &mut String, registry: &Registry) {
    if let Err(e) = prometheus_client::encoding::text::encode_registry(out, registry) {
        warn!(error = %e, "encoding metrics failed");
    }
}

/// A metrics registry and a health report shared by the parts of one process.
#[derive(Debug, Clone)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
    health: Health,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            registry: Arc::new(Mutex::new(Registry::default())),
            health: Health::new(),
        }
    }
}

static PROCESS: LazyLock<Telemetry> = LazyLock::new(|| Telemetry {
    registry: Arc::new(Mutex::new(Registry::default())),
    health: Health::process(),
});

impl Telemetry {
    /// An empty registry and a healthy report.
    pub fn new() -> Self {
        Self::default()
    }

    /// This process's telemetry (its health is [`Health::process`]).
    pub fn process() -> Telemetry {
        PROCESS.clone()
    }

    /// The health report.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The registry, to register metrics in.
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends every registered metric to `out` (without `# EOF`).
    pub fn write(&self, out: &mut String) {
        write_registry(out, &self.registry());
    }

    /// This telemetry's metrics as an [`Exposition`].
    pub fn exposition(&self) -> Exposition {
        let telemetry = self.clone();
        Arc::new(move |out: &mut String| telemetry.write(out))
    }
}

fn render_metrics(parts: &[Exposition]) -> String {
    let mut out = String::new();
    for part in parts {
        part(&mut out);
    }
    let _ = writeln!(out, "# EOF");
    out
}

/// The metrics in the format `accept` asks for, with its content type.
fn metrics_body(parts: &[Exposition], accept: Option<&str>) -> (&'static str, String) {
    let openmetrics = render_metrics(parts);
    if format::wants_openmetrics(accept) {
        (format::OPENMETRICS_CONTENT_TYPE, openmetrics)
    } else {
        (
            format::CLASSIC_CONTENT_TYPE,
            format::to_classic(&openmetrics),
        )
    }
}

fn respond(
    path: &str,
    accept: Option<&str>,
    parts: &[Exposition],
    pages: &[Page],
    health: &Health,
) -> Response<Full<Bytes>> {
    let page = pages.iter().find(|(p, _)| *p == path);
    let (status, content_type, body) = match path {
        _ if page.is_some() => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            page.map(|(_, render)| render()).unwrap_or_default(),
        ),
        "/metrics" => {
            let (content_type, body) = metrics_body(parts, accept);
            (StatusCode::OK, content_type, body)
        }
        "/healthz" if health.is_healthy() => {
            (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
        }
        "/healthz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("unhealthy\n{}", health.report()),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "try /metrics or /healthz\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert("content-type", value);
    }
    response
}

/// Serves `/metrics` (every part of `parts`, in order) and `/healthz` (from `health`)
/// on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    parts: Vec<Exposition>,
    health: Health,
    shutdown: CancellationToken,
) {
    serve_with_pages(listener, parts, Vec::new(), health, shutdown).await;
}

/// [`serve`], with extra plain-text `pages`.
pub async fn serve_with_pages(
    listener: TcpListener,
    parts: Vec<Exposition>,
    pages: Vec<Page>,
    health: Health,
    shutdown: CancellationToken,
) {
    let parts: Arc<[Exposition]> = parts.into();
    let pages: Arc<[Page]> = pages.into();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                debug!(error = %e, "accepting a metrics connection failed");
                continue;
            }
        };
        let (parts, pages, health, shutdown) = (
            parts.clone(),
            pages.clone(),
            health.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let accept = request
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let response = respond(request.uri().path(), accept, &parts, &pages, &health);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = connection => if let Err(e) = result {
                    debug!(%peer, error = %e, "metrics connection ended");
                },
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ComponentState;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn metrics_end_with_one_eof_and_health_names_what_is_down() {
        let a = Telemetry::new();
        let counter = Counter::<u64>::default();
        a.registry().register("a_things", "things", counter.clone());
        counter.inc();
        let b: Exposition = Arc::new(|out: &mut String| out.push_str("# HELP b x\n"));
        let body = render_metrics(&[a.exposition(), b]);
        assert!(body.contains("a_things_total 1"), "{body}");
        assert_eq!(body.matches("# EOF").count(), 1);
        assert!(body.ends_with("# EOF\n"));

        let health = Health::new();
        let ok = respond("/healthz", None, &[], &[], &health);
        assert_eq!(ok.status(), StatusCode::OK);
        health.set("controller/x", ComponentState::Down("panicked".into()));
        let down = respond("/healthz", None, &[], &[], &health);
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            respond("/nope", None, &[], &[], &health).status(),
            StatusCode::NOT_FOUND
        );
    }
}
