//! Fixtures for the `scheduler_*` tests: an in-process apiserver with an in-process
//! scheduler, simulated nodes (Node objects with allocatable and conditions, plus
//! Asset objects such as GPUs) and Instances built field by field, and waits with
//! deadlines for an Instance to be bound or to say why it is pending.
//!
//! Simulated nodes are real nodes to the apiserver: each gets a FALCON identity and an
//! admin-issued stake, and what it offers is registered as proven Assets (CPU, MEMORY,
//! STORAGE, CONTAINER from the status figures the test gives), since the scheduler
//! takes capacity from admitted Assets only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{InProcessApiServer, proofs, wait_for};
use hypermesh_api::v1::{self, Asset, Event, Instance, ListRequest, Namespace, Node, ObjectMeta};
use hypermesh_api::{Api, Resource};
use hypermesh_scheduler::{Config, Profile};
use hypermesh_trust::NodeIdentity;
use tokio_util::sync::{CancellationToken, DropGuard};

mod objects;

pub use objects::{InstanceBuilder, NodeBuilder, asset, gpu_asset, instance, node};

/// Runs an in-process scheduler with the default config on `channel` until the
/// returned guard is dropped.
#[must_use = "the scheduler stops when the guard is dropped"]
pub fn spawn_default(channel: tonic::transport::Channel) -> DropGuard {
    let stop = CancellationToken::new();
    tokio::spawn(hypermesh_scheduler::run(
        channel,
        Config::default(),
        stop.clone(),
    ));
    stop.drop_guard()
}

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
    /// Each simulated node's identity and stake record.
    identities: Mutex<HashMap<String, (Arc<NodeIdentity>, String)>>,
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
            identities: Mutex::default(),
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

    /// Creates `node` with a fresh identity and stake, and registers what its status
    /// offers as proven Assets.
    pub async fn add_node(&self, node: Node) {
        let name = node.meta().name.clone();
        let (identity, record) =
            proofs::create_offering_node(&self.nodes(), &self.server.api::<Asset>(), node)
                .await
                .unwrap_or_else(|e| panic!("create node {name}: {e:?}"));
        self.identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, (identity, record));
    }

    /// Creates `asset`, proven by its node's identity.
    pub async fn add_asset(&self, asset: Asset) {
        let name = asset.meta().name.clone();
        let node = asset
            .spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        let (identity, record) = self
            .identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&node)
            .cloned()
            .unwrap_or_else(|| panic!("asset {name}: node {node} was not added with add_node"));
        proofs::create_proven(&self.server.api::<Asset>(), &identity, &record, asset)
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
