//! The dashboard's HTTP surface: the embedded page, a small JSON API in front of the
//! gRPC calls (made with the user's own identity, so the apiserver decides what they
//! may see and do), the live event stream and the usage history.
//!
//! Every `/api/` GET takes `?namespace=NS`: absent, the namespace `hmctl dashboard` was
//! started for; empty (`?namespace=`), all namespaces (what the apiserver lets the user
//! list across them). The POST bodies take `"namespace"` the same way.
//!
//! | method, path | does |
//! |---|---|
//! | GET `/`, `/app.js`, `/style.css` | the page (`/?token=T` sets the cookie and redirects to `/`) |
//! | GET `/api/access` | who the apiserver takes us for, and which actions it would allow |
//! | GET `/api/events` | server-sent events: listings and changes ([`super::live`]) |
//! | GET `/api/usage` | the usage samples so far, and how often one is taken |
//! | GET `/api/logs?name=I[&container=C][&tail=N][&follow=true]` | an Instance's log (text), or followed live (server-sent events, [`super::logs`]) |
//! | POST `/api/scale` `{"namespace","name","replicas"}` | `hmctl scale` |
//! | POST `/api/delete` `{"namespace","kind":"workloads"\|"instances","name"}` | `hmctl delete` |
//! | POST `/api/cordon` `{"name","cordon":bool}` | `hmctl cordon` / `uncordon` |

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hypermesh_api::Api;
use hypermesh_api::v1::access_review_service_client::AccessReviewServiceClient;
use hypermesh_api::v1::{AccessCheck, AccessReviewRequest, DeleteRequest};
use hypermesh_api::v1::{Instance, Node, Workload};
use serde::Deserialize;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

use super::guard::Guard;
use super::live::{self, History};
use crate::error::ServerError;

/// The response body: whole, or streamed (SSE).
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted (the actions' JSON is tiny).
const MAX_BODY: usize = 16 << 10;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// What every request needs.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Who may drive us.
    pub guard: Guard,
    /// The apiserver, as the user.
    pub channel: Channel,
    /// Workloads, Instances, Events and their usage are shown for this namespace first
    /// (the page may pick another, or all).
    pub namespace: String,
    /// Usage samples, and how often one is taken.
    pub history: History,
    /// How often a usage sample is taken (the page polls as often, at most once a second).
    pub sample_every: Duration,
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(super) fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", body.into())
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

/// Headers every answer carries: no framing, no sniffing, no caching, no referrer
/// (the first URL holds the token), and only our own scripts.
fn harden(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// An API error as HTTP: the gRPC code's nearest status and `{"error": "..."}`.
fn error_response(err: &anyhow::Error) -> Response<Body> {
    let status = match err.downcast_ref::<ServerError>().map(|e| e.code) {
        Some(Code::PermissionDenied) => StatusCode::FORBIDDEN,
        Some(Code::Unauthenticated) => StatusCode::UNAUTHORIZED,
        Some(Code::NotFound) => StatusCode::NOT_FOUND,
        Some(Code::InvalidArgument) => StatusCode::BAD_REQUEST,
        Some(Code::Aborted | Code::AlreadyExists) => StatusCode::CONFLICT,
        Some(_) => StatusCode::BAD_GATEWAY,
        None => StatusCode::BAD_REQUEST,
    };
    json_response(status, &json!({"error": format!("{err:#}")}))
}

/// Answers one request (after the guard let it through).
pub async fn handle(dashboard: Arc<Dashboard>, request: Request<Incoming>) -> Response<Body> {
    let query = request.uri().query().map(str::to_string);
    if let Err(refusal) =
        dashboard
            .guard
            .check(request.method(), request.headers(), query.as_deref())
    {
        let mut response = text(refusal.status(), refusal.message());
        harden(&mut response);
        return response;
    }
    let mut response = route(&dashboard, request, query.as_deref()).await;
    harden(&mut response);
    response
}

async fn route(d: &Dashboard, request: Request<Incoming>, query: Option<&str>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let result = match (request.method().clone(), path.as_str()) {
        (Method::GET, "/") if query.is_some_and(|q| q.contains("token=")) => {
            // First visit: keep the token in an HttpOnly cookie, and drop it from the URL.
            let mut response = text(StatusCode::SEE_OTHER, "");
            response
                .headers_mut()
                .insert(header::SET_COOKIE, d.guard.set_cookie());
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/"));
            Ok(response)
        }
        (Method::GET, "/") => Ok(full(StatusCode::OK, "text/html; charset=utf-8", INDEX)),
        (Method::GET, "/app.js") => Ok(full(StatusCode::OK, "text/javascript", APP_JS)),
        (Method::GET, "/style.css") => Ok(full(StatusCode::OK, "text/css", STYLE)),
        (Method::GET, "/api/access") => match namespace_in(d, query) {
            Ok(ns) => access(d, &ns).await,
            Err(e) => Err(e),
        },
        (Method::GET, "/api/events") => namespace_in(d, query).map(|ns| events(d, ns)),
        (Method::GET, "/api/usage") => namespace_in(d, query).map(|ns| {
            json_response(
                StatusCode::OK,
                &json!({
                    "namespace": ns,
                    "everyMs": u64::try_from(d.sample_every.as_millis()).unwrap_or(u64::MAX),
                    "samples": d.history.of(&ns),
                }),
            )
        }),
        (Method::GET, "/api/logs") => match namespace_in(d, query) {
            Ok(ns) => super::logs::logs(d, ns, query).await,
            Err(e) => Err(e),
        },
        (Method::POST, "/api/scale") => match body::<ScaleBody>(request).await {
            Ok(b) => scale(d, b).await,
            Err(e) => Err(e),
        },
        (Method::POST, "/api/delete") => match body::<DeleteBody>(request).await {
            Ok(b) => delete(d, b).await,
            Err(e) => Err(e),
        },
        (Method::POST, "/api/cordon") => match body::<CordonBody>(request).await {
            Ok(b) => cordon(d, b).await,
            Err(e) => Err(e),
        },
        (Method::GET | Method::POST, _) => Ok(text(StatusCode::NOT_FOUND, "not found\n")),
        _ => Ok(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
async fn body<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> anyhow::Result<T> {
    let bytes = Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("request body: {e} (at most {MAX_BODY} bytes)"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("request body: {e}"))
}

fn ok(message: String) -> anyhow::Result<Response<Body>> {
    Ok(json_response(StatusCode::OK, &json!({"message": message})))
}

/// The namespace a GET is about: `?namespace=NS`, all namespaces for `?namespace=`
/// (empty), the dashboard's own when absent.
fn namespace_in(d: &Dashboard, query: Option<&str>) -> anyhow::Result<String> {
    match param(query, "namespace") {
        None => Ok(d.namespace.clone()),
        Some(ns) => checked_namespace(ns),
    }
}

/// `ns` if it is empty (all namespaces) or a valid namespace name.
fn checked_namespace(ns: &str) -> anyhow::Result<String> {
    match ns {
        "" => Ok(String::new()),
        ns => match hypermesh_api::validation::names::dns_label_problem(ns) {
            Some(problem) => anyhow::bail!("namespace: {problem}"),
            None => Ok(ns.to_string()),
        },
    }
}

/// The namespace of the object a POST acts on: the body's, else the dashboard's.
fn object_namespace(d: &Dashboard, ns: Option<&str>) -> anyhow::Result<String> {
    match ns {
        None => Ok(d.namespace.clone()),
        Some("") => anyhow::bail!("namespace: the object's namespace is required"),
        Some(ns) => checked_namespace(ns),
    }
}

/// The actions the page may offer in namespace `ns` (all namespaces when empty), as
/// the apiserver answers for this user.
async fn access(d: &Dashboard, ns: &str) -> anyhow::Result<Response<Body>> {
    let checks = [
        ("scale", "update", "workloads", ns),
        ("deleteWorkloads", "delete", "workloads", ns),
        ("deleteInstances", "delete", "instances", ns),
        ("cordon", "update", "nodes", ""),
        ("logs", "get", "instances/logs", ns),
    ];
    let request = AccessReviewRequest {
        checks: checks
            .iter()
            .map(|(_, verb, resource, namespace)| AccessCheck {
                verb: verb.to_string(),
                resource: resource.to_string(),
                namespace: namespace.to_string(),
                name: String::new(),
            })
            .collect(),
    };
    let answer = AccessReviewServiceClient::new(d.channel.clone())
        .check(request)
        .await
        .map_err(|s| ServerError::from_status(&s).with_context("asking what we may do: "))?
        .into_inner();
    let mut allowed = serde_json::Map::new();
    for ((name, ..), yes) in checks
        .iter()
        .zip(answer.allowed.iter().chain(std::iter::repeat(&false)))
    {
        allowed.insert(name.to_string(), json!(yes));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "identity": answer.identity,
            "namespace": ns,
            "defaultNamespace": d.namespace,
            "allowed": allowed,
        }),
    ))
}

/// The server-sent event stream of namespace `ns` (all namespaces when empty).
fn events(d: &Dashboard, ns: String) -> Response<Body> {
    event_stream(live::event_stream(d.channel.clone(), ns))
}

/// A `text/event-stream` response carrying the frames `rx` receives; the producer sees
/// its sends fail once the page goes away.
pub(super) fn event_stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// `name=…&container=…&tail=…` values (no percent-decoding is needed: names are DNS
/// labels; anything else is refused by the apiserver).
pub(super) fn param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    replicas: u32,
}

async fn scale(d: &Dashboard, body: ScaleBody) -> anyhow::Result<Response<Body>> {
    let replicas = i32::try_from(body.replicas)
        .map_err(|_| anyhow::anyhow!("replicas: {} is too large", body.replicas))?;
    let ns = object_namespace(d, body.namespace.as_deref())?;
    let api = Api::<Workload>::new(d.channel.clone());
    crate::scale::modify_workload(&api, &ns, &body.name, |w| {
        w.spec.get_or_insert_with(Default::default).replicas = replicas;
        Ok(true)
    })
    .await?;
    ok(format!("workload/{} scaled to {replicas}", body.name))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    #[serde(default)]
    namespace: Option<String>,
    kind: String,
    name: String,
}

async fn delete(d: &Dashboard, body: DeleteBody) -> anyhow::Result<Response<Body>> {
    let request = DeleteRequest {
        namespace: object_namespace(d, body.namespace.as_deref())?,
        name: body.name.clone(),
        ..Default::default()
    };
    let result = match body.kind.as_str() {
        "workloads" => Api::<Workload>::new(d.channel.clone())
            .delete(request)
            .await
            .map(drop),
        "instances" => Api::<Instance>::new(d.channel.clone())
            .delete(request)
            .await
            .map(drop),
        other => anyhow::bail!("kind: {other:?} is not one of workloads, instances"),
    };
    result.map_err(|s| ServerError::for_object(&s, &body.kind, &body.name))?;
    ok(format!(
        "{}/{} deleted",
        body.kind.trim_end_matches('s'),
        body.name
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CordonBody {
    name: String,
    cordon: bool,
}

async fn cordon(d: &Dashboard, body: CordonBody) -> anyhow::Result<Response<Body>> {
    let api = Api::<Node>::new(d.channel.clone());
    let change = crate::cordon::set_unschedulable(&api, &body.name, body.cordon).await?;
    ok(crate::cordon::message(&body.name, body.cordon, change))
}
