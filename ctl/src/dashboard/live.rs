//! What changes on the page without a reload: the server-sent event stream, fed by
//! the runtime crate's list-then-watch [`watcher`] for each kind the page shows (in one
//! namespace, or all), and the usage history, sampled from `UsageService.List` while
//! the dashboard runs (every namespace the user may list, else the dashboard's own).
//!
//! Each SSE message is one line of JSON: `{"kind":"instances","type":"restarted",
//! "items":[...]}` (a full listing: replace what you have), `{"type":"applied",
//! "object":...}`, `{"type":"deleted","object":...}`, or `{"type":"error",
//! "message":...}` when the caller may not list that kind (the watcher keeps retrying,
//! so a permission granted later shows up).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hypermesh_api::v1::usage_service_client::UsageServiceClient;
use hypermesh_api::v1::{self, UsageListRequest};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::watcher::{self, Event};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Most samples kept (an hour at the default 5 s).
pub const MAX_SAMPLES: usize = 720;
/// Messages an SSE connection may have queued before its watchers wait.
const QUEUE: usize = 64;
/// A comment line this often keeps idle connections (and proxies) from timing out.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One object's usage in a sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// The Instance's namespace (empty for a node).
    pub namespace: String,
    /// Node or Instance name.
    pub name: String,
    /// Millicores, when the agent had two samples.
    pub cpu_millicores: Option<u64>,
    /// Bytes.
    pub memory_bytes: u64,
}

/// What the cluster used at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Unix time, seconds.
    pub time: f64,
    /// Per node.
    pub nodes: Vec<Usage>,
    /// Per Instance (of every namespace the user may list, else of the dashboard's).
    pub instances: Vec<Usage>,
    /// Why a part is missing (e.g. the caller may not list nodes), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The samples so far, oldest first, at most [`MAX_SAMPLES`].
#[derive(Debug, Default, Clone)]
pub struct History(Arc<Mutex<VecDeque<Sample>>>);

impl History {
    /// Adds `sample`, forgetting the oldest beyond [`MAX_SAMPLES`].
    pub fn push(&self, sample: Sample) {
        let mut samples = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Every sample, oldest first.
    pub fn all(&self) -> Vec<Sample> {
        let samples = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().cloned().collect()
    }

    /// Every sample, oldest first, with the Instances of namespace `ns` only (all when
    /// empty).
    pub fn of(&self, ns: &str) -> Vec<Sample> {
        let mut samples = self.all();
        if !ns.is_empty() {
            for s in &mut samples {
                s.instances.retain(|u| u.namespace == ns);
            }
        }
        samples
    }
}

fn usages(items: Vec<v1::ResourceUsage>) -> Vec<Usage> {
    let mut out: Vec<Usage> = items
        .into_iter()
        .map(|u| Usage {
            namespace: u.namespace,
            name: u.name,
            cpu_millicores: u.cpu_millicores,
            memory_bytes: u.memory_bytes,
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// Samples usage every `every` into `history` until the task is dropped.
pub async fn sample_usage(channel: Channel, namespace: String, every: Duration, history: History) {
    let mut client = UsageServiceClient::new(channel);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut errors = Vec::new();
        let list = |kind: &str, namespace: &str| UsageListRequest {
            kind: kind.into(),
            namespace: namespace.into(),
        };
        let nodes = match client.list(list("nodes", "")).await {
            Ok(r) => usages(r.into_inner().items),
            Err(e) => {
                errors.push(format!("nodes: {}", e.message()));
                Vec::new()
            }
        };
        // Every namespace when the user may list Instances across them.
        let instances = match client.list(list("instances", "")).await {
            Ok(r) => Ok(r),
            Err(e) if e.code() == tonic::Code::PermissionDenied => {
                client.list(list("instances", &namespace)).await
            }
            Err(e) => Err(e),
        };
        let instances = match instances {
            Ok(r) => usages(r.into_inner().items),
            Err(e) => {
                errors.push(format!("instances: {}", e.message()));
                Vec::new()
            }
        };
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        history.push(Sample {
            time,
            nodes,
            instances,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        });
    }
}

/// One kind's watcher as SSE JSON lines tagged with the kind.
fn changes<K: Resource>(
    channel: &Channel,
    namespace: &str,
) -> impl Stream<Item = String> + Send + 'static {
    let config = watcher::Config {
        namespace: if K::NAMESPACED {
            namespace.to_string()
        } else {
            String::new()
        },
        ..Default::default()
    };
    watcher::watcher(Api::<K>::new(channel.clone()), config).map(|item| {
        let kind = K::PLURAL;
        let message = match item {
            Ok(Event::Restarted(items)) => {
                json!({"kind": kind, "type": "restarted", "items": items})
            }
            Ok(Event::Applied(object)) => {
                json!({"kind": kind, "type": "applied", "object": object})
            }
            Ok(Event::Deleted(object)) => {
                json!({"kind": kind, "type": "deleted", "object": object})
            }
            Err(e) => json!({"kind": kind, "type": "error", "message": e.to_string()}),
        };
        message.to_string()
    })
}

/// The SSE body for one page: every kind the page shows (namespaced ones in
/// `namespace`, all namespaces when it is empty), and the namespaces to choose from,
/// merged, until the page goes.
pub fn event_stream(channel: Channel, namespace: String) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    tokio::spawn(async move {
        let mut merged = futures::stream::select_all([
            changes::<v1::Namespace>(&channel, &namespace).boxed(),
            changes::<v1::Node>(&channel, &namespace).boxed(),
            changes::<v1::Asset>(&channel, &namespace).boxed(),
            changes::<v1::Workload>(&channel, &namespace).boxed(),
            changes::<v1::Instance>(&channel, &namespace).boxed(),
            changes::<v1::Event>(&channel, &namespace).boxed(),
        ]);
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            let frame = tokio::select! {
                () = tx.closed() => return,
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                message = merged.next() => match message {
                    Some(line) => Bytes::from(format!("data: {line}\n\n")),
                    None => return,
                },
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    rx
}
