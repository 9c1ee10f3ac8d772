//! The scheduler's picture of the cluster: every node with what it offers and what is
//! bound to it (including bindings assumed but not yet confirmed by the apiserver),
//! GPU devices and their use, namespaces' network labels and gang policies.
//!
//! What a node offers comes from its admitted Assets (each proved at admission): the
//! sum of their capacities by type (CPU → cpu, MEMORY → memory, STORAGE → storage,
//! GPU → gpu, CONTAINER → instances). The Node's own, unproved status figures only
//! lower that (reservations, usage): allocatable = min(Assets, status).

use std::collections::{BTreeMap, HashMap, HashSet};

use hypermesh_api::Resource;
use hypermesh_api::quantity::Quantity;
use hypermesh_api::v1::{
    self, Asset, AssetType, Instance, Namespace, Node, PrivacyLevel, Taint, Workload,
};

use crate::resources::Resources;

/// `(namespace, name)` of an Instance.
pub type InstanceKey = (String, String);

/// Node label naming the namespace that owns a node's PRIVATE assets.
pub const OWNER_NAMESPACE_LABEL: &str = "hypermesh.io/owner-namespace";
/// Node and Namespace label naming a private network (for PRIVATE_NETWORK and P2P).
pub const NETWORK_LABEL: &str = "hypermesh.io/network";
/// Namespace label that opts a namespace into P2P-shared assets.
pub const P2P_LABEL: &str = "hypermesh.io/p2p";

/// One GPU of a node, from its GPU Asset.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDevice {
    /// Asset name.
    pub asset: String,
    /// e.g. `NVIDIA A100-SXM4-40GB`.
    pub model: String,
    /// Bytes of GPU memory.
    pub memory: u64,
    /// Whether Instances may share it (fractional requests).
    pub shareable: bool,
    /// The asset's privacy level.
    pub privacy: i32,
    /// Thousandths of it given to Instances.
    pub used_milli: u64,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Cordoned.
    pub unschedulable: bool,
    /// Ready=True.
    pub ready: bool,
    /// RuntimeReady=False: the agent cannot reach its container runtime, so it could not
    /// start what is bound there. (A node that reports no RuntimeReady is not held back.)
    pub runtime_down: bool,
    /// Suspect=True (failed proofs).
    pub suspect: bool,
    /// What it offers: its Assets' capacity, lowered by what its status reports.
    pub allocatable: Resources,
    /// What its status reports as allocatable (unproved; only ever lowers the offer).
    pub reported: Resources,
    /// What bound Instances request.
    pub requested: Resources,
    /// Its GPUs.
    pub gpus: Vec<GpuDevice>,
    /// Most restrictive privacy level of its non-GPU assets (PUBLIC_NETWORK when it has none).
    pub privacy: i32,
    /// Instances bound (or assumed bound) here.
    pub instances: HashSet<InstanceKey>,
}

impl NodeState {
    /// What is left.
    pub fn free(&self) -> Resources {
        self.allocatable - self.requested
    }
}

/// An Instance bound (or assumed bound) to a node.
#[derive(Debug, Clone)]
pub struct BoundInstance {
    /// Node name.
    pub node: String,
    /// What it requests.
    pub requests: Resources,
    /// GPU assets it holds, with thousandths of a GPU from each.
    pub gpus: Vec<(String, u64)>,
    /// Its labels (for affinity).
    pub labels: BTreeMap<String, String>,
    /// Its priority (for preemption).
    pub priority: i32,
    /// Creation time in seconds (newest are preempted first among equals).
    pub created: i64,
    /// True until the apiserver confirms the binding.
    pub assumed: bool,
    /// The Workload controlling it, if any (for gangs).
    pub owner: Option<String>,
}

/// The whole picture.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Nodes in a stable order, for sampling from a rotating offset without lookups.
    nodes: Vec<NodeState>,
    /// Position of each node in `nodes`.
    node_index: HashMap<String, usize>,
    assets_by_node: HashMap<String, BTreeMap<String, Asset>>,
    bound: HashMap<InstanceKey, BoundInstance>,
    gpu_used: HashMap<String, u64>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    gangs: HashMap<(String, String), i32>,
    /// What is bound to each node name, kept even while the node itself is unknown.
    usage: HashMap<String, (Resources, HashSet<InstanceKey>)>,
    /// Bumped whenever capacity may have appeared (a node changed, an Instance left).
    pub generation: u64,
}

fn condition_true(conditions: &[v1::Condition], kind: &str) -> bool {
    condition_is(conditions, kind, "True")
}

fn condition_is(conditions: &[v1::Condition], kind: &str, status: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.r#type == kind && c.status == status)
}

fn quantity_bytes(q: Option<&String>) -> u64 {
    q.and_then(|q| q.parse::<Quantity>().ok())
        .map_or(0, |q| u64::try_from(q.units_ceil()).unwrap_or(u64::MAX))
}

/// The sum of the capacities of `assets`, by type.
pub fn offered_by<'a>(assets: impl Iterator<Item = &'a Asset>) -> Resources {
    let mut total = Resources::default();
    for spec in assets.filter_map(|a| a.spec.as_ref()) {
        let get = |k: &str| spec.capacity.get(k).map(String::as_str).unwrap_or("");
        let mut one = Resources::default();
        match AssetType::try_from(spec.r#type) {
            Ok(AssetType::Cpu) => one.cpu_milli = crate::resources::millis(get("cpu")),
            Ok(AssetType::Memory) => one.memory = crate::resources::units(get("memory")),
            Ok(AssetType::Storage) => one.storage = crate::resources::units(get("storage")),
            Ok(AssetType::Gpu) => one.gpu_milli = crate::resources::millis(get("gpu")),
            Ok(AssetType::Container) => one.instances = crate::resources::units(get("instances")),
            _ => {}
        }
        total += one;
    }
    total
}

impl GpuDevice {
    /// Whether a fractional request of `milli` thousandths fits on this shareable GPU.
    pub fn has_room_for(&self, milli: u64) -> bool {
        self.shareable && 1000 - self.used_milli.min(1000) >= milli
    }
}

impl ClusterState {
    /// Adds or replaces a node.
    pub fn upsert_node(&mut self, node: &Node) {
        let name = node.meta().name.clone();
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        if !self.node_index.contains_key(&name) {
            // A node seen again (re-registered, or listed after its Instances) starts
            // with what is already bound to it.
            let (requested, instances) = self.usage.get(&name).cloned().unwrap_or_default();
            self.node_index.insert(name.clone(), self.nodes.len());
            self.nodes.push(NodeState {
                name: name.clone(),
                requested,
                instances,
                ..Default::default()
            });
        }
        let Some(entry) = self.node_mut(&name) else {
            return;
        };
        entry.labels = node.meta().labels.clone();
        entry.taints = spec.taints;
        entry.unschedulable = spec.unschedulable;
        entry.ready = condition_true(&status.conditions, "Ready");
        entry.runtime_down = condition_is(&status.conditions, "RuntimeReady", "False");
        entry.suspect = condition_true(&status.conditions, "Suspect");
        entry.reported = Resources::from_quantities(if status.allocatable.is_empty() {
            &status.capacity
        } else {
            &status.allocatable
        });
        self.refresh_assets(&name);
        self.generation += 1;
    }

    /// Removes a node (its Instances stay accounted until they are deleted).
    pub fn remove_node(&mut self, name: &str) {
        let Some(index) = self.node_index.remove(name) else {
            return;
        };
        self.nodes.swap_remove(index);
        if let Some(moved) = self.nodes.get(index) {
            self.node_index.insert(moved.name.clone(), index);
        }
    }

    fn node_mut(&mut self, name: &str) -> Option<&mut NodeState> {
        let index = *self.node_index.get(name)?;
        self.nodes.get_mut(index)
    }

    /// Adds or replaces an asset.
    pub fn upsert_asset(&mut self, asset: &Asset) {
        let node = asset
            .spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        self.assets_by_node
            .entry(node.clone())
            .or_default()
            .insert(asset.meta().name.clone(), asset.clone());
        self.refresh_assets(&node);
        self.generation += 1;
    }

    /// Removes an asset.
    pub fn remove_asset(&mut self, asset: &Asset) {
        let node = asset
            .spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        if let Some(assets) = self.assets_by_node.get_mut(&node) {
            assets.remove(&asset.meta().name);
        }
        self.refresh_assets(&node);
    }

    fn refresh_assets(&mut self, node: &str) {
        let Some(index) = self.node_index.get(node).copied() else {
            return;
        };
        let gpu_used = &self.gpu_used;
        let Some(state) = self.nodes.get_mut(index) else {
            return;
        };
        let assets = self.assets_by_node.get(node);
        state.gpus = assets
            .into_iter()
            .flat_map(|a| a.values())
            .filter_map(|a| {
                let spec = a.spec.as_ref()?;
                (spec.r#type == AssetType::Gpu as i32).then(|| GpuDevice {
                    asset: a.meta().name.clone(),
                    model: spec.attributes.get("model").cloned().unwrap_or_default(),
                    memory: quantity_bytes(
                        spec.attributes
                            .get("memory")
                            .or_else(|| spec.capacity.get("memory")),
                    ),
                    shareable: spec.sharing.as_ref().is_some_and(|s| s.allowed),
                    privacy: spec.privacy,
                    used_milli: gpu_used.get(&a.meta().name).copied().unwrap_or(0),
                })
            })
            .collect();
        state.allocatable = state
            .reported
            .min(&offered_by(assets.into_iter().flat_map(|a| a.values())));
        state.privacy = assets
            .into_iter()
            .flat_map(|a| a.values())
            .filter_map(|a| a.spec.as_ref())
            .filter(|s| {
                s.r#type != AssetType::Gpu as i32 && s.privacy != PrivacyLevel::Unspecified as i32
            })
            .map(|s| s.privacy)
            .min()
            .unwrap_or(PrivacyLevel::PublicNetwork as i32);
    }

    /// Records a namespace's labels.
    pub fn upsert_namespace(&mut self, ns: &Namespace) {
        let labels = ns.meta().labels.clone();
        if self.namespaces.get(&ns.meta().name) != Some(&labels) {
            self.namespaces.insert(ns.meta().name.clone(), labels);
            self.generation += 1;
        }
    }

    /// Records a Workload's gang policy.
    pub fn upsert_workload(&mut self, w: &Workload) {
        let key = (w.meta().namespace.clone(), w.meta().name.clone());
        let min_available = w
            .spec
            .as_ref()
            .and_then(|s| s.gang.as_ref())
            .map(|g| g.min_available);
        let changed = match min_available {
            Some(min) if min > 0 => self.gangs.insert(key, min) != Some(min),
            _ => self.gangs.remove(&key).is_some(),
        };
        if changed {
            self.generation += 1;
        }
    }

    /// Forgets a Workload.
    pub fn remove_workload(&mut self, w: &Workload) {
        self.gangs
            .remove(&(w.meta().namespace.clone(), w.meta().name.clone()));
    }

    /// The gang size the Instance's owning Workload asks for, if it is a gang.
    pub fn gang_of(&self, inst: &Instance) -> Option<((String, String), i32)> {
        let owner = inst
            .meta()
            .owner_references
            .iter()
            .find(|r| r.controller && r.kind == "Workload")?;
        let key = (inst.meta().namespace.clone(), owner.name.clone());
        self.gangs.get(&key).map(|&min| (key, min))
    }

    /// Labels of a namespace.
    pub fn namespace_labels(&self, ns: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(ns)
    }

    /// Records a binding (confirmed, or assumed before the apiserver answered).
    pub fn bind(&mut self, key: InstanceKey, instance: BoundInstance) {
        self.unbind(&key);
        let usage = self.usage.entry(instance.node.clone()).or_default();
        usage.0 += instance.requests;
        usage.1.insert(key.clone());
        for (asset, milli) in &instance.gpus {
            *self.gpu_used.entry(asset.clone()).or_default() += milli;
        }
        if let Some(node) = self.node_mut(&instance.node) {
            node.requested += instance.requests;
            node.instances.insert(key.clone());
            for (asset, milli) in &instance.gpus {
                if let Some(gpu) = node.gpus.iter_mut().find(|g| &g.asset == asset) {
                    gpu.used_milli += milli;
                }
            }
        }
        self.bound.insert(key, instance);
    }

    /// Forgets a binding, freeing what it held.
    pub fn unbind(&mut self, key: &InstanceKey) -> Option<BoundInstance> {
        let old = self.bound.remove(key)?;
        if let Some(usage) = self.usage.get_mut(&old.node) {
            usage.0 = usage.0 - old.requests;
            usage.1.remove(key);
            if usage.1.is_empty() {
                self.usage.remove(&old.node);
            }
        }
        if let Some(node) = self.node_mut(&old.node) {
            node.requested = node.requested - old.requests;
            node.instances.remove(key);
            for (asset, milli) in &old.gpus {
                if let Some(gpu) = node.gpus.iter_mut().find(|g| &g.asset == asset) {
                    gpu.used_milli = gpu.used_milli.saturating_sub(*milli);
                }
            }
        }
        for (asset, milli) in &old.gpus {
            if let Some(used) = self.gpu_used.get_mut(asset) {
                *used = used.saturating_sub(*milli);
            }
        }
        self.generation += 1;
        Some(old)
    }

    /// Every bound (or assumed) Instance.
    pub fn bound_keys(&self) -> Vec<InstanceKey> {
        self.bound.keys().cloned().collect()
    }

    /// Every asset name known, per node.
    pub fn asset_names(&self) -> Vec<(String, String)> {
        self.assets_by_node
            .iter()
            .flat_map(|(n, a)| a.keys().map(move |k| (n.clone(), k.clone())))
            .collect()
    }

    /// Removes an asset by node and name.
    pub fn remove_asset_named(&mut self, node: &str, name: &str) {
        if let Some(assets) = self.assets_by_node.get_mut(node) {
            assets.remove(name);
        }
        self.refresh_assets(node);
    }

    /// The binding of an Instance, if any.
    pub fn bound(&self, key: &InstanceKey) -> Option<&BoundInstance> {
        self.bound.get(key)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.get(*self.node_index.get(name)?)
    }

    /// Every node, in a stable order.
    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node names in stable order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// How many Instances of gang `(namespace, workload)` are bound.
    pub fn bound_members(&self, gang: &(String, String)) -> usize {
        self.bound
            .iter()
            .filter(|(k, b)| k.0 == gang.0 && b.owner.as_deref() == Some(gang.1.as_str()))
            .count()
    }

    /// Bound Instances of a namespace with their nodes, for affinity checks.
    pub fn instances_in(
        &self,
        namespace: &str,
    ) -> impl Iterator<Item = (&InstanceKey, &BoundInstance)> {
        self.bound.iter().filter(move |(k, _)| k.0 == namespace)
    }
}
