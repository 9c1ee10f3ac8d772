//! Filters (may this Instance run on this node?) and scores (how good a fit is it?).
//! Each filter names the reason a node was rejected so a pending Instance can say
//! `0/12 nodes are available: 8 insufficient gpu, 4 node(s) had untolerated taint`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use hypermesh_api::quantity::Quantity;
use hypermesh_api::selector::LabelSelector;
use hypermesh_api::v1::{self, PrivacyLevel, TaintEffect};

use crate::cluster::{ClusterState, NETWORK_LABEL, NodeState, OWNER_NAMESPACE_LABEL, P2P_LABEL};
use crate::gpus;
use crate::resources::Resources;

/// Why a node cannot take an Instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unfit {
    /// Ready is not True.
    NotReady,
    /// RuntimeReady is False: the agent cannot reach containerd.
    RuntimeNotReady,
    /// The node is marked Suspect.
    Suspect,
    /// Cordoned.
    Unschedulable,
    /// A NoSchedule/NoExecute taint is not tolerated.
    Tainted,
    /// `nodeSelector` does not match.
    NodeSelector,
    /// Required node affinity does not match.
    NodeAffinity,
    /// The node's assets' privacy level does not allow this Instance.
    Privacy,
    /// Required Instance affinity is not met.
    InstanceAffinity,
    /// Instance anti-affinity is violated.
    InstanceAntiAffinity,
    /// Not enough cpu.
    InsufficientCpu,
    /// Not enough memory.
    InsufficientMemory,
    /// Not enough storage.
    InsufficientStorage,
    /// The node's Instance limit is reached.
    TooManyInstances,
    /// Not enough matching GPUs.
    InsufficientGpu,
}

impl Unfit {
    /// True when evicting lower-priority Instances could make room.
    pub fn resolvable_by_preemption(self) -> bool {
        matches!(
            self,
            Unfit::InsufficientCpu
                | Unfit::InsufficientMemory
                | Unfit::InsufficientStorage
                | Unfit::TooManyInstances
                | Unfit::InsufficientGpu
        )
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unfit::NotReady => "node(s) not ready",
            Unfit::RuntimeNotReady => "node(s) runtime not ready",
            Unfit::Suspect => "node(s) suspect",
            Unfit::Unschedulable => "node(s) cordoned",
            Unfit::Tainted => "node(s) had untolerated taint",
            Unfit::NodeSelector => "node(s) didn't match node selector",
            Unfit::NodeAffinity => "node(s) didn't match node affinity",
            Unfit::Privacy => "node(s) privacy level forbids it",
            Unfit::InstanceAffinity => "node(s) didn't match instance affinity",
            Unfit::InstanceAntiAffinity => "node(s) didn't match instance anti-affinity",
            Unfit::InsufficientCpu => "insufficient cpu",
            Unfit::InsufficientMemory => "insufficient memory",
            Unfit::InsufficientStorage => "insufficient storage",
            Unfit::TooManyInstances => "too many instances",
            Unfit::InsufficientGpu => "insufficient gpu",
        })
    }
}

/// GPU assets an Instance gets, with thousandths of a GPU from each.
pub type GpuPick = Vec<(String, u64)>;

/// A node name and the GPUs the Instance would get there.
pub type Placement = (String, GpuPick);

/// Scoring profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Least allocated: spread load.
    #[default]
    Spread,
    /// Most allocated: pack nodes full.
    Binpack,
}

/// Everything about one Instance the filters need, computed once per attempt.
#[derive(Debug, Clone)]
pub struct Request {
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The spec.
    pub spec: v1::InstanceSpec,
    /// Summed requests; `gpu_milli` is matched against GPU assets.
    pub resources: Resources,
    /// Only GPUs whose model contains this.
    pub gpu_model: String,
    /// Only GPUs with at least this many bytes.
    pub gpu_memory: u64,
    /// Instance affinity: topology key, values where matches run, whether the Instance matches itself.
    affinity: Vec<(String, HashSet<String>, bool)>,
    /// Instance anti-affinity: topology key, values where matches run.
    anti_affinity: Vec<(String, HashSet<String>)>,
}

impl Request {
    /// Builds the request for `instance`, resolving affinity terms against `cluster`.
    pub fn new(instance: &v1::Instance, cluster: &ClusterState) -> Self {
        let meta = instance.metadata.clone().unwrap_or_default();
        let spec = instance.spec.clone().unwrap_or_default();
        let resources = Resources::requested_by(&spec);
        let gpu_req = spec
            .containers
            .iter()
            .filter_map(|c| c.resources.as_ref())
            .find(|r| !r.gpu.is_empty() || !r.gpu_model.is_empty());
        let gpu_model = gpu_req.map(|r| r.gpu_model.clone()).unwrap_or_default();
        let gpu_memory = gpu_req
            .and_then(|r| r.gpu_memory.parse::<Quantity>().ok())
            .map_or(0, |q| u64::try_from(q.units_ceil()).unwrap_or(u64::MAX));
        let topology = |term: &v1::InstanceAffinityTerm| -> (HashSet<String>, bool) {
            let selector = LabelSelector::from_map(&term.label_selector);
            let values = cluster
                .instances_in(&meta.namespace)
                .filter(|(_, b)| selector.matches(&b.labels))
                .filter_map(|(_, b)| {
                    cluster
                        .node(&b.node)?
                        .labels
                        .get(&term.topology_key)
                        .cloned()
                })
                .collect();
            (values, selector.matches(&meta.labels))
        };
        let (affinity, anti_affinity) = match &spec.affinity {
            Some(a) => (
                a.instance_affinity
                    .iter()
                    .map(|t| {
                        let (v, own) = topology(t);
                        (t.topology_key.clone(), v, own)
                    })
                    .collect(),
                a.instance_anti_affinity
                    .iter()
                    .map(|t| (t.topology_key.clone(), topology(t).0))
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        Request {
            namespace: meta.namespace,
            labels: meta.labels,
            spec,
            resources,
            gpu_model,
            gpu_memory,
            affinity,
            anti_affinity,
        }
    }
}

fn tolerates(tolerations: &[v1::Toleration], taint: &v1::Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect == TaintEffect::Unspecified as i32 || t.effect == taint.effect;
        let key_ok = match t.operator.as_str() {
            "Exists" => t.key.is_empty() || t.key == taint.key,
            _ => t.key == taint.key && t.value == taint.value,
        };
        effect_ok && key_ok
    })
}

fn node_affinity_matches(
    required: &[v1::NodeSelectorRequirement],
    labels: &BTreeMap<String, String>,
) -> bool {
    required.iter().all(|r| {
        let value = labels.get(&r.key);
        let number = |v: Option<&String>| v.and_then(|v| v.parse::<i64>().ok());
        match r.operator.as_str() {
            "In" => value.is_some_and(|v| r.values.contains(v)),
            "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" => {
                matches!((number(value), number(r.values.first())), (Some(a), Some(b)) if a > b)
            }
            "Lt" => {
                matches!((number(value), number(r.values.first())), (Some(a), Some(b)) if a < b)
            }
            _ => false,
        }
    })
}

/// Whether assets at `level` on `node` may serve an Instance of `namespace` that
/// asks for at most `wanted` exposure (see docs/scheduling.md, "Privacy").
pub fn privacy_allows(
    cluster: &ClusterState,
    node: &NodeState,
    level: i32,
    namespace: &str,
    wanted: i32,
) -> bool {
    if wanted != PrivacyLevel::Unspecified as i32 && level > wanted {
        return false;
    }
    if level >= PrivacyLevel::PublicNetwork as i32 || level == PrivacyLevel::Unspecified as i32 {
        return true; // the common case needs no label lookups
    }
    let ns_labels = cluster.namespace_labels(namespace);
    let same_network = || match (
        node.labels.get(NETWORK_LABEL),
        ns_labels.and_then(|l| l.get(NETWORK_LABEL)),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    match PrivacyLevel::try_from(level).unwrap_or(PrivacyLevel::PublicNetwork) {
        PrivacyLevel::Private => node
            .labels
            .get(OWNER_NAMESPACE_LABEL)
            .is_some_and(|owner| owner == namespace),
        PrivacyLevel::PrivateNetwork => same_network(),
        PrivacyLevel::P2p => {
            same_network()
                || ns_labels
                    .and_then(|l| l.get(P2P_LABEL))
                    .is_some_and(|v| v == "true")
        }
        _ => true,
    }
}

/// Runs every filter: `Ok` when `node` can take the Instance.
pub fn filter(cluster: &ClusterState, node: &NodeState, req: &Request) -> Result<(), Unfit> {
    if !node.ready {
        return Err(Unfit::NotReady);
    }
    if node.runtime_down {
        return Err(Unfit::RuntimeNotReady);
    }
    if node.suspect {
        return Err(Unfit::Suspect);
    }
    if node.unschedulable {
        return Err(Unfit::Unschedulable);
    }
    let blocking = |t: &&v1::Taint| {
        t.effect == TaintEffect::NoSchedule as i32 || t.effect == TaintEffect::NoExecute as i32
    };
    if node
        .taints
        .iter()
        .filter(blocking)
        .any(|t| !tolerates(&req.spec.tolerations, t))
    {
        return Err(Unfit::Tainted);
    }
    if req
        .spec
        .node_selector
        .iter()
        .any(|(k, v)| node.labels.get(k) != Some(v))
    {
        return Err(Unfit::NodeSelector);
    }
    if let Some(na) = req
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        && !node_affinity_matches(&na.required, &node.labels)
    {
        return Err(Unfit::NodeAffinity);
    }
    if !privacy_allows(
        cluster,
        node,
        node.privacy,
        &req.namespace,
        req.spec.privacy,
    ) {
        return Err(Unfit::Privacy);
    }
    let free = node.free();
    let r = &req.resources;
    if r.cpu_milli > free.cpu_milli {
        return Err(Unfit::InsufficientCpu);
    }
    if r.memory > free.memory {
        return Err(Unfit::InsufficientMemory);
    }
    if r.storage > free.storage {
        return Err(Unfit::InsufficientStorage);
    }
    if r.instances > free.instances {
        return Err(Unfit::TooManyInstances);
    }
    if !gpus::gpus_fit(cluster, node, req) {
        return Err(Unfit::InsufficientGpu);
    }
    for (key, values, matches_itself) in &req.affinity {
        let ok = match node.labels.get(key) {
            Some(v) => values.contains(v) || (values.is_empty() && *matches_itself),
            None => false,
        };
        if !ok {
            return Err(Unfit::InstanceAffinity);
        }
    }
    for (key, values) in &req.anti_affinity {
        if node.labels.get(key).is_some_and(|v| values.contains(v)) {
            return Err(Unfit::InstanceAntiAffinity);
        }
    }
    Ok(())
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64).min(1.0)
    }
}

/// Scores a feasible node, 0–100ish; higher is better.
pub fn score(node: &NodeState, req: &Request, profile: Profile) -> f64 {
    let after = node.requested
        + Resources {
            gpu_milli: 0,
            ..req.resources
        };
    let used = (ratio(after.cpu_milli, node.allocatable.cpu_milli)
        + ratio(after.memory, node.allocatable.memory))
        / 2.0;
    let mut score = match profile {
        Profile::Spread => (1.0 - used) * 100.0,
        Profile::Binpack => used * 100.0,
    };
    let free_whole_gpus = node.gpus.iter().filter(|g| g.used_milli == 0).count();
    if req.resources.gpu_milli == 0 {
        // Keep GPU nodes for GPU work.
        if free_whole_gpus > 0 {
            score -= 30.0;
        }
    } else if !node.gpus.is_empty() {
        // Pack GPU work: prefer nodes that end with the fewest whole GPUs free.
        // Whole-GPU requests take free GPUs; fractional ones share a used one if they can.
        let wanted = req.resources.gpu_milli;
        let taken_whole = if wanted.is_multiple_of(1000) {
            usize::try_from(wanted / 1000).unwrap_or(0)
        } else {
            0
        };
        let left = free_whole_gpus.saturating_sub(taken_whole);
        score += 30.0 * (1.0 - ratio(left as u64, node.gpus.len() as u64));
    }
    let soft = node
        .taints
        .iter()
        .filter(|t| {
            t.effect == TaintEffect::PreferNoSchedule as i32 && !tolerates(&req.spec.tolerations, t)
        })
        .count();
    score - 20.0 * soft as f64
}

/// `0/12 nodes are available: 8 insufficient gpu, 4 node(s) had untolerated taint.`
pub fn explain(total: usize, reasons: &BTreeMap<Unfit, usize>) -> String {
    let mut parts: Vec<(usize, String)> = reasons
        .iter()
        .map(|(r, n)| (*n, format!("{n} {r}")))
        .collect();
    parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let list: Vec<String> = parts.into_iter().map(|(_, s)| s).collect();
    if list.is_empty() {
        format!("0/{total} nodes are available.")
    } else {
        format!("0/{total} nodes are available: {}.", list.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hypermesh_api::v1::{Condition, Instance, Node, NodeStatus, ObjectMeta};

    /// A node offering 4 cpu and 8Gi with the given `(type, status)` conditions.
    fn node(name: &str, conditions: &[(&str, &str)]) -> Node {
        let offers: BTreeMap<String, String> = [("cpu", "4"), ("memory", "8Gi")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(Default::default()),
            status: Some(NodeStatus {
                allocatable: offers.clone(),
                capacity: offers,
                conditions: conditions
                    .iter()
                    .map(|(kind, status)| Condition {
                        r#type: kind.to_string(),
                        status: status.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        }
    }

    /// An admitted Asset of node `n1` offering `quantity` of `key`.
    fn offer(kind: v1::AssetType, key: &str, quantity: &str) -> v1::Asset {
        v1::Asset {
            metadata: Some(ObjectMeta {
                name: format!("n1-{key}"),
                ..Default::default()
            }),
            spec: Some(v1::AssetSpec {
                node_name: "n1".into(),
                r#type: kind as i32,
                capacity: [(key.to_string(), quantity.to_string())].into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Whether a small Instance may go to `node` (the only node of the cluster), which
    /// offers 4 cpu, 8Gi and 110 instance slots through its Assets.
    fn fits(node: &Node) -> Result<(), Unfit> {
        let mut cluster = ClusterState::default();
        cluster.upsert_node(node);
        cluster.upsert_asset(&offer(v1::AssetType::Cpu, "cpu", "4"));
        cluster.upsert_asset(&offer(v1::AssetType::Memory, "memory", "8Gi"));
        cluster.upsert_asset(&offer(v1::AssetType::Container, "instances", "110"));
        let instance = Instance {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::InstanceSpec {
                containers: vec![v1::Container {
                    name: "main".into(),
                    resources: Some(v1::ResourceRequirements {
                        cpu: "500m".into(),
                        memory: "64Mi".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let req = Request::new(&instance, &cluster);
        let name = node
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let state = cluster.node(&name).expect("node known");
        filter(&cluster, state, &req)
    }

    #[test]
    fn capacity_comes_from_admitted_assets_and_status_only_lowers_it() {
        let mut cluster = ClusterState::default();
        // The status claims 4 cpu and 8Gi, but no Asset backs them: nothing is offered.
        cluster.upsert_node(&node("n1", &[("Ready", "True")]));
        assert_eq!(cluster.node("n1").map(|n| n.allocatable.cpu_milli), Some(0));
        cluster.upsert_asset(&offer(v1::AssetType::Cpu, "cpu", "64"));
        cluster.upsert_asset(&offer(v1::AssetType::Memory, "memory", "4Gi"));
        let n = cluster.node("n1").expect("n1");
        // cpu: 64 proved, 4 reported → 4; memory: 4Gi proved, 8Gi reported → 4Gi.
        assert_eq!(n.allocatable.cpu_milli, 4000);
        assert_eq!(n.allocatable.memory, 4 << 30);
    }

    #[test]
    fn a_node_whose_runtime_is_not_ready_takes_no_instances() {
        let down = node("n1", &[("Ready", "True"), ("RuntimeReady", "False")]);
        assert_eq!(fits(&down), Err(Unfit::RuntimeNotReady));
        let up = node("n1", &[("Ready", "True"), ("RuntimeReady", "True")]);
        assert_eq!(fits(&up), Ok(()));
        // Nodes that do not report the condition are not held back by it.
        assert_eq!(fits(&node("n1", &[("Ready", "True")])), Ok(()));
        // Not ready at all says so first.
        let both = node("n1", &[("Ready", "False"), ("RuntimeReady", "False")]);
        assert_eq!(fits(&both), Err(Unfit::NotReady));
    }

    #[test]
    fn pending_reasons_name_the_runtime() {
        let reasons = BTreeMap::from([(Unfit::RuntimeNotReady, 2), (Unfit::NotReady, 1)]);
        assert_eq!(
            explain(3, &reasons),
            "0/3 nodes are available: 2 node(s) runtime not ready, 1 node(s) not ready."
        );
        assert!(!Unfit::RuntimeNotReady.resolvable_by_preemption());
    }
}
