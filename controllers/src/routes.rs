//! The Route controller: writes each Route's status — its stable global address
//! ([`hypermesh_api::address::route_address`], the same pure function the proxies use)
//! and its endpoints, the Instances of its namespace its selector matches with their
//! node, address and readiness (Running, Ready, on a Ready node) — so `hmctl get
//! routes -o wide` and `describe` show where a Route goes. Proxies balance from their
//! own caches and do not wait for this status.
//!
//! Changes to Routes, Instances and Nodes arrive through the runtime crate's watchers;
//! a burst of them is folded into one pass over all Routes, and only Routes whose
//! status differs are written.

use std::time::Duration;

use futures::StreamExt;
use hypermesh_api::v1::{Instance, InstancePhase, Node, Route, RouteEndpoint, RouteStatus};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::reflector::{self, Store};
use hypermesh_runtime::watcher;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long changes are gathered before a pass.
const SETTLE: Duration = Duration::from_millis(200);

/// Keeps Route statuses current.
pub struct RouteController {
    channel: Channel,
}

fn ready(conditions: &[hypermesh_api::v1::Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.r#type == "Ready" && c.status == "True")
}

/// The status `route` should have, given the cached Instances and Nodes.
pub fn desired_status(
    route: &Route,
    instances: &[std::sync::Arc<Instance>],
    nodes: &Store<Node>,
) -> RouteStatus {
    let meta = route.meta();
    let selector = route
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let mut endpoints: Vec<RouteEndpoint> = if selector.is_empty() {
        Vec::new()
    } else {
        instances
            .iter()
            .filter(|i| i.meta().namespace == meta.namespace)
            .filter(|i| {
                selector
                    .iter()
                    .all(|(k, v)| i.meta().labels.get(k) == Some(v))
            })
            .filter_map(|i| {
                let node_name = i.spec.as_ref()?.node_name.clone();
                let status = i.status.as_ref()?;
                if node_name.is_empty() || status.address.is_empty() {
                    return None;
                }
                let node_ready = nodes
                    .get("", &node_name)
                    .and_then(|n| n.status.clone())
                    .is_some_and(|s| ready(&s.conditions));
                Some(RouteEndpoint {
                    instance_name: i.meta().name.clone(),
                    node_name,
                    address: status.address.clone(),
                    ready: node_ready
                        && i.meta().deletion_timestamp.is_none()
                        && status.phase == InstancePhase::Running as i32
                        && ready(&status.conditions),
                })
            })
            .collect()
    };
    endpoints.sort_by(|a, b| a.instance_name.cmp(&b.instance_name));
    RouteStatus {
        address: hypermesh_api::address::route_address(&meta.namespace, &meta.name).to_string(),
        endpoints,
    }
}

impl RouteController {
    /// A controller talking to the API over `channel`.
    pub fn new(channel: Channel) -> Self {
        RouteController { channel }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let changed = std::sync::Arc::new(tokio::sync::Notify::new());
        let (rw, routes) = reflector::store::<Route>();
        let (iw, instances) = reflector::store::<Instance>();
        let (nw, nodes) = reflector::store::<Node>();
        drive(
            Api::<Route>::new(self.channel.clone()),
            rw,
            changed.clone(),
            shutdown.clone(),
        );
        drive(
            Api::<Instance>::new(self.channel.clone()),
            iw,
            changed.clone(),
            shutdown.clone(),
        );
        drive(
            Api::<Node>::new(self.channel.clone()),
            nw,
            changed.clone(),
            shutdown.clone(),
        );
        let api = Api::<Route>::new(self.channel);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { routes.wait_ready().await; instances.wait_ready().await; nodes.wait_ready().await; } => {}
        }
        loop {
            let all = instances.list();
            for route in routes.list() {
                let desired = desired_status(&route, &all, &nodes);
                if route.status.as_ref() == Some(&desired) {
                    continue;
                }
                let mut updated = (*route).clone();
                updated.status = Some(desired);
                if let Err(e) = api.update_status(&updated).await {
                    // A conflict or a deleted Route: the watch brings the new state and
                    // the next pass retries.
                    tracing::debug!(route = %route.meta().name, error = %e, "route status");
                    changed.notify_one();
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
        }
    }
}

fn drive<K: Resource>(
    api: Api<K>,
    writer: reflector::Writer<K>,
    changed: std::sync::Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let events = reflector::reflector(writer, watcher::watcher(api, Default::default()));
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.next() => match e {
                    None => return,
                    Some(Ok(_)) => changed.notify_one(),
                    Some(Err(_)) => {}
                },
            }
        }
    });
}
