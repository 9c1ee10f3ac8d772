//! Objects the scheduler tests build field by field: simulated Nodes (Ready, labelled,
//! with allocatable resources, taints and conditions), Assets such as GPUs, and
//! Instances with requests, selectors, affinities and tolerations.

use hypermesh_api::Resource;
use hypermesh_api::v1::{
    self, Asset, AssetType, Condition, Instance, Node, ObjectMeta, PrivacyLevel, TaintEffect,
};

use super::{HOSTNAME_LABEL, labels};

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
