//! Fixtures for the `scheduler_*` tests: an in-process apiserver with an in-process
//! scheduler, simulated nodes (Node objects with allocatable and conditions, plus
//! Asset objects such as GPUs) and Instances built field by field, and waits with
//! deadlines for an Instance to be bound or to say why it is pending.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{InProcessApiServer, wait_for};
use hypermesh_api::v1::{
    self, Asset, AssetType, Condition, Event, Instance, ListRequest, Namespace, Node, ObjectMeta,
    PrivacyLevel, TaintEffect,
};
use hypermesh_api::{Api, Resource};
use hypermesh_scheduler::{Config, Profile};
use tokio_util::sync::CancellationToken;

/// How long a test waits for one scheduling decision to show.
pub const DECISION_TIMEOUT: Duration = Duration::from_secs(15);

/// Node label each simulated node carries with its own name (a topology key).
pub const HOSTNAME_LABEL: &str = "hypermesh.io/hostname";

/// `[(k, v)]` as a label map.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An apiserver and a scheduler, both in this process, talking over real gRPC.
pub struct SimCluster {
    pub server: InProcessApiServer,
    shutdown: CancellationToken,
}

impl SimCluster {
    /// Starts both with the default (spread) profile.
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    /// Starts both with a scoring profile.
    pub async fn with_profile(profile: Profile) -> Self {
        Self::start_with(Config {
            profile,
            ..Config::default()
        })
        .await
    }

    /// Starts both with `config`.
    pub async fn start_with(config: Config) -> Self {
        let cluster = Self::without_scheduler().await;
        cluster.start_scheduler(config);
        cluster
    }

    /// Starts only the apiserver; [`SimCluster::start_scheduler`] adds the scheduler.
    pub async fn without_scheduler() -> Self {
        let server = InProcessApiServer::start().await.expect("apiserver");
        SimCluster {
            server,
            shutdown: CancellationToken::new(),
        }
    }

    /// Starts a scheduler with `config` (stopped when the cluster is dropped).
    pub fn start_scheduler(&self, config: Config) {
        tokio::spawn(hypermesh_scheduler::run(
            self.server.channel(),
            config,
            self.shutdown.clone(),
        ));
    }

    /// Binds `namespace/name` to `node` directly, as another scheduler would.
    pub async fn bind(&self, namespace: &str, name: &str, node: &str) {
        self.instances()
            .bind(v1::BindRequest {
                namespace: namespace.into(),
                name: name.into(),
                node_name: node.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("bind {namespace}/{name} to {node}: {e:?}"));
    }

    /// Nodes.
    pub fn nodes(&self) -> Api<Node> {
        self.server.api()
    }

    /// Instances.
    pub fn instances(&self) -> Api<Instance> {
        self.server.api()
    }

    /// Creates `node`.
    pub async fn add_node(&self, node: Node) {
        let name = node.meta().name.clone();
        self.nodes()
            .create(&node)
            .await
            .unwrap_or_else(|e| panic!("create node {name}: {e:?}"));
    }

    /// Creates `asset`.
    pub async fn add_asset(&self, asset: Asset) {
        let name = asset.meta().name.clone();
        self.server
            .api::<Asset>()
            .create(&asset)
            .await
            .unwrap_or_else(|e| panic!("create asset {name}: {e:?}"));
    }

    /// Creates Namespace `name` with `labels`.
    pub async fn add_namespace(&self, name: &str, pairs: &[(&str, &str)]) {
        self.server
            .api::<Namespace>()
            .create(&Namespace {
                metadata: Some(ObjectMeta {
                    name: name.into(),
                    labels: labels(pairs),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e:?}"));
    }

    /// Creates `instance`, returning it as stored.
    pub async fn add(&self, instance: Instance) -> Instance {
        let name = instance.meta().name.clone();
        self.instances()
            .create(&instance)
            .await
            .unwrap_or_else(|e| panic!("create instance {name}: {e:?}"))
    }

    /// Deletes Instance `namespace/name`.
    pub async fn delete(&self, namespace: &str, name: &str) {
        self.instances()
            .delete(v1::DeleteRequest {
                namespace: namespace.into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("delete instance {namespace}/{name}: {e:?}"));
    }

    /// The Instance as stored now.
    pub async fn get(&self, namespace: &str, name: &str) -> Instance {
        self.instances()
            .get(namespace, name)
            .await
            .unwrap_or_else(|e| panic!("get instance {namespace}/{name}: {e:?}"))
    }

    /// The node `namespace/name` is bound to now, if any.
    pub async fn node_of(&self, namespace: &str, name: &str) -> Option<String> {
        node_name(&self.get(namespace, name).await)
    }

    /// Waits until `namespace/name` is bound and returns its node.
    pub async fn wait_bound(&self, namespace: &str, name: &str) -> String {
        let api = self.instances();
        let bound = wait_for(DECISION_TIMEOUT, || async {
            node_name(&api.get(namespace, name).await.ok()?)
        })
        .await;
        match bound {
            Ok(node) => node,
            Err(_) => panic!(
                "instance {namespace}/{name} was not bound within {DECISION_TIMEOUT:?}; pending: {:?}",
                self.pending_message(namespace, name).await
            ),
        }
    }

    /// The message of the `Scheduled=False` condition, if the scheduler set one.
    pub async fn pending_message(&self, namespace: &str, name: &str) -> Option<String> {
        pending_message(&self.get(namespace, name).await)
    }

    /// Waits until the scheduler says `namespace/name` is pending with a message that
    /// satisfies `want`, and returns it. The Instance must still be unbound then.
    pub async fn wait_pending_with(
        &self,
        namespace: &str,
        name: &str,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let api = self.instances();
        let seen = wait_for(DECISION_TIMEOUT, || async {
            let inst = api.get(namespace, name).await.ok()?;
            pending_message(&inst).filter(|m| want(m))
        })
        .await;
        let Ok(message) = seen else {
            let inst = self.get(namespace, name).await;
            panic!(
                "instance {namespace}/{name} never showed the expected pending reason within \
                 {DECISION_TIMEOUT:?}; bound to {:?}, last reason {:?}",
                node_name(&inst),
                pending_message(&inst)
            );
        };
        let inst = self.get(namespace, name).await;
        assert_eq!(
            node_name(&inst),
            None,
            "{namespace}/{name} is bound although it was reported pending with {message:?}"
        );
        assert_eq!(
            inst.status.as_ref().map(|s| s.phase),
            Some(v1::InstancePhase::Pending as i32),
            "{namespace}/{name} should stay in phase Pending"
        );
        message
    }

    /// Waits until the pending message of `namespace/name` is exactly `expected`.
    pub async fn wait_pending(&self, namespace: &str, name: &str, expected: &str) {
        self.wait_pending_with(namespace, name, |m| m == expected)
            .await;
    }

    /// Events about Instance `namespace/name`.
    pub async fn events_of(&self, namespace: &str, name: &str) -> Vec<v1::EventSpec> {
        let (events, _) = self
            .server
            .api::<Event>()
            .list_all(ListRequest {
                namespace: namespace.into(),
                field_selector: format!("spec.involvedObject.name={name}"),
                ..Default::default()
            })
            .await
            .expect("list events");
        events.into_iter().filter_map(|e| e.spec).collect()
    }

    /// Waits for an Event with `reason` about Instance `namespace/name`.
    pub async fn wait_event(&self, namespace: &str, name: &str, reason: &str) -> v1::EventSpec {
        let found = wait_for(DECISION_TIMEOUT, || async {
            self.events_of(namespace, name)
                .await
                .into_iter()
                .find(|e| e.reason == reason)
        })
        .await;
        match found {
            Ok(event) => event,
            Err(_) => panic!(
                "no {reason} event about {namespace}/{name}; events: {:?}",
                self.events_of(namespace, name).await
            ),
        }
    }

    /// How many Instances of `namespace` are bound to each node.
    pub async fn placement(&self, namespace: &str) -> BTreeMap<String, usize> {
        let (all, _) = self
            .instances()
            .list_all(ListRequest {
                namespace: namespace.into(),
                ..Default::default()
            })
            .await
            .expect("list instances");
        let mut counts = BTreeMap::new();
        for inst in &all {
            if let Some(node) = node_name(inst) {
                *counts.entry(node).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The node an Instance is bound to.
pub fn node_name(inst: &Instance) -> Option<String> {
    inst.spec
        .as_ref()
        .map(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// The `Scheduled=False` message of an Instance.
pub fn pending_message(inst: &Instance) -> Option<String> {
    inst.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Scheduled" && c.status == "False")
        .map(|c| c.message.clone())
}

/// A simulated node, built field by field: Ready, labelled with its own name under
/// [`HOSTNAME_LABEL`], offering `cpu` and `memory`.
#[derive(Debug, Clone)]
pub struct NodeBuilder(Node);

/// Starts a simulated node.
pub fn node(name: &str, cpu: &str, memory: &str) -> NodeBuilder {
    NodeBuilder(Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            labels: labels(&[(HOSTNAME_LABEL, name)]),
            ..Default::default()
        }),
        spec: Some(v1::NodeSpec::default()),
        status: Some(v1::NodeStatus {
            allocatable: labels(&[("cpu", cpu), ("memory", memory)]),
            capacity: labels(&[("cpu", cpu), ("memory", memory)]),
            conditions: vec![Condition {
                r#type: "Ready".into(),
                status: "True".into(),
                reason: "Simulated".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    })
}

impl NodeBuilder {
    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.meta_mut().labels.insert(key.into(), value.into());
        self
    }

    /// Adds allocatable (and capacity) `resource`.
    pub fn allocatable(mut self, resource: &str, quantity: &str) -> Self {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.allocatable.insert(resource.into(), quantity.into());
        status.capacity.insert(resource.into(), quantity.into());
        self
    }

    /// Adds a taint.
    pub fn taint(mut self, key: &str, value: &str, effect: TaintEffect) -> Self {
        self.spec_mut().taints.push(v1::Taint {
            key: key.into(),
            value: value.into(),
            effect: effect as i32,
            time_added: None,
        });
        self
    }

    /// Cordons it.
    pub fn unschedulable(mut self) -> Self {
        self.spec_mut().unschedulable = true;
        self
    }

    /// Sets condition `kind` to `status` (replacing an earlier one of that type).
    pub fn condition(mut self, kind: &str, status: &str) -> Self {
        let s = self.0.status.get_or_insert_with(Default::default);
        s.conditions.retain(|c| c.r#type != kind);
        s.conditions.push(Condition {
            r#type: kind.into(),
            status: status.into(),
            reason: "Simulated".into(),
            ..Default::default()
        });
        self
    }

    /// The Node object.
    pub fn build(self) -> Node {
        self.0
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.metadata.get_or_insert_with(Default::default)
    }

    fn spec_mut(&mut self) -> &mut v1::NodeSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }
}

/// A GPU Asset of `node`: one GPU of `model` with `memory`, shareable or not.
pub fn gpu_asset(name: &str, node: &str, model: &str, memory: &str, shareable: bool) -> Asset {
    Asset {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(v1::AssetSpec {
            node_name: node.into(),
            r#type: AssetType::Gpu as i32,
            capacity: labels(&[("gpu", "1")]),
            attributes: labels(&[("model", model), ("memory", memory)]),
            sharing: Some(v1::AssetSharing {
                allowed: shareable,
                max_shares: if shareable { 2 } else { 0 },
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// A non-GPU Asset of `node` of `kind` at `privacy`.
pub fn asset(name: &str, node: &str, kind: AssetType, privacy: PrivacyLevel) -> Asset {
    Asset {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(v1::AssetSpec {
            node_name: node.into(),
            r#type: kind as i32,
            capacity: labels(&[("cores", "4")]),
            privacy: privacy as i32,
            ..Default::default()
        }),
        status: None,
    }
}

/// An Instance, built field by field: one container requesting `100m` cpu and `64Mi`
/// memory in namespace `default`.
#[derive(Debug, Clone)]
pub struct InstanceBuilder(Instance);

/// Starts an Instance `default/name`.
pub fn instance(name: &str) -> InstanceBuilder {
    InstanceBuilder(Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: "hypermesh.local/busybox:latest".into(),
                resources: Some(v1::ResourceRequirements {
                    cpu: "100m".into(),
                    memory: "64Mi".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    })
}

impl InstanceBuilder {
    /// Puts it in `namespace`.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.meta_mut().namespace = namespace.into();
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.meta_mut().labels.insert(key.into(), value.into());
        self
    }

    /// Requests `cpu`.
    pub fn cpu(mut self, cpu: &str) -> Self {
        self.resources_mut().cpu = cpu.into();
        self
    }

    /// Requests `memory`.
    pub fn memory(mut self, memory: &str) -> Self {
        self.resources_mut().memory = memory.into();
        self
    }

    /// Requests `gpu` (e.g. `1` or `500m`).
    pub fn gpu(mut self, gpu: &str) -> Self {
        self.resources_mut().gpu = gpu.into();
        self
    }

    /// Only GPUs whose model contains `model`.
    pub fn gpu_model(mut self, model: &str) -> Self {
        self.resources_mut().gpu_model = model.into();
        self
    }

    /// Only GPUs with at least `memory`.
    pub fn gpu_memory(mut self, memory: &str) -> Self {
        self.resources_mut().gpu_memory = memory.into();
        self
    }

    /// Adds a `nodeSelector` entry.
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.spec_mut()
            .node_selector
            .insert(key.into(), value.into());
        self
    }

    /// Pins it (by node selector) to node `name`.
    pub fn on_node(self, name: &str) -> Self {
        self.node_selector(HOSTNAME_LABEL, name)
    }

    /// Adds a required node affinity term `key operator values`.
    pub fn node_affinity(mut self, key: &str, operator: &str, values: &[&str]) -> Self {
        self.affinity_mut()
            .node_affinity
            .get_or_insert_with(Default::default)
            .required
            .push(v1::NodeSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            });
        self
    }

    /// Must run in the same `topology_key` domain as an Instance matching `selector`.
    pub fn instance_affinity(mut self, selector: &[(&str, &str)], topology_key: &str) -> Self {
        self.affinity_mut()
            .instance_affinity
            .push(v1::InstanceAffinityTerm {
                label_selector: labels(selector),
                topology_key: topology_key.into(),
            });
        self
    }

    /// Must not run in a `topology_key` domain with an Instance matching `selector`.
    pub fn instance_anti_affinity(mut self, selector: &[(&str, &str)], topology_key: &str) -> Self {
        self.affinity_mut()
            .instance_anti_affinity
            .push(v1::InstanceAffinityTerm {
                label_selector: labels(selector),
                topology_key: topology_key.into(),
            });
        self
    }

    /// Adds a toleration.
    pub fn toleration(
        mut self,
        key: &str,
        operator: &str,
        value: &str,
        effect: TaintEffect,
    ) -> Self {
        self.spec_mut().tolerations.push(v1::Toleration {
            key: key.into(),
            operator: operator.into(),
            value: value.into(),
            effect: effect as i32,
            toleration_seconds: 0,
        });
        self
    }

    /// Asks for at most `privacy` exposure.
    pub fn privacy(mut self, privacy: PrivacyLevel) -> Self {
        self.spec_mut().privacy = privacy as i32;
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.spec_mut().priority = priority;
        self
    }

    /// Makes `owner` its controller.
    pub fn controlled_by<K: Resource>(mut self, owner: &K) -> Self {
        self.meta_mut().owner_references.push(v1::OwnerReference {
            kind: K::KIND.into(),
            name: owner.meta().name.clone(),
            uid: owner.meta().uid.clone(),
            controller: true,
        });
        self
    }

    /// The Instance object.
    pub fn build(self) -> Instance {
        self.0
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.metadata.get_or_insert_with(Default::default)
    }

    fn spec_mut(&mut self) -> &mut v1::InstanceSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }

    fn resources_mut(&mut self) -> &mut v1::ResourceRequirements {
        self.spec_mut().containers[0]
            .resources
            .get_or_insert_with(Default::default)
    }

    fn affinity_mut(&mut self) -> &mut v1::Affinity {
        self.spec_mut()
            .affinity
            .get_or_insert_with(Default::default)
    }
}
