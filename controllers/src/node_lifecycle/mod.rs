//! The node-lifecycle controller: notices nodes whose heartbeat Lease
//! (`hypermesh-system/node-<name>`) stopped being renewed, marks them `Ready=Unknown`
//! and taints them `hypermesh.io/unreachable:NoExecute`, then, after a grace period,
//! deletes the Instances bound to them that do not tolerate the taint, so their
//! Workloads replace them and the scheduler places the replacements elsewhere.
//!
//! It is a reconcile function on the runtime's [`Controller`]: Nodes are the primary
//! kind, and each change of a node's Lease maps to that node. Expiry is time-driven,
//! not polled: each reconcile of a node asks to be run again at the moment its Lease
//! would expire (or an eviction falls due), and a renewal simply pushes that moment
//! back. Renewals are timed by when *this controller saw them* (a monotonic clock),
//! not by the agent's `renew_time`, so clock skew between hosts (or a `renew_time` in
//! the far future) cannot expire a live node or keep a dead one; after a leader
//! change every node gets a full Lease duration before it can be marked.
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
//! Eviction (see [`eviction_time`]): an Instance that does not tolerate the taint is
//! deleted [`NodeLifecycleConfig::eviction_grace`] after the taint's `time_added`; one
//! that tolerates it with `toleration_seconds > 0` is deleted that many seconds after
//! `time_added`; `toleration_seconds == 0` (unset) tolerates it forever, a negative
//! value not at all.

mod eviction;
mod heartbeat;
mod writes;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hypermesh_api::v1::{Instance, Lease, Node, Taint};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::controller::{self, Action, Change, Controller, Watched};
use hypermesh_runtime::events::EventRecorder;
use hypermesh_runtime::watcher;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub use self::eviction::eviction_time;
use self::eviction::is_unreachable;
use self::heartbeat::{Heartbeat, Heartbeats, lease_duration};

/// The name of this controller (logs, metrics, health).
pub const NAME: &str = "node-lifecycle";
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
            // Marking a node is ~4 sequential API calls (taint, Event, Ready=Unknown,
            // the List of its Instances); with 2 workers 100 nodes lost at once were
            // marked over ~5-10 s on a busy apiserver (docs/scaling.md). A live node's
            // reconcile makes no call, so idle workers cost nothing.
            workers: 16,
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

impl controller::ReconcileError for NodeLifecycleError {
    fn is_conflict(&self) -> bool {
        matches!(
            self,
            NodeLifecycleError::Taint { source, .. } | NodeLifecycleError::Status { source, .. }
                if source.code() == Code::Aborted
        )
    }
}

/// What reconciles share.
pub struct Ctx {
    nodes: Api<Node>,
    instances: Api<Instance>,
    recorder: EventRecorder,
    config: NodeLifecycleConfig,
    leases: hypermesh_runtime::reflector::Store<Lease>,
    heartbeats: Mutex<Heartbeats>,
    /// Instances already reported for an out-of-range toleration (one Event each).
    reported: Mutex<HashSet<String>>,
}

/// The node a heartbeat Lease belongs to: `node-<name>` → `<name>`.
pub fn node_of_lease(lease: &Lease) -> Option<&str> {
    lease
        .meta()
        .name
        .strip_prefix(NODE_LEASE_PREFIX)
        .filter(|n| !n.is_empty())
}

/// The node's unreachable taint, if it carries one.
pub fn unreachable_taint(node: &Node) -> Option<&Taint> {
    node.spec
        .as_ref()?
        .taints
        .iter()
        .find(|t| is_unreachable(t))
}

/// The node-lifecycle controller talking to the apiserver over `channel` (`identity`
/// names this replica in the Events it records), with its context; run it with
/// `controller.run(reconcile, ctx, shutdown)`.
pub fn controller(
    channel: &Channel,
    identity: &str,
    config: NodeLifecycleConfig,
) -> (Controller<Node>, Arc<Ctx>) {
    let nodes = Watched::all(Api::<Node>::new(channel.clone()));
    let leases = Watched::new(
        Api::<Lease>::new(channel.clone()),
        watcher::Config {
            namespace: NODE_LEASE_NAMESPACE.to_string(),
            ..Default::default()
        },
    );
    let workers = config.workers;
    let ctx = Arc::new(Ctx {
        nodes: Api::new(channel.clone()),
        instances: Api::new(channel.clone()),
        recorder: EventRecorder::new(Api::new(channel.clone()), SOURCE, identity),
        config,
        leases: leases.store(),
        heartbeats: Mutex::new(Heartbeats::default()),
        reported: Mutex::new(HashSet::new()),
    });
    let forget = ctx.clone();
    let controller = Controller::new(NAME, nodes)
        .watches(leases, |change: Change<'_, Lease>| {
            node_of_lease(change.object())
                .map(|node| (String::new(), node.to_string()))
                .into_iter()
                .collect()
        })
        .on_delete(move |node: &Node| forget.heartbeats().forget(&node.meta().name))
        .workers(workers);
    (controller, ctx)
}

/// Reconciles one node: notes its Lease, then keeps it live or marks it unreachable
/// and evicts what is due; asks to be run again when its state may next change.
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, NodeLifecycleError> {
    if node.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = node.meta().name.clone();
    let now = Instant::now();
    let tainted = unreachable_taint(&node).is_some();
    let heartbeat = {
        let lease = ctx
            .leases
            .get(NODE_LEASE_NAMESPACE, &format!("{NODE_LEASE_PREFIX}{name}"));
        let duration = match (&ctx.config.lease_duration_override, &lease) {
            (Some(d), _) => *d,
            (None, Some(lease)) => lease_duration(lease, ctx.config.default_lease_duration),
            (None, None) => ctx.config.default_lease_duration,
        };
        let mut heartbeats = ctx.heartbeats();
        heartbeats.observe(&name, lease.as_deref(), duration, now);
        heartbeats.judge(&name, ctx.config.startup_grace, tainted, now)
    };
    match heartbeat {
        Heartbeat::Live { until } => {
            if tainted {
                ctx.remove_taint(&node).await?;
            }
            Ok(wake_at(until))
        }
        Heartbeat::Lapsed { reason, message } => {
            let node = ctx.mark_unreachable(&node, reason, &message).await?;
            let next = ctx.evict(&node, &message).await?;
            Ok(wake_at(next))
        }
    }
}

/// Run again at `at` (plus a little slack), or only on change when there is no
/// such moment.
fn wake_at(at: Option<Instant>) -> Action {
    match at {
        Some(at) => Action::requeue(at.saturating_duration_since(Instant::now()) + WAKE_SLACK),
        None => Action::await_change(),
    }
}

impl Ctx {
    fn heartbeats(&self) -> MutexGuard<'_, Heartbeats> {
        self.heartbeats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn reported(&self) -> MutexGuard<'_, HashSet<String>> {
        self.reported.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn wake_ups_beyond_the_clock_wait_for_a_change() {
        assert_eq!(wake_at(None), Action::await_change());
        let soon = wake_at(Some(Instant::now() + Duration::from_secs(1)));
        assert!(
            soon.requeue_after()
                .is_some_and(|d| d <= Duration::from_secs(2))
        );
    }
}
