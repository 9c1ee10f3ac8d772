//! What every Instance worker shares: containerd, task exits, images, volumes and the
//! Node's facts; the labels the agent puts on its containers; container ids and grace
//! periods.

use std::path::PathBuf;
use std::time::Duration;

use hypermesh_api::v1::{Instance, Node};
use hypermesh_api::{Api, Resource};
use tokio::sync::Mutex;

use hypermesh_runtime::events::EventRecorder;

use crate::container_setup::ContainerSetup;
use crate::images::Images;
use crate::runtime_latency::RuntimeLatency;
use hypermesh_containers::{ContainerdClient, TaskExits};

/// Default grace period between SIGTERM and SIGKILL.
pub(super) const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long an exited container's logger gets to write the last of its output.
pub(super) const LOG_FLUSH: Duration = Duration::from_secs(5);
/// How often a missing image or an unreachable containerd is retried.
pub(super) const RETRY: Duration = Duration::from_secs(1);
/// Container labels naming the owning Instance.
pub(super) const LABEL_UID: &str = "hypermesh.io/instance-uid";
pub(super) const LABEL_NAMESPACE: &str = "hypermesh.io/instance-namespace";
pub(super) const LABEL_NAME: &str = "hypermesh.io/instance-name";
pub(super) const LABEL_CONTAINER: &str = "hypermesh.io/container";
pub(super) const LABEL_GRACE: &str = "hypermesh.io/grace-seconds";

pub(super) struct Ctx {
    pub(super) client: ContainerdClient,
    /// Task exits, from one subscription to containerd's events.
    pub(super) exits: TaskExits,
    pub(super) api: Api<Instance>,
    pub(super) images: Images,
    pub(super) log_dir: PathBuf,
    pub(super) logger: PathBuf,
    pub(super) log_max_bytes: u64,
    pub(super) log_max_files: u32,
    pub(super) backoff: Duration,
    pub(super) nodes: Api<Node>,
    pub(super) node_name: String,
    /// What the Node says about this host, once read.
    pub(super) node_facts: Mutex<Option<NodeFacts>>,
    /// Volumes, user, pids limit and probes of each container start.
    pub(super) setup: ContainerSetup,
    /// Events about the Instances (Pulling, Started, BackOff, …), aggregated.
    pub(super) events: EventRecorder,
    /// Per-container eBPF accounting, attached as each container is created.
    pub(super) accounting: std::sync::Arc<crate::accounting::Accounting>,
    /// Times each call to containerd.
    pub(super) latency: RuntimeLatency,
}

/// What an Instance's status takes from its Node.
#[derive(Clone, Debug, Default)]
pub(super) struct NodeFacts {
    /// The Node's first `InternalIP` (empty when it has none).
    pub(super) host_ip: String,
    /// The NodeId Instance addresses are derived from.
    pub(super) node_id: String,
}

impl Ctx {
    /// The Node's facts (defaults while the Node cannot be read yet).
    pub(super) async fn node_facts(&self) -> NodeFacts {
        let mut cached = self.node_facts.lock().await;
        if let Some(facts) = cached.as_ref() {
            return facts.clone();
        }
        let Ok(node) = self.nodes.get("", &self.node_name).await else {
            return NodeFacts::default();
        };
        let host_ip = node
            .status
            .iter()
            .flat_map(|s| &s.addresses)
            .find(|a| a.r#type == "InternalIP")
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let node_id = node
            .spec
            .and_then(|s| s.identity)
            .map(|i| i.node_id)
            .unwrap_or_default();
        let facts = NodeFacts { host_ip, node_id };
        if !facts.node_id.is_empty() {
            *cached = Some(facts.clone());
        }
        facts
    }
}

/// `terminationGracePeriodSeconds`, 30 s when unset (0).
pub(super) fn grace_of(instance: &Instance) -> Duration {
    instance
        .spec
        .as_ref()
        .map(|s| s.termination_grace_period_seconds)
        .filter(|g| *g > 0)
        .map(|g| Duration::from_secs(g.unsigned_abs()))
        .unwrap_or(DEFAULT_GRACE)
}

pub(super) fn containers_of(instance: &Instance) -> &[hypermesh_api::v1::Container] {
    instance
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[])
}

pub(super) fn ids(instance: &Instance, container: &str) -> String {
    let m = instance.meta();
    container_id(&m.namespace, &m.name, &m.uid, container)
}

/// The containerd container ID of container `container` of an Instance: stable across
/// agent restarts, unique per Instance uid, valid as a containerd ID and cgroup leaf.
pub fn container_id(namespace: &str, name: &str, uid: &str, container: &str) -> String {
    let hash = blake3::hash(format!("{namespace}/{name}/{uid}/{container}").as_bytes());
    format!("hm-{}", &hash.to_hex()[..32])
}

/// The directory of the logs of one container of an Instance (one file per run, see
/// [`crate::logs`]).
pub fn log_dir_of(log_dir: &std::path::Path, instance: &Instance, container: &str) -> PathBuf {
    let meta = instance.meta();
    crate::logs::container_dir(log_dir, &meta.namespace, &meta.name, &meta.uid, container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_and_distinct() {
        let a = container_id("default", "web", "u1", "main");
        assert_eq!(a, container_id("default", "web", "u1", "main"));
        assert_ne!(a, container_id("default", "web", "u2", "main"));
        assert_ne!(a, container_id("default", "web", "u1", "side"));
        assert_eq!(a.len(), 35);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
