//! The Route controller: writes each Route's status — its stable global address
//! ([`hypermesh_api::address::route_address`], the same pure function the proxies use)
//! and its endpoints, the Instances of its namespace its selector matches with their
//! node, address and readiness (Running, Ready, on a Ready node) — so `hmctl get
//! routes -o wide` and `describe` show where a Route goes. Proxies balance from their
//! own caches and do not wait for this status.
//!
//! A reconcile function on the runtime's controller driver: a change of an Instance
//! reconciles the Routes of its namespace, a change of a Node every Route; only Routes
//! whose status differs are written.

use std::sync::Arc;

use hypermesh_api::v1::{Instance, InstancePhase, Node, Route, RouteEndpoint, RouteStatus};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::controller::{self, Action, Change, Controller, Watched};
use hypermesh_runtime::reflector::{Store, key_of};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The controller's name in logs, metrics and health.
pub const NAME: &str = "routes";

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot update the status of route {route}: {source}")]
pub struct RouteError {
    /// The Route.
    pub route: String,
    /// The API error.
    #[source]
    pub source: Status,
}

impl controller::ReconcileError for RouteError {
    fn is_conflict(&self) -> bool {
        self.source.code() == Code::Aborted
    }
}

/// What reconciles share.
pub struct Ctx {
    routes: Api<Route>,
    instances: Store<Instance>,
    nodes: Store<Node>,
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

/// The Route controller talking to the apiserver over `channel`, with its context.
pub fn controller(channel: &Channel) -> (Controller<Route>, Arc<Ctx>) {
    let routes = Watched::all(Api::<Route>::new(channel.clone()));
    let instances = Watched::all(Api::<Instance>::new(channel.clone()));
    let nodes = Watched::all(Api::<Node>::new(channel.clone()));
    let ctx = Arc::new(Ctx {
        routes: Api::new(channel.clone()),
        instances: instances.store(),
        nodes: nodes.store(),
    });
    let (by_namespace, every) = (routes.store(), routes.store());
    let controller = Controller::new(NAME, routes)
        .watches(instances, move |change: Change<'_, Instance>| {
            let namespace = &change.object().meta().namespace;
            by_namespace
                .list()
                .iter()
                .filter(|r| r.meta().namespace == *namespace)
                .map(|r| key_of(r.as_ref()))
                .collect()
        })
        .watches(nodes, move |_: Change<'_, Node>| {
            every.list().iter().map(|r| key_of(r.as_ref())).collect()
        });
    (controller, ctx)
}

/// Reconciles one Route: writes its status when it differs from what it should be.
pub async fn reconcile(route: Arc<Route>, ctx: Arc<Ctx>) -> Result<Action, RouteError> {
    let desired = desired_status(&route, &ctx.instances.list(), &ctx.nodes);
    if route.status.as_ref() == Some(&desired) {
        return Ok(Action::await_change());
    }
    let mut updated = (*route).clone();
    updated.status = Some(desired);
    match ctx.routes.update_status(&updated).await {
        Ok(_) => Ok(Action::await_change()),
        // Deleted meanwhile: nothing to do.
        Err(s) if s.code() == Code::NotFound => Ok(Action::await_change()),
        Err(source) => Err(RouteError {
            route: route.meta().name.clone(),
            source,
        }),
    }
}
