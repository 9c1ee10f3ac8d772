//! Shared by the agent_* tests: starts `hypermesh_agent::run` in-process against an
//! apiserver, with fast heartbeats and a containerd socket path that can be controlled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::wait_for;
use hypermesh_agent::Config;
use hypermesh_api::v1::{Asset, ListRequest, Node};
use hypermesh_api::{Api, Resource};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// An agent running inside the test.
pub struct Agent {
    pub config: Config,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), hypermesh_agent::AgentError>>>,
}

/// A config with fast heartbeats, a temp containerd socket path and `state_dir`.
pub fn config(server: &str, node: &str, state_dir: &Path, socket: PathBuf) -> Config {
    let mut c = Config::new(server, node, state_dir);
    c.heartbeat_interval = Duration::from_millis(300);
    // A small storage commitment per disk keeps parallel tests light on disk.
    c.storage_commit_bytes = 4 << 20;
    c.containerd_socket = socket;
    c.logger = crate::bin_path("hm-logger");
    c
}

impl Agent {
    pub fn start(config: Config) -> Agent {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hypermesh_agent::run(config.clone(), shutdown.clone()));
        Agent {
            config,
            shutdown,
            task: Some(task),
        }
    }

    /// Cancels the agent and waits for `run` to return Ok.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(TIMEOUT, task)
                .await
                .expect("agent stops in time")
                .expect("agent task");
            result.expect("agent run returns Ok");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The Assets whose spec.nodeName is `node`.
pub async fn assets_of(api: &Api<Asset>, node: &str) -> Vec<Asset> {
    let (items, _) = api
        .list_all(ListRequest::default())
        .await
        .expect("list assets");
    items
        .into_iter()
        .filter(|a| a.spec.as_ref().is_some_and(|s| s.node_name == node))
        .collect()
}

/// Whether an Asset is a network interface (interfaces may come and go while other
/// tests run, e.g. veth pairs, so counts compare the other kinds).
pub fn is_network(a: &Asset) -> bool {
    a.spec
        .as_ref()
        .is_some_and(|s| s.r#type == hypermesh_api::v1::AssetType::Network as i32)
}

/// How many non-network Assets detection on this host yields right now.
pub fn expected_stable_count() -> usize {
    hypermesh_agent::detect::detect(&Default::default(), 110)
        .expect("detect")
        .device_assets()
        .into_iter()
        .filter(|d| d.kind != hypermesh_api::v1::AssetType::Network)
        .count()
}

/// Waits until the Node exists with its Assets registered: every non-network device
/// as detected, each with an address.
pub async fn wait_registered(
    nodes: &Api<Node>,
    assets: &Api<Asset>,
    node: &str,
) -> (Node, Vec<Asset>) {
    let expected = expected_stable_count();
    wait_for(TIMEOUT, || async {
        let n = nodes.get("", node).await.ok()?;
        n.status.as_ref()?.capacity.get("cpu")?;
        let a = assets_of(assets, node).await;
        let stable = a.iter().filter(|a| !is_network(a)).count();
        let addressed = a
            .iter()
            .all(|a| a.status.as_ref().is_some_and(|s| !s.address.is_empty()));
        (stable == expected && addressed).then_some((n, a))
    })
    .await
    .unwrap_or_else(|e| panic!("node {node} registered with {expected} non-network assets: {e}"))
}

/// The named condition of a Node.
pub fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a hypermesh_api::v1::Condition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
}

/// Name of a Node's object, for messages.
pub fn name_of(node: &Node) -> &str {
    &node.meta().name
}
