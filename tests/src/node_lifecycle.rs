//! Shared by the `node_lifecycle_*` tests: an in-process apiserver with the
//! controllers (short node-lifecycle graces) and the scheduler beside it, and
//! simulated nodes — Node objects with allocatable resources and `Ready=True`, whose
//! heartbeat Lease a test task renews until the test stops it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{InProcessApiServer, wait_for};
use hypermesh_api::v1::{
    self, Condition, Event, Instance, Lease, LeaseSpec, ListRequest, Node, ObjectMeta, Workload,
};
use hypermesh_api::{Api, Resource};
use hypermesh_controllers::node_lifecycle::{
    NODE_LEASE_NAMESPACE, NODE_LEASE_PREFIX, NodeLifecycleConfig, UNREACHABLE_TAINT,
};
use tokio_util::sync::CancellationToken;

/// How long a test waits for the cluster to converge.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The heartbeat Leases' `lease_duration_seconds`.
pub const LEASE_SECONDS: i32 = 2;
/// How often the simulated nodes renew their Lease.
pub const RENEW_EVERY: Duration = Duration::from_millis(250);
/// The node-lifecycle eviction grace the tests run with.
pub const EVICTION_GRACE: Duration = Duration::from_secs(1);
/// The startup grace for nodes without a Lease the tests run with.
pub const STARTUP_GRACE: Duration = Duration::from_secs(3);

/// An in-process apiserver, the controllers and the scheduler, stopped when dropped.
pub struct Cluster {
    pub server: InProcessApiServer,
    shutdown: CancellationToken,
}

impl Cluster {
    /// Starts the apiserver, the controllers (short graces) and the scheduler.
    pub async fn start() -> Self {
        Self::start_with(EVICTION_GRACE).await
    }

    /// [`Cluster::start`] with another eviction grace.
    pub async fn start_with(eviction_grace: Duration) -> Self {
        let server = InProcessApiServer::start().await.expect("apiserver");
        let shutdown = CancellationToken::new();
        let config = hypermesh_controllers::Config {
            identity: "test-controllers".into(),
            ..Default::default()
        };
        let node_lifecycle = NodeLifecycleConfig {
            startup_grace: STARTUP_GRACE,
            eviction_grace,
            ..Default::default()
        };
        tokio::spawn(hypermesh_controllers::run_with_node_lifecycle(
            server.channel(),
            config,
            node_lifecycle,
            shutdown.clone(),
        ));
        tokio::spawn(hypermesh_scheduler::run(
            server.channel(),
            hypermesh_scheduler::Config::default(),
            shutdown.clone(),
        ));
        Cluster { server, shutdown }
    }

    pub fn nodes(&self) -> Api<Node> {
        self.server.api()
    }

    pub fn instances(&self) -> Api<Instance> {
        self.server.api()
    }

    pub fn workloads(&self) -> Api<Workload> {
        self.server.api()
    }

    /// Registers node `name` (4 CPUs, 8Gi as proven Assets, `Ready=True`) without a
    /// Lease.
    pub async fn add_node(&self, name: &str) {
        crate::proofs::create_offering_node(&self.nodes(), &self.server.api(), node(name))
            .await
            .unwrap_or_else(|e| panic!("create node {name}: {e:?}"));
    }

    /// Registers node `name` and starts renewing its Lease.
    pub async fn add_live_node(&self, name: &str) -> Heartbeats {
        self.add_node(name).await;
        Heartbeats::start(self.server.api(), name).await
    }

    /// The Node as stored now.
    pub async fn node(&self, name: &str) -> Node {
        self.nodes().get("", name).await.expect("get node")
    }

    /// Waits until node `name` satisfies `check`.
    pub async fn wait_node(&self, name: &str, what: &str, check: impl Fn(&Node) -> bool) -> Node {
        let nodes = self.nodes();
        wait_for(TIMEOUT, || async {
            nodes.get("", name).await.ok().filter(|n| check(n))
        })
        .await
        .unwrap_or_else(|e| panic!("node {name} {what}: {e}"))
    }

    /// The Instances in `default` whose name starts with `prefix`, with their nodes.
    pub async fn placement(&self, prefix: &str) -> BTreeMap<String, String> {
        let (items, _) = self
            .instances()
            .list_all(ListRequest {
                namespace: "default".into(),
                ..Default::default()
            })
            .await
            .expect("list instances");
        items
            .iter()
            .filter(|i| i.meta().name.starts_with(prefix) && i.meta().deletion_timestamp.is_none())
            .map(|i| {
                let node = i
                    .spec
                    .as_ref()
                    .map(|s| s.node_name.clone())
                    .unwrap_or_default();
                (i.meta().name.clone(), node)
            })
            .collect()
    }

    /// Waits until the Instances starting with `prefix` satisfy `check`.
    pub async fn wait_placement(
        &self,
        prefix: &str,
        what: &str,
        check: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        let placed = wait_for(TIMEOUT, || async {
            let p = self.placement(prefix).await;
            check(&p).then_some(p)
        })
        .await;
        match placed {
            Ok(p) => p,
            Err(e) => panic!("{what}: {e}; now {:?}", self.placement(prefix).await),
        }
    }

    /// Events about `kind` `name` (Events of cluster-scoped objects live in `default`).
    pub async fn events_of(&self, kind: &str, namespace: &str, name: &str) -> Vec<v1::EventSpec> {
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let (items, _) = self
            .server
            .api::<Event>()
            .list_all(ListRequest {
                namespace: ns.into(),
                ..Default::default()
            })
            .await
            .expect("list events");
        items
            .into_iter()
            .filter_map(|e| e.spec)
            .filter(|s| {
                s.involved_object
                    .as_ref()
                    .is_some_and(|o| o.kind == kind && o.name == name)
            })
            .collect()
    }

    /// Waits for an Event with `reason` about `kind` `name`.
    pub async fn wait_event(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        reason: &str,
    ) -> v1::EventSpec {
        wait_for(TIMEOUT, || async {
            self.events_of(kind, namespace, name)
                .await
                .into_iter()
                .find(|e| e.reason == reason)
        })
        .await
        .unwrap_or_else(|e| panic!("event {reason} about {kind} {name}: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A test task renewing node `name`'s Lease every [`RENEW_EVERY`].
pub struct Heartbeats {
    stop: CancellationToken,
}

impl Heartbeats {
    /// Creates (or takes over) the Lease `node-<name>` and renews it until stopped.
    pub async fn start(leases: Api<Lease>, node: &str) -> Self {
        let name = format!("{NODE_LEASE_PREFIX}{node}");
        let lease = Lease {
            metadata: Some(ObjectMeta {
                name: name.clone(),
                namespace: NODE_LEASE_NAMESPACE.into(),
                ..Default::default()
            }),
            spec: Some(LeaseSpec {
                holder_identity: node.into(),
                lease_duration_seconds: LEASE_SECONDS,
                acquire_time: Some(hypermesh_api::time::now()),
                renew_time: Some(hypermesh_api::time::now()),
                lease_transitions: 0,
            }),
            status: None,
        };
        let mut current = match leases.create(&lease).await {
            Ok(created) => created,
            Err(_) => leases
                .get(NODE_LEASE_NAMESPACE, &name)
                .await
                .expect("get lease"),
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                }
                let mut next = current.clone();
                if let Some(spec) = next.spec.as_mut() {
                    spec.renew_time = Some(hypermesh_api::time::now());
                }
                match leases.update(&next).await {
                    Ok(written) => current = written,
                    Err(_) => {
                        if let Ok(fresh) = leases.get(NODE_LEASE_NAMESPACE, &name).await {
                            current = fresh;
                        }
                    }
                }
            }
        });
        Heartbeats { stop }
    }

    /// Stops renewing (the simulated node "dies").
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Node `name`: 4 CPUs, 8Gi, `Ready=True`, labelled with its hostname.
pub fn node(name: &str) -> Node {
    let resources: BTreeMap<String, String> = [("cpu", "4"), ("memory", "8Gi")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: [("hypermesh.io/hostname".to_string(), name.to_string())].into(),
            ..Default::default()
        }),
        spec: Some(v1::NodeSpec::default()),
        status: Some(v1::NodeStatus {
            capacity: resources.clone(),
            allocatable: resources,
            conditions: vec![Condition {
                r#type: "Ready".into(),
                status: "True".into(),
                reason: "Simulated".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// Workload `default/name` of `replicas` small Instances (100m cpu, 64Mi) with
/// `tolerations`: [`crate::workload::workload`] with requests the simulated nodes fit.
pub fn workload(name: &str, replicas: i32, tolerations: Vec<v1::Toleration>) -> Workload {
    let mut w = crate::workload::workload(name, replicas, "registry.local/web:1");
    let template = w
        .spec
        .as_mut()
        .and_then(|s| s.template.as_mut())
        .expect("the workload fixture has a template");
    template.tolerations = tolerations;
    template.containers[0].resources = Some(v1::ResourceRequirements {
        cpu: "100m".into(),
        memory: "64Mi".into(),
        ..Default::default()
    });
    w
}

/// Tolerates the unreachable taint for `seconds` (0: forever).
pub fn tolerate_unreachable(seconds: i64) -> v1::Toleration {
    v1::Toleration {
        key: UNREACHABLE_TAINT.into(),
        operator: "Exists".into(),
        value: String::new(),
        effect: v1::TaintEffect::NoExecute as i32,
        toleration_seconds: seconds,
    }
}

/// The node's `Ready` condition.
pub fn ready(node: &Node) -> Option<&Condition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
}

/// Whether the node carries the unreachable NoExecute taint.
pub fn tainted(node: &Node) -> bool {
    hypermesh_controllers::node_lifecycle::unreachable_taint(node).is_some()
}
