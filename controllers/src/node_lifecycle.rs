//! The node-lifecycle controller: notices nodes whose heartbeat Lease
//! (`hypermesh-system/node-<name>`) stopped being renewed, marks them `Ready=Unknown`
//! and taints them `hypermesh.io/unreachable:NoExecute`, then, after a grace period,
//! deletes the Instances bound to them that do not tolerate the taint, so their
//! Workloads replace them and the scheduler places the replacements elsewhere.
//!
//! Expiry is time-driven, not polled: each reconcile of a node schedules the next one
//! at the moment its Lease would expire (or an eviction falls due), and a renewal
//! simply pushes that moment back. Renewals are timed by when *this controller saw
//! them* (a monotonic clock), not by the agent's `renew_time`, so clock skew between
//! hosts cannot expire a live node; after a leader change every node gets a full
//! Lease duration before it can be marked.
//!
//! Ownership of the Node's fields:
//! - the agent owns `Ready=True` (and every other condition it reports); this
//!   controller only ever writes `Ready=Unknown` (reasons [`REASON_LEASE_EXPIRED`],
//!   [`REASON_LEASE_MISSING`]) and never sets it back: the agent's next status report
//!   does;
//! - this controller owns the [`UNREACHABLE_TAINT`] taint: it adds it when the Lease
//!   lapses and removes it as soon as the Lease is renewed. The scheduler already
//!   refuses untolerated `NoExecute` taints, so the taint also stops new placements.
//!
//! A node that never had a Lease is treated like one whose Lease expired once
//! [`NodeLifecycleConfig::startup_grace`] has passed since this controller first saw
//! the node.
//!
//! Eviction: an Instance that does not tolerate the taint is deleted
//! [`NodeLifecycleConfig::eviction_grace`] after the taint's `time_added`; one that
//! tolerates it with `toleration_seconds > 0` is deleted that many seconds after
//! `time_added`; `toleration_seconds == 0` (unset) tolerates it forever, a negative
//! value not at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use hypermesh_api::v1::{
    Condition, DeleteRequest, Instance, Lease, ListRequest, Node, Taint, TaintEffect, Toleration,
};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::queue::{Backoff, WorkQueue};
use hypermesh_runtime::reflector::{self, Store};
use hypermesh_runtime::watcher::{self, Event as WatchEvent, WatcherError};
use pbjson_types::Timestamp;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::{debug, info, warn};

use crate::events::{EventRecorder, EventType};
use crate::workload::template::{is_deleting, is_terminal};

/// The `source` of the Events this controller records.
pub const SOURCE: &str = "node-lifecycle-controller";
/// Namespace of the nodes' heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "hypermesh-system";
/// Prefix of a node's heartbeat Lease name: `node-<nodeName>`.
pub const NODE_LEASE_PREFIX: &str = "node-";
/// The taint put on a node whose Lease lapsed.
pub const UNREACHABLE_TAINT: &str = "hypermesh.io/unreachable";
/// The condition this controller marks `Unknown`.
pub const READY: &str = "Ready";
/// `Ready=Unknown` reason: the node's Lease was not renewed in time.
pub const REASON_LEASE_EXPIRED: &str = "LeaseExpired";
/// `Ready=Unknown` reason: the node never created its Lease.
pub const REASON_LEASE_MISSING: &str = "LeaseMissing";

/// How long workers get to finish their current node on shutdown.
const WORKER_GRACE: Duration = Duration::from_secs(5);
/// Slack added to every scheduled wake-up so the deadline has surely passed.
const WAKE_SLACK: Duration = Duration::from_millis(20);

/// How the node-lifecycle controller judges nodes.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How long a Lease holds when it names no `lease_duration_seconds`.
    pub default_lease_duration: Duration,
    /// When set, used instead of every Lease's own `lease_duration_seconds` (tests).
    pub lease_duration_override: Option<Duration>,
    /// How long a node without any Lease gets, from when the controller first sees
    /// it, before it is treated as unreachable.
    pub startup_grace: Duration,
    /// How long after a node is tainted unreachable its untolerating Instances are
    /// deleted.
    pub eviction_grace: Duration,
    /// Nodes reconciled at once.
    pub workers: usize,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            default_lease_duration: Duration::from_secs(10),
            lease_duration_override: None,
            startup_grace: Duration::from_secs(30),
            eviction_grace: Duration::from_secs(30),
            workers: 2,
        }
    }
}

/// Why one reconcile failed; the node is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    /// Writing the Node's taints failed (a conflict when it changed meanwhile).
    #[error("cannot update the taints of node {node}: {source}")]
    Taint {
        /// The Node's name.
        node: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Writing the Node's `Ready` condition failed.
    #[error("cannot update the status of node {node}: {source}")]
    Status {
        /// The Node's name.
        node: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Listing the Instances bound to the node failed.
    #[error("cannot list the instances on node {node}: {source}")]
    List {
        /// The Node's name.
        node: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Deleting an Instance failed.
    #[error("cannot evict instance {namespace}/{instance}: {source}")]
    Evict {
        /// The Instance's namespace.
        namespace: String,
        /// The Instance's name.
        instance: String,
        /// The API error.
        #[source]
        source: Status,
    },
}

/// The node-lifecycle controller.
#[derive(Debug, Clone)]
pub struct NodeLifecycleController {
    nodes: Api<Node>,
    leases: Api<Lease>,
    instances: Api<Instance>,
    recorder: EventRecorder,
    config: NodeLifecycleConfig,
}

/// The last renewal seen of one node's Lease.
#[derive(Debug, Clone)]
struct Renewal {
    /// The Lease's `renew_time` (the agent's clock), for messages.
    renew_time: Option<Timestamp>,
    /// When this controller saw that renewal (its own clock), for expiry.
    seen: Instant,
    /// How long the renewal holds.
    duration: Duration,
    /// Whether this controller saw `renew_time` move (not just the Lease as first
    /// listed): only that revives a node that is already tainted, so a new leader
    /// does not untaint a dead node for a Lease duration.
    moved: bool,
}

/// What the controller remembers between reconciles, per node.
#[derive(Debug, Default)]
struct Memory {
    /// Last renewal of each node's Lease, by node name.
    renewals: HashMap<String, Renewal>,
    /// When each node was first seen, for the startup grace of Lease-less nodes.
    first_seen: HashMap<String, Instant>,
    /// The next wake-up already scheduled for each node.
    wakes: HashMap<String, Instant>,
}

struct Shared {
    nodes: Api<Node>,
    instances: Api<Instance>,
    recorder: EventRecorder,
    config: NodeLifecycleConfig,
    node_cache: Store<Node>,
    queue: WorkQueue<String>,
    memory: Mutex<Memory>,
}

impl NodeLifecycleController {
    /// A controller talking to the apiserver over `channel`; `identity` names this
    /// replica in the Events it records.
    pub fn new(channel: Channel, identity: &str, config: NodeLifecycleConfig) -> Self {
        NodeLifecycleController {
            nodes: Api::new(channel.clone()),
            leases: Api::new(channel.clone()),
            instances: Api::new(channel.clone()),
            recorder: EventRecorder::new(Api::new(channel), SOURCE, identity),
            config,
        }
    }

    /// Runs until `shutdown`: watches Nodes and node Leases and reconciles each node.
    pub async fn run(self, shutdown: CancellationToken) {
        let (node_writer, node_cache) = reflector::store::<Node>();
        let (lease_writer, lease_cache) = reflector::store::<Lease>();
        let workers = self.config.workers.max(1);
        let shared = Arc::new(Shared {
            nodes: self.nodes.clone(),
            instances: self.instances,
            recorder: self.recorder,
            config: self.config,
            node_cache: node_cache.clone(),
            queue: WorkQueue::new(Backoff::default()),
            memory: Mutex::new(Memory::default()),
        });
        let node_events = reflector::reflector(
            node_writer,
            watcher::watcher(self.nodes, watcher::Config::default()),
        );
        let lease_events = reflector::reflector(
            lease_writer,
            watcher::watcher(
                self.leases,
                watcher::Config {
                    namespace: NODE_LEASE_NAMESPACE.to_string(),
                    ..Default::default()
                },
            ),
        );
        let feeds = [
            tokio::spawn(feed_nodes(node_events, shared.clone())),
            tokio::spawn(feed_leases(lease_events, shared.clone())),
        ];
        let ready = async {
            node_cache.wait_ready().await;
            lease_cache.wait_ready().await;
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = ready => {
                info!(workers, "node-lifecycle controller started");
                for node in node_cache.list() {
                    shared.queue.add(node.meta().name.clone());
                }
                let handles: Vec<_> = (0..workers)
                    .map(|_| tokio::spawn(work(shared.clone(), shutdown.clone())))
                    .collect();
                shutdown.cancelled().await;
                shared.queue.shut_down();
                let all = futures::future::join_all(handles);
                if tokio::time::timeout(WORKER_GRACE, all).await.is_err() {
                    warn!("node-lifecycle workers did not finish in time");
                }
            }
        }
        shared.queue.shut_down();
        for feed in feeds {
            feed.abort();
        }
        info!("node-lifecycle controller stopped");
    }
}

async fn feed_nodes(
    events: impl Stream<Item = Result<WatchEvent<Node>, WatcherError>>,
    shared: Arc<Shared>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Restarted(all)) => {
                let now = Instant::now();
                for node in &all {
                    let name = node.meta().name.clone();
                    shared
                        .memory()
                        .first_seen
                        .entry(name.clone())
                        .or_insert(now);
                    shared.queue.add(name);
                }
            }
            Ok(WatchEvent::Applied(node)) => {
                let name = node.meta().name.clone();
                shared
                    .memory()
                    .first_seen
                    .entry(name.clone())
                    .or_insert_with(Instant::now);
                shared.queue.add(name);
            }
            Ok(WatchEvent::Deleted(node)) => {
                let name = &node.meta().name;
                let mut memory = shared.memory();
                memory.first_seen.remove(name);
                memory.renewals.remove(name);
                memory.wakes.remove(name);
            }
            Err(err) => warn!(kind = Node::KIND, error = %err, "watch failed; retrying"),
        }
    }
}

/// The node a heartbeat Lease belongs to: `node-<name>` → `<name>`.
pub fn node_of_lease(lease: &Lease) -> Option<&str> {
    lease
        .meta()
        .name
        .strip_prefix(NODE_LEASE_PREFIX)
        .filter(|n| !n.is_empty())
}

async fn feed_leases(
    events: impl Stream<Item = Result<WatchEvent<Lease>, WatcherError>>,
    shared: Arc<Shared>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Restarted(all)) => {
                for lease in &all {
                    shared.observe_lease(lease);
                }
            }
            Ok(WatchEvent::Applied(lease)) => shared.observe_lease(&lease),
            // A deleted Lease is simply not renewed any more: the last renewal stays.
            Ok(WatchEvent::Deleted(_)) => {}
            Err(err) => warn!(kind = Lease::KIND, error = %err, "watch failed; retrying"),
        }
    }
}

async fn work(shared: Arc<Shared>, shutdown: CancellationToken) {
    while let Some(name) = shared.queue.next().await {
        if shutdown.is_cancelled() {
            shared.queue.done(name, true);
            break;
        }
        match shared.reconcile(&name).await {
            Ok(wake) => {
                shared.queue.done(name.clone(), true);
                if let Some(at) = wake {
                    shared.wake_at(&name, at);
                }
            }
            Err(err) => {
                let conflict = matches!(
                    &err,
                    NodeLifecycleError::Taint { source, .. } | NodeLifecycleError::Status { source, .. }
                        if source.code() == Code::Aborted
                );
                if conflict {
                    debug!(node = %name, error = %err, "conflict; retrying");
                } else {
                    warn!(node = %name, error = %err, "reconcile failed; retrying");
                }
                shared.queue.done(name, false);
            }
        }
    }
}

/// Where a node stands with its heartbeats at one instant.
#[derive(Debug, Clone, PartialEq)]
enum Heartbeat {
    /// Renewed in time; looks again at `until`.
    Live {
        /// When the current renewal lapses.
        until: Instant,
    },
    /// Not renewed in time.
    Lapsed {
        /// [`REASON_LEASE_EXPIRED`] or [`REASON_LEASE_MISSING`].
        reason: &'static str,
        /// The `Ready=Unknown` message.
        message: String,
    },
}

impl Shared {
    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lease_duration(&self, lease: &Lease) -> Duration {
        if let Some(d) = self.config.lease_duration_override {
            return d;
        }
        lease
            .spec
            .as_ref()
            .and_then(|s| u64::try_from(s.lease_duration_seconds).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(self.config.default_lease_duration)
    }

    /// Records a renewal when the Lease's `renew_time` moved, and wakes the node when
    /// that may change its state (first Lease, or a renewal of a lapsed node).
    fn observe_lease(&self, lease: &Lease) {
        let Some(node) = node_of_lease(lease) else {
            return;
        };
        let renew_time = lease.spec.as_ref().and_then(|s| s.renew_time);
        let duration = self.lease_duration(lease);
        let now = Instant::now();
        let mut memory = self.memory();
        let wake = match memory.renewals.get_mut(node) {
            Some(r) if r.renew_time == renew_time => {
                r.duration = duration;
                false
            }
            Some(r) => {
                let lapsed = r.seen + r.duration <= now;
                *r = Renewal {
                    renew_time,
                    seen: now,
                    duration,
                    moved: true,
                };
                lapsed
            }
            None => {
                memory.renewals.insert(
                    node.to_string(),
                    Renewal {
                        renew_time,
                        seen: now,
                        duration,
                        moved: false,
                    },
                );
                true
            }
        };
        drop(memory);
        // A live node's scheduled wake-up re-reads the renewal then; a node that is
        // (or may be) tainted is looked at right away.
        let tainted = self
            .node_cache
            .get("", node)
            .is_some_and(|n| unreachable_taint(&n).is_some());
        if wake || tainted {
            self.queue.add(node.to_string());
        }
    }

    /// Schedules a reconcile of `node` at `at`, unless one is already due by then.
    fn wake_at(&self, node: &str, at: Instant) {
        let now = Instant::now();
        let mut memory = self.memory();
        if let Some(pending) = memory.wakes.get(node)
            && *pending > now
            && *pending <= at
        {
            return;
        }
        memory.wakes.insert(node.to_string(), at);
        drop(memory);
        self.queue.add_after(
            node.to_string(),
            at.saturating_duration_since(now) + WAKE_SLACK,
        );
    }

    /// Where `node` stands with its heartbeats now.
    fn heartbeat(&self, node: &str, tainted: bool, now: Instant) -> Heartbeat {
        let memory = self.memory();
        judge(
            node,
            memory.renewals.get(node),
            memory.first_seen.get(node).copied().unwrap_or(now),
            self.config.startup_grace,
            tainted,
            now,
        )
    }

    /// Reconciles one node; `Ok(Some(at))` asks to look again at `at`.
    async fn reconcile(&self, name: &str) -> Result<Option<Instant>, NodeLifecycleError> {
        let Some(node) = self.node_cache.get("", name) else {
            return Ok(None);
        };
        if node.meta().deletion_timestamp.is_some() {
            return Ok(None);
        }
        let now = Instant::now();
        let tainted = unreachable_taint(&node).is_some();
        match self.heartbeat(name, tainted, now) {
            Heartbeat::Live { until } => {
                if tainted {
                    self.remove_taint(&node).await?;
                }
                Ok(Some(until))
            }
            Heartbeat::Lapsed { reason, message } => {
                let node = self.mark_unreachable(&node, reason, &message).await?;
                self.evict(&node, &message).await
            }
        }
    }

    async fn remove_taint(&self, node: &Node) -> Result<(), NodeLifecycleError> {
        let mut updated = node.clone();
        if let Some(spec) = updated.spec.as_mut() {
            spec.taints.retain(|t| !is_unreachable(t));
        }
        match self.nodes.update(&updated).await {
            Ok(written) => {
                info!(node = %node.meta().name, "lease renewed; unreachable taint removed");
                self.recorder
                    .record(
                        &written,
                        EventType::Normal,
                        "NodeReachable",
                        format!("Lease renewed again; removed taint {UNREACHABLE_TAINT}:NoExecute"),
                    )
                    .await;
                Ok(())
            }
            Err(source) if source.code() == Code::NotFound => Ok(()),
            Err(source) => Err(NodeLifecycleError::Taint {
                node: node.meta().name.clone(),
                source,
            }),
        }
    }

    /// Adds the taint and sets `Ready=Unknown` where missing; returns the Node as
    /// last written (or as cached when nothing changed).
    async fn mark_unreachable(
        &self,
        node: &Node,
        reason: &str,
        message: &str,
    ) -> Result<Node, NodeLifecycleError> {
        let name = node.meta().name.clone();
        let mut current = node.clone();
        if unreachable_taint(&current).is_none() {
            let mut updated = current.clone();
            updated.spec.get_or_insert_default().taints.push(Taint {
                key: UNREACHABLE_TAINT.to_string(),
                value: String::new(),
                effect: TaintEffect::NoExecute as i32,
                time_added: Some(hypermesh_api::time::now()),
            });
            current = match self.nodes.update(&updated).await {
                Ok(written) => written,
                Err(source) if source.code() == Code::NotFound => return Ok(current),
                Err(source) => return Err(NodeLifecycleError::Taint { node: name, source }),
            };
            warn!(node = %name, reason, message, "node unreachable; tainted");
            self.recorder
                .record(
                    &current,
                    EventType::Warning,
                    "NodeNotReady",
                    format!(
                        "Node is unreachable: {message}; set Ready=Unknown and taint \
                         {UNREACHABLE_TAINT}:NoExecute"
                    ),
                )
                .await;
        }
        let ready_unknown = current
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.r#type == READY))
            .is_some_and(|c| c.status == "Unknown");
        if !ready_unknown {
            let mut updated = current.clone();
            let conditions = &mut updated.status.get_or_insert_default().conditions;
            let unknown = Condition {
                r#type: READY.to_string(),
                status: "Unknown".to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: Some(hypermesh_api::time::now()),
            };
            match conditions.iter_mut().find(|c| c.r#type == READY) {
                Some(c) => *c = unknown,
                None => conditions.push(unknown),
            }
            current = match self.nodes.update_status(&updated).await {
                Ok(written) => written,
                Err(source) if source.code() == Code::NotFound => return Ok(current),
                Err(source) => return Err(NodeLifecycleError::Status { node: name, source }),
            };
        }
        Ok(current)
    }

    /// Deletes the Instances on `node` whose time is up; returns when the next one
    /// falls due.
    async fn evict(&self, node: &Node, why: &str) -> Result<Option<Instant>, NodeLifecycleError> {
        let name = node.meta().name.clone();
        let Some(taint) = unreachable_taint(node) else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let instances = self.instances_on(&name).await?;
        let mut next: Option<SystemTime> = None;
        let mut evicted = Vec::new();
        let mut failure = None;
        for instance in instances {
            let Some(at) = eviction_time(&instance, taint, self.config.eviction_grace) else {
                continue;
            };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let meta = instance.meta();
            let result = self
                .instances
                .delete(DeleteRequest {
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone(),
                    ..Default::default()
                })
                .await;
            match result {
                Ok(_) => {
                    info!(node = %name, namespace = %meta.namespace, instance = %meta.name, "evicted");
                    self.recorder
                        .record(
                            &instance,
                            EventType::Warning,
                            "Evicted",
                            format!(
                                "Node {name} is unreachable ({why}); deleted the instance so \
                                 it is replaced elsewhere"
                            ),
                        )
                        .await;
                    evicted.push(format!("{}/{}", meta.namespace, meta.name));
                }
                Err(status) if status.code() == Code::NotFound => {}
                Err(source) => {
                    failure.get_or_insert(NodeLifecycleError::Evict {
                        namespace: meta.namespace.clone(),
                        instance: meta.name.clone(),
                        source,
                    });
                }
            }
        }
        if !evicted.is_empty() {
            self.recorder
                .record(
                    node,
                    EventType::Warning,
                    "EvictingInstances",
                    format!(
                        "Node is unreachable; deleted {} instance(s): {}",
                        evicted.len(),
                        evicted.join(", ")
                    ),
                )
                .await;
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(next.map(instant_of)),
        }
    }

    /// The live Instances bound to `node`, in every namespace.
    async fn instances_on(&self, node: &str) -> Result<Vec<Instance>, NodeLifecycleError> {
        let (items, _) = self
            .instances
            .list_all(ListRequest {
                field_selector: format!("spec.nodeName={node}"),
                ..Default::default()
            })
            .await
            .map_err(|source| NodeLifecycleError::List {
                node: node.to_string(),
                source,
            })?;
        Ok(items
            .into_iter()
            .filter(|i| !is_deleting(i) && !is_terminal(i))
            .collect())
    }
}

/// Where `node` stands at `now`, given its last seen renewal (if it ever had a
/// Lease), when it was first seen, and whether it already carries the unreachable
/// taint (then only a renewal this controller saw happen revives it, and a node
/// without a Lease stays lapsed).
fn judge(
    node: &str,
    renewal: Option<&Renewal>,
    first_seen: Instant,
    startup_grace: Duration,
    tainted: bool,
    now: Instant,
) -> Heartbeat {
    if let Some(r) = renewal {
        let until = r.seen + r.duration;
        if until > now && (r.moved || !tainted) {
            return Heartbeat::Live { until };
        }
        let since = match &r.renew_time {
            Some(t) => format_timestamp(t),
            None => "it was created".to_string(),
        };
        return Heartbeat::Lapsed {
            reason: REASON_LEASE_EXPIRED,
            message: format!(
                "lease not renewed since {since} (lease duration {}s)",
                r.duration.as_secs_f64()
            ),
        };
    }
    let until = first_seen + startup_grace;
    if until > now && !tainted {
        return Heartbeat::Live { until };
    }
    Heartbeat::Lapsed {
        reason: REASON_LEASE_MISSING,
        message: format!(
            "no heartbeat lease {NODE_LEASE_NAMESPACE}/{NODE_LEASE_PREFIX}{node} within the \
             startup grace of {}s",
            startup_grace.as_secs_f64()
        ),
    }
}

/// Whether `taint` is the one this controller owns.
fn is_unreachable(taint: &Taint) -> bool {
    taint.key == UNREACHABLE_TAINT && taint.effect == TaintEffect::NoExecute as i32
}

/// The node's unreachable taint, if it carries one.
pub fn unreachable_taint(node: &Node) -> Option<&Taint> {
    node.spec
        .as_ref()?
        .taints
        .iter()
        .find(|t| is_unreachable(t))
}

/// Whether `toleration` matches `taint` (same rules as the scheduler's).
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok =
        toleration.effect == TaintEffect::Unspecified as i32 || toleration.effect == taint.effect;
    let key_ok = match toleration.operator.as_str() {
        "Exists" => toleration.key.is_empty() || toleration.key == taint.key,
        _ => toleration.key == taint.key && toleration.value == taint.value,
    };
    effect_ok && key_ok
}

/// When `instance` is to be deleted from a node tainted by `taint`: `None` when it
/// tolerates the taint forever; otherwise the taint's time plus `grace` (no
/// toleration) or plus the longest matching `toleration_seconds`.
pub fn eviction_time(instance: &Instance, taint: &Taint, grace: Duration) -> Option<SystemTime> {
    let tainted_at = taint
        .time_added
        .as_ref()
        .map(hypermesh_api::time::to_system_time)
        .unwrap_or_else(SystemTime::now);
    let tolerations = instance
        .spec
        .as_ref()
        .map(|s| s.tolerations.as_slice())
        .unwrap_or_default();
    let matching: Vec<i64> = tolerations
        .iter()
        .filter(|t| tolerates(t, taint))
        .map(|t| t.toleration_seconds)
        .collect();
    if matching.is_empty() {
        return Some(tainted_at + grace);
    }
    if matching.contains(&0) {
        return None;
    }
    let longest = matching.into_iter().max().unwrap_or(0);
    Some(tainted_at + Duration::from_secs(u64::try_from(longest).unwrap_or(0)))
}

/// The monotonic instant matching wall-clock time `t` (now when `t` has passed).
fn instant_of(t: SystemTime) -> Instant {
    let ahead = t.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now() + ahead
}

/// `2026-11-28T05:46:19Z`.
pub fn format_timestamp(t: &Timestamp) -> String {
    let secs = t.seconds.max(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::InstanceSpec;

    fn taint_at(seconds: i64) -> Taint {
        Taint {
            key: UNREACHABLE_TAINT.into(),
            value: String::new(),
            effect: TaintEffect::NoExecute as i32,
            time_added: Some(Timestamp { seconds, nanos: 0 }),
        }
    }

    fn instance(tolerations: Vec<Toleration>) -> Instance {
        Instance {
            metadata: None,
            spec: Some(InstanceSpec {
                tolerations,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn toleration(key: &str, operator: &str, effect: TaintEffect, seconds: i64) -> Toleration {
        Toleration {
            key: key.into(),
            operator: operator.into(),
            value: String::new(),
            effect: effect as i32,
            toleration_seconds: seconds,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn untolerating_instances_go_after_the_grace() {
        let t = taint_at(1000);
        let grace = Duration::from_secs(30);
        assert_eq!(eviction_time(&instance(vec![]), &t, grace), Some(at(1030)));
        // A toleration for another taint does not help.
        let other = toleration("dedicated", "Exists", TaintEffect::NoExecute, 0);
        assert_eq!(
            eviction_time(&instance(vec![other]), &t, grace),
            Some(at(1030))
        );
        // Nor one for another effect.
        let no_schedule = toleration(UNREACHABLE_TAINT, "Exists", TaintEffect::NoSchedule, 0);
        assert_eq!(
            eviction_time(&instance(vec![no_schedule]), &t, grace),
            Some(at(1030))
        );
    }

    #[test]
    fn toleration_seconds_set_the_time() {
        let t = taint_at(1000);
        let grace = Duration::from_secs(30);
        let long = toleration(UNREACHABLE_TAINT, "Exists", TaintEffect::NoExecute, 3600);
        assert_eq!(
            eviction_time(&instance(vec![long]), &t, grace),
            Some(at(4600))
        );
        let short = toleration(UNREACHABLE_TAINT, "Equal", TaintEffect::Unspecified, 5);
        assert_eq!(
            eviction_time(&instance(vec![short]), &t, grace),
            Some(at(1005))
        );
        let forever = toleration("", "Exists", TaintEffect::Unspecified, 0);
        assert_eq!(eviction_time(&instance(vec![forever]), &t, grace), None);
        let negative = toleration(UNREACHABLE_TAINT, "Exists", TaintEffect::NoExecute, -1);
        assert_eq!(
            eviction_time(&instance(vec![negative]), &t, grace),
            Some(at(1000))
        );
    }

    fn renewal(seen: Instant, moved: bool) -> Renewal {
        Renewal {
            renew_time: Some(Timestamp {
                seconds: 1_795_844_779,
                nanos: 0,
            }),
            seen,
            duration: Duration::from_secs(10),
            moved,
        }
    }

    fn reason(h: &Heartbeat) -> Option<&'static str> {
        match h {
            Heartbeat::Live { .. } => None,
            Heartbeat::Lapsed { reason, .. } => Some(reason),
        }
    }

    #[test]
    fn leases_hold_for_their_duration_from_when_they_were_seen() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let r = renewal(t0, true);
        let live = judge("a", Some(&r), t0, grace, false, t0 + Duration::from_secs(9));
        assert_eq!(
            live,
            Heartbeat::Live {
                until: t0 + Duration::from_secs(10)
            }
        );
        let lapsed = judge(
            "a",
            Some(&r),
            t0,
            grace,
            false,
            t0 + Duration::from_secs(10),
        );
        assert_eq!(reason(&lapsed), Some(REASON_LEASE_EXPIRED));
        let Heartbeat::Lapsed { message, .. } = lapsed else {
            unreachable!()
        };
        assert_eq!(
            message,
            "lease not renewed since 2026-11-28T05:46:19Z (lease duration 10s)"
        );
    }

    #[test]
    fn only_a_seen_renewal_revives_a_tainted_node() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let soon = t0 + Duration::from_secs(1);
        // As first listed (e.g. after a leader change): live if untainted...
        let listed = renewal(t0, false);
        assert_eq!(
            reason(&judge("a", Some(&listed), t0, grace, false, soon)),
            None
        );
        // ...but a node already tainted stays lapsed until the Lease moves.
        let kept = judge("a", Some(&listed), t0, grace, true, soon);
        assert_eq!(reason(&kept), Some(REASON_LEASE_EXPIRED));
        let moved = renewal(t0, true);
        assert_eq!(
            reason(&judge("a", Some(&moved), t0, grace, true, soon)),
            None
        );
    }

    #[test]
    fn nodes_without_a_lease_get_the_startup_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(30);
        let early = judge("a", None, t0, grace, false, t0 + Duration::from_secs(29));
        assert_eq!(early, Heartbeat::Live { until: t0 + grace });
        let late = judge("a", None, t0, grace, false, t0 + grace);
        assert_eq!(reason(&late), Some(REASON_LEASE_MISSING));
        let tainted = judge("a", None, t0, grace, true, t0);
        assert_eq!(reason(&tainted), Some(REASON_LEASE_MISSING));
    }

    #[test]
    fn timestamps_format_as_utc() {
        let t = |seconds| format_timestamp(&Timestamp { seconds, nanos: 0 });
        assert_eq!(t(0), "1970-01-01T00:00:00Z");
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(1_795_844_779), "2026-11-28T05:46:19Z");
    }

    #[test]
    fn lease_names_map_to_nodes() {
        let lease = |name: &str| Lease {
            metadata: Some(hypermesh_api::v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: None,
            status: None,
        };
        assert_eq!(node_of_lease(&lease("node-a")), Some("a"));
        assert_eq!(node_of_lease(&lease("node-")), None);
        assert_eq!(node_of_lease(&lease("hypermesh-controllers")), None);
    }
}
