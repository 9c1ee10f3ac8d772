//! Garbage collection (owner references) and namespace deletion, as reconcile
//! functions on the runtime's [`Controller`], talking to the API like any client.
//! It runs inside the apiserver process, in every apiserver (not leader-elected:
//! its deletes are idempotent), whether or not the other controllers run there.
//!
//! One controller per kind keeps a metadata-only cache of that kind and reconciles
//! each object:
//! - an object whose owners are all gone is deleted in the background (honouring its
//!   finalizers): cascading deletion. "Gone" is confirmed with a live read of each
//!   owner (caches of different kinds are not in step), and the delete is
//!   conditional on the object being unchanged since a live read of it, so an object
//!   orphaned meanwhile (`PropagationPolicy::Orphan`) is never collected;
//! - a Namespace marked for deletion has everything in it deleted, and once nothing
//!   is left (confirmed by live listings) its finalizer is removed so it goes too.
//!
//! An index of owner uid → dependents, kept from reconciles, turns the deletion of
//! an owner into reconciles of its dependents (of any kind) through [`Trigger`]s;
//! the deletion of anything in a terminating namespace re-runs that namespace.

mod kinds;
mod namespaces;
mod owners;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::FutureExt;
use futures::future::BoxFuture;
use hypermesh_api::v1::{self, Namespace, ObjectMeta};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::controller::{
    self, Action, Controller, ControllerMetrics, ObjectKey, Trigger, Watched,
};
use hypermesh_runtime::health::Health;
use hypermesh_runtime::reflector::key_of;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

use self::kinds::{KindClient, KindOps};

/// Prefix of the collectors' names (`gc/workloads`, ...).
pub const NAME_PREFIX: &str = "gc/";

/// Why one reconcile of the collector failed; the object is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Reading an object (an owner, or the dependent itself) failed.
    #[error("cannot read {kind} {namespace}/{name}: {source}")]
    Read {
        /// The kind.
        kind: String,
        /// Its namespace (empty when cluster-scoped).
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Deleting an object failed (a conflict when it changed meanwhile).
    #[error("cannot delete {kind} {namespace}/{name}: {source}")]
    Delete {
        /// The kind.
        kind: String,
        /// Its namespace (empty when cluster-scoped).
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Listing what is left in a namespace failed.
    #[error("cannot list {kind} in namespace {namespace}: {source}")]
    List {
        /// The kind.
        kind: String,
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Removing a Namespace's finalizer failed.
    #[error("cannot finalize namespace {namespace}: {source}")]
    Finalize {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: Status,
    },
}

impl controller::ReconcileError for GcError {
    fn is_conflict(&self) -> bool {
        let source = match self {
            GcError::Read { source, .. }
            | GcError::Delete { source, .. }
            | GcError::List { source, .. }
            | GcError::Finalize { source, .. } => source,
        };
        source.code() == Code::Aborted
    }
}

/// Owner uid → the objects naming it, and the reverse, from reconciles.
#[derive(Debug, Default)]
struct OwnerIndex {
    dependents: HashMap<String, HashSet<(&'static str, ObjectKey)>>,
    owners: HashMap<(&'static str, ObjectKey), Vec<String>>,
}

impl OwnerIndex {
    fn set(&mut self, kind: &'static str, key: &ObjectKey, owners: Vec<String>) {
        self.remove(kind, key);
        if owners.is_empty() {
            return;
        }
        for uid in &owners {
            self.dependents
                .entry(uid.clone())
                .or_default()
                .insert((kind, key.clone()));
        }
        self.owners.insert((kind, key.clone()), owners);
    }

    fn remove(&mut self, kind: &'static str, key: &ObjectKey) {
        let Some(owners) = self.owners.remove(&(kind, key.clone())) else {
            return;
        };
        for uid in owners {
            if let Some(set) = self.dependents.get_mut(&uid) {
                set.remove(&(kind, key.clone()));
                if set.is_empty() {
                    self.dependents.remove(&uid);
                }
            }
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<(&'static str, ObjectKey)> {
        self.dependents
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// What every collector shares.
pub struct Gc {
    kinds: HashMap<&'static str, Arc<dyn KindOps>>,
    triggers: HashMap<&'static str, Trigger>,
    namespaces: Api<Namespace>,
    index: Mutex<OwnerIndex>,
    /// Namespaces marked for deletion, as last reconciled.
    terminating: Mutex<HashSet<String>>,
}

impl Gc {
    fn index(&self) -> MutexGuard<'_, OwnerIndex> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn terminating(&self) -> MutexGuard<'_, HashSet<String>> {
        self.terminating
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn kind(&self, kind: &str) -> Option<&Arc<dyn KindOps>> {
        self.kinds.get(kind)
    }

    fn trigger(&self, kind: &str, key: ObjectKey) {
        if let Some(trigger) = self.triggers.get(kind) {
            trigger.trigger(key);
        }
    }

    /// An object of `kind` is gone: its dependents and (when it was in a namespace
    /// being deleted) that namespace are looked at again.
    fn deleted(&self, kind: &'static str, meta: &ObjectMeta) {
        let key = (meta.namespace.clone(), meta.name.clone());
        let dependents = {
            let mut index = self.index();
            index.remove(kind, &key);
            index.dependents_of(&meta.uid)
        };
        for (dependent_kind, dependent) in dependents {
            self.trigger(dependent_kind, dependent);
        }
        if kind == Namespace::KIND {
            self.terminating().remove(&meta.name);
        } else if !meta.namespace.is_empty() && self.terminating().contains(&meta.namespace) {
            self.trigger(Namespace::KIND, (String::new(), meta.namespace.clone()));
        }
    }
}

/// Keeps only the metadata: all the collector reads.
fn metadata_only<K: Resource>(object: K) -> K {
    let mut kept = K::default();
    *kept.meta_mut() = object.meta().clone();
    kept
}

/// Reconciles one object of kind `K`.
pub async fn reconcile<K: Resource>(object: Arc<K>, gc: Arc<Gc>) -> Result<Action, GcError> {
    let meta = object.meta();
    let key = key_of(object.as_ref());
    gc.index().set(
        K::KIND,
        &key,
        meta.owner_references
            .iter()
            .map(|r| r.uid.clone())
            .collect(),
    );
    if K::KIND == Namespace::KIND {
        return namespaces::reconcile(meta, &gc).await;
    }
    if K::NAMESPACED && gc.terminating().contains(&meta.namespace) {
        return namespaces::reconcile_member(K::KIND, meta, &gc).await;
    }
    if meta.deletion_timestamp.is_some() || meta.owner_references.is_empty() {
        return Ok(Action::await_change());
    }
    owners::collect_if_orphaned(K::KIND, meta, &gc).await
}

type Runner = Box<dyn FnOnce(Arc<Gc>) -> BoxFuture<'static, ()> + Send>;

/// The collectors being assembled: one per kind.
struct Assembly {
    channel: Channel,
    kinds: HashMap<&'static str, Arc<dyn KindOps>>,
    triggers: HashMap<&'static str, Trigger>,
    runners: Vec<Runner>,
    health: Health,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
}

impl Assembly {
    fn add<K: Resource>(&mut self) {
        let api = Api::<K>::new(self.channel.clone());
        let watched = Watched::all(api.clone()).project(metadata_only::<K>);
        self.kinds.insert(
            K::KIND,
            Arc::new(KindClient {
                api,
                store: watched.store(),
            }),
        );
        let trigger = Trigger::new();
        self.triggers.insert(K::KIND, trigger.clone());
        let (health, metrics, shutdown) = (
            self.health.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        self.runners.push(Box::new(move |gc: Arc<Gc>| {
            let hook = gc.clone();
            Controller::new(format!("{NAME_PREFIX}{}", K::PLURAL), watched)
                .reconcile_on(trigger)
                .on_delete(move |object: &K| hook.deleted(K::KIND, object.meta()))
                .health(health)
                .metrics(metrics)
                .run(reconcile::<K>, gc, shutdown)
                .boxed()
        }));
    }
}

/// Runs the collectors against the apiserver behind `channel` until `shutdown`,
/// reporting into `health` and `metrics`.
pub async fn run_with(
    channel: Channel,
    health: Health,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let mut assembly = Assembly {
        channel: channel.clone(),
        kinds: HashMap::new(),
        triggers: HashMap::new(),
        runners: Vec::new(),
        health,
        metrics,
        shutdown,
    };
    macro_rules! add_kind {
        ($ty:ident) => {
            assembly.add::<v1::$ty>();
        };
    }
    hypermesh_api::for_each_kind!(add_kind);
    let gc = Arc::new(Gc {
        kinds: assembly.kinds,
        triggers: assembly.triggers,
        namespaces: Api::new(channel),
        index: Mutex::new(OwnerIndex::default()),
        terminating: Mutex::new(HashSet::new()),
    });
    let runs = assembly.runners.into_iter().map(|run| run(gc.clone()));
    futures::future::join_all(runs).await;
}

/// [`run_with`], reporting into this process's health and metrics.
pub async fn run(channel: Channel, shutdown: CancellationToken) {
    run_with(
        channel,
        Health::process(),
        ControllerMetrics::process(),
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ("default".to_string(), name.to_string())
    }

    #[test]
    fn the_index_maps_owners_to_dependents_and_forgets_them() {
        let mut index = OwnerIndex::default();
        index.set("Instance", &key("a"), vec!["w1".into()]);
        index.set("Instance", &key("b"), vec!["w1".into(), "w2".into()]);
        let mut of_w1 = index.dependents_of("w1");
        of_w1.sort();
        assert_eq!(of_w1, [("Instance", key("a")), ("Instance", key("b"))]);
        // Re-indexing replaces the old owners.
        index.set("Instance", &key("b"), vec!["w2".into()]);
        assert_eq!(index.dependents_of("w1"), [("Instance", key("a"))]);
        index.remove("Instance", &key("a"));
        assert!(index.dependents_of("w1").is_empty());
        index.set("Instance", &key("b"), Vec::new());
        assert!(index.dependents.is_empty() && index.owners.is_empty());
    }

    #[test]
    fn only_metadata_is_cached() {
        let w = v1::Workload {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                uid: "u".into(),
                ..Default::default()
            }),
            spec: Some(v1::WorkloadSpec {
                replicas: 3,
                ..Default::default()
            }),
            status: Some(v1::WorkloadStatus::default()),
        };
        let kept = metadata_only(w.clone());
        assert_eq!(kept.metadata, w.metadata);
        assert!(kept.spec.is_none() && kept.status.is_none());
    }
}
