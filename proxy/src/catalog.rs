//! What the proxy knows about the cluster, learned by watching the apiserver with the
//! runtime crate's watcher and reflector: Instances (global address, node, readiness),
//! Routes (selector, ports, their address from [`hypermesh_api::address::route_address`])
//! and Nodes (readiness, the QUIC endpoint and relay their proxies publish).
//!
//! Lookups go through an [`Index`] rebuilt lazily after the caches changed, so a flow
//! pays a hash lookup, not a scan.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use hypermesh_api::address::{GlobalName, NameKind, route_address};
use hypermesh_api::v1::{Instance, InstancePhase, Node, Protocol as ApiProtocol, Route};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::reflector::{self, Store};
use hypermesh_runtime::watcher;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::header::Protocol;

/// Node annotation: the `HOST:PORT` a node's proxy accepts QUIC on.
pub const ENDPOINT_ANNOTATION: &str = "proxy.hypermesh.io/endpoint";
/// Node annotation: the node whose proxy relays traffic for this (NAT'd) node.
pub const RELAY_ANNOTATION: &str = "proxy.hypermesh.io/relay";
/// Node annotation: the paths this node's proxy uses to its peers (`peer=direct rtt=…`).
pub const PATHS_ANNOTATION: &str = "proxy.hypermesh.io/paths";

/// One Instance as a place a flow can go.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Namespace of the Instance.
    pub namespace: String,
    /// Name of the Instance.
    pub name: String,
    /// Its uid (containers are labelled with it).
    pub uid: String,
    /// The node it runs on.
    pub node: String,
    /// Its global address.
    pub address: Ipv6Addr,
    /// Running, Ready, and on a Ready node.
    pub ready: bool,
}

/// A Route as the proxy balances it.
#[derive(Debug)]
pub struct RouteTarget {
    /// Namespace of the Route.
    pub namespace: String,
    /// Name of the Route.
    pub name: String,
    /// `(port, target port, protocol)`; empty: every port passes unchanged.
    pub ports: Vec<(u16, u16, Protocol)>,
    /// The Instances it selects, ready or not.
    pub endpoints: Vec<Endpoint>,
    next: AtomicUsize,
}

impl RouteTarget {
    /// The target port for `port`/`protocol`, `None` when the Route does not expose it.
    pub fn target_port(&self, port: u16, protocol: Protocol) -> Option<u16> {
        if self.ports.is_empty() {
            return Some(port);
        }
        self.ports
            .iter()
            .find(|(p, _, proto)| *p == port && *proto == protocol)
            .map(|(_, t, _)| *t)
    }

    /// The ready endpoints, rotated by one for each call (round robin); the caller tries
    /// them in this order.
    pub fn rotation(&self) -> Vec<Endpoint> {
        let ready: Vec<Endpoint> = self.endpoints.iter().filter(|e| e.ready).cloned().collect();
        if ready.is_empty() {
            return ready;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        ready[start..]
            .iter()
            .chain(&ready[..start])
            .cloned()
            .collect()
    }
}

/// What a global address names.
#[derive(Debug, Clone)]
pub enum Target {
    /// One Instance.
    Instance(Endpoint),
    /// A Route over Instances.
    Route(Arc<RouteTarget>),
}

/// What the proxy knows about a node's proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerInfo {
    /// Where its proxy accepts QUIC, if it published that.
    pub endpoint: Option<SocketAddr>,
    /// The node relaying for it, if it is behind NAT.
    pub relay: Option<String>,
    /// Ready condition is True.
    pub ready: bool,
}

/// Lookup tables built from the caches.
#[derive(Debug, Default)]
pub struct Index {
    by_address: HashMap<Ipv6Addr, Target>,
    by_name: HashMap<(NameKind, String, String), Ipv6Addr>,
    nodes: HashMap<String, PeerInfo>,
}

impl Index {
    /// What `address` names.
    pub fn target(&self, address: &Ipv6Addr) -> Option<&Target> {
        self.by_address.get(address)
    }

    /// The address of a global name.
    pub fn resolve(&self, name: &GlobalName) -> Option<Ipv6Addr> {
        self.by_name
            .get(&(name.kind, name.namespace.clone(), name.name.clone()))
            .copied()
    }

    /// What is known about node `name`'s proxy.
    pub fn peer(&self, name: &str) -> Option<&PeerInfo> {
        self.nodes.get(name)
    }

    /// Every node that publishes a reachable proxy endpoint (no relay of its own).
    pub fn reachable_peers(&self) -> Vec<(String, SocketAddr)> {
        let mut out: Vec<_> = self
            .nodes
            .iter()
            .filter(|(_, p)| p.ready && p.relay.is_none())
            .filter_map(|(n, p)| Some((n.clone(), p.endpoint?)))
            .collect();
        out.sort();
        out
    }
}

fn condition_true(conditions: &[hypermesh_api::v1::Condition], kind: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.r#type == kind && c.status == "True")
}

fn protocol_of(p: i32) -> Protocol {
    if p == ApiProtocol::Udp as i32 {
        Protocol::Udp
    } else {
        Protocol::Tcp
    }
}

fn build(instances: &[Arc<Instance>], routes: &[Arc<Route>], nodes: &[Arc<Node>]) -> Index {
    let mut index = Index::default();
    for node in nodes {
        let meta = node.meta();
        let info = PeerInfo {
            endpoint: meta
                .annotations
                .get(ENDPOINT_ANNOTATION)
                .and_then(|e| e.parse().ok()),
            relay: meta
                .annotations
                .get(RELAY_ANNOTATION)
                .filter(|r| !r.is_empty())
                .cloned(),
            ready: node
                .status
                .as_ref()
                .is_some_and(|s| condition_true(&s.conditions, "Ready")),
        };
        index.nodes.insert(meta.name.clone(), info);
    }
    let mut endpoints: Vec<(Endpoint, &Instance)> = Vec::new();
    for instance in instances {
        let meta = instance.meta();
        let Some(status) = instance.status.as_ref() else {
            continue;
        };
        let Ok(address) = status.address.parse::<Ipv6Addr>() else {
            continue;
        };
        let node = instance
            .spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        if node.is_empty() {
            continue;
        }
        let node_ready = index.nodes.get(&node).is_some_and(|n| n.ready);
        let ready = node_ready
            && meta.deletion_timestamp.is_none()
            && status.phase == InstancePhase::Running as i32
            && condition_true(&status.conditions, "Ready");
        let endpoint = Endpoint {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            node,
            address,
            ready,
        };
        index.by_name.insert(
            (
                NameKind::Instance,
                meta.namespace.clone(),
                meta.name.clone(),
            ),
            address,
        );
        index
            .by_address
            .insert(address, Target::Instance(endpoint.clone()));
        endpoints.push((endpoint, instance));
    }
    for route in routes {
        let meta = route.meta();
        let spec = route.spec.clone().unwrap_or_default();
        let address = route_address(&meta.namespace, &meta.name);
        let mut selected: Vec<Endpoint> = if spec.selector.is_empty() {
            Vec::new()
        } else {
            endpoints
                .iter()
                .filter(|(e, i)| {
                    e.namespace == meta.namespace
                        && spec
                            .selector
                            .iter()
                            .all(|(k, v)| i.meta().labels.get(k) == Some(v))
                })
                .map(|(e, _)| e.clone())
                .collect()
        };
        selected.sort_by(|a, b| a.name.cmp(&b.name));
        let ports = spec
            .ports
            .iter()
            .filter_map(|p| {
                let port = u16::try_from(p.port).ok().filter(|p| *p > 0)?;
                let target = u16::try_from(p.target_port)
                    .ok()
                    .filter(|p| *p > 0)
                    .unwrap_or(port);
                Some((port, target, protocol_of(p.protocol)))
            })
            .collect();
        index.by_name.insert(
            (NameKind::Route, meta.namespace.clone(), meta.name.clone()),
            address,
        );
        index.by_address.insert(
            address,
            Target::Route(Arc::new(RouteTarget {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                ports,
                endpoints: selected,
                next: AtomicUsize::new(0),
            })),
        );
    }
    index
}

/// The caches and the index over them.
#[derive(Clone)]
pub struct Catalog {
    instances: Store<Instance>,
    routes: Store<Route>,
    nodes: Store<Node>,
    index: Arc<RwLock<Option<Arc<Index>>>>,
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("instances", &self.instances.len())
            .field("routes", &self.routes.len())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Catalog {
    /// Starts watching Instances, Routes and Nodes over `channel` until `shutdown`.
    pub fn watch(channel: Channel, shutdown: CancellationToken) -> Catalog {
        let (iw, instances) = reflector::store::<Instance>();
        let (rw, routes) = reflector::store::<Route>();
        let (nw, nodes) = reflector::store::<Node>();
        let catalog = Catalog {
            instances,
            routes,
            nodes,
            index: Arc::new(RwLock::new(None)),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        catalog.drive(Api::<Instance>::new(channel.clone()), iw, shutdown.clone());
        catalog.drive(Api::<Route>::new(channel.clone()), rw, shutdown.clone());
        catalog.drive(Api::<Node>::new(channel), nw, shutdown);
        catalog
    }

    fn drive<K: Resource>(
        &self,
        api: Api<K>,
        writer: reflector::Writer<K>,
        shutdown: CancellationToken,
    ) {
        let catalog = self.clone();
        tokio::spawn(async move {
            let events = reflector::reflector(writer, watcher::watcher(api, Default::default()));
            let mut events = std::pin::pin!(events);
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    e = events.next() => e,
                };
                match event {
                    None => return,
                    Some(Ok(_)) => catalog.invalidate(),
                    Some(Err(e)) => tracing::debug!(kind = K::KIND, error = %e, "watch"),
                }
            }
        });
    }

    fn invalidate(&self) {
        if let Ok(mut index) = self.index.write() {
            *index = None;
        }
        self.changed.notify_waiters();
    }

    /// Waits until the first listing of every kind arrived.
    pub async fn wait_ready(&self) {
        self.instances.wait_ready().await;
        self.routes.wait_ready().await;
        self.nodes.wait_ready().await;
    }

    /// Resolves once something changed after this call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The current index (rebuilt when the caches changed since the last call).
    pub fn index(&self) -> Arc<Index> {
        if let Some(index) = self.index.read().ok().and_then(|i| i.clone()) {
            return index;
        }
        let index = Arc::new(build(
            &self.instances.list(),
            &self.routes.list(),
            &self.nodes.list(),
        ));
        if let Ok(mut slot) = self.index.write() {
            *slot = Some(index.clone());
        }
        index
    }

    /// The cached Instance `namespace/name`.
    pub fn instance(&self, namespace: &str, name: &str) -> Option<Arc<Instance>> {
        self.instances.get(namespace, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::{
        Condition, InstanceSpec, InstanceStatus, NodeStatus, ObjectMeta, RoutePort, RouteSpec,
    };

    fn node(name: &str, ready: bool) -> Arc<Node> {
        Arc::new(Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                annotations: [(ENDPOINT_ANNOTATION.to_string(), "198.51.100.2:7446".into())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: vec![Condition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn instance(name: &str, node: &str, addr: &str, ready: bool) -> Arc<Instance> {
        Arc::new(Instance {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                labels: [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            spec: Some(InstanceSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(InstanceStatus {
                address: addr.into(),
                phase: InstancePhase::Running as i32,
                conditions: vec![Condition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
    }

    #[test]
    fn routes_select_ready_instances_on_ready_nodes_round_robin() {
        let nodes = [node("b", true), node("c", true), node("d", false)];
        let instances = [
            instance("w1", "b", "fd48:4d00::1", true),
            instance("w2", "c", "fd48:4d00::2", true),
            instance("w3", "c", "fd48:4d00::3", false),
            instance("w4", "d", "fd48:4d00::4", true),
        ];
        let route = Arc::new(Route {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(RouteSpec {
                selector: [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
                ports: vec![RoutePort {
                    port: 80,
                    target_port: 8080,
                    protocol: ApiProtocol::Tcp as i32,
                    ..Default::default()
                }],
            }),
            status: None,
        });
        let index = build(&instances, &[route], &nodes);
        let addr = route_address("default", "web");
        let Some(Target::Route(r)) = index.target(&addr) else {
            panic!("route indexed by its address");
        };
        assert_eq!(r.endpoints.len(), 4);
        assert_eq!(r.target_port(80, Protocol::Tcp), Some(8080));
        assert_eq!(r.target_port(81, Protocol::Tcp), None);
        let first: Vec<String> = r.rotation().into_iter().map(|e| e.name).collect();
        let second: Vec<String> = r.rotation().into_iter().map(|e| e.name).collect();
        assert_eq!(first, ["w1", "w2"]);
        assert_eq!(second, ["w2", "w1"]);
        let name =
            hypermesh_api::address::parse_global_name("web.default.route.hypermesh").expect("name");
        assert_eq!(index.resolve(&name), Some(addr));
        assert_eq!(
            index.peer("b").and_then(|p| p.endpoint),
            Some("198.51.100.2:7446".parse().expect("addr"))
        );
    }
}
