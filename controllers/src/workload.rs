//! The workload controller: keeps `spec.replicas` Instances of each Workload's
//! template, replaces failed ones, rolls template changes out (rolling update or
//! recreate) and reports progress in the Workload's status and Events.
//!
//! Two watchers (Workloads, Instances) fill reflector caches and feed a work queue of
//! Workload keys; an Instance maps to the Workload named by its controller owner
//! reference. Workers reconcile one key at a time: read the Workload and the Instances
//! it owns from the caches, [`plan::plan`] what to create and delete, do it, then
//! write the status. [`expectations`] hold a Workload back until the caches show the
//! controller's own changes, so a stale cache never causes double creations.
//!
//! Only Instances carrying the Workload's uid as controller owner count as its own;
//! other Instances that merely match the selector are left alone (no adoption).

pub mod expectations;
pub mod plan;
pub mod status;
pub mod template;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use hypermesh_api::v1::{DeleteRequest, Instance, Workload, WorkloadStatus};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::queue::{Backoff, WorkQueue};
use hypermesh_runtime::reflector::{self, ObjectKey, Store, key_of};
use hypermesh_runtime::watcher::{self, Event as WatchEvent, WatcherError};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::{debug, info, warn};

use crate::events::{EventRecorder, EventType};
use expectations::Expectations;
use plan::{Deletion, Strategy, Why};
use status::{Counts, Observation};
use template::{
    controller_of, hash_of, is_available, is_deleting, is_ready, is_terminal, stamp_instance,
    template_hash,
};

/// The `source` of the Events this controller records.
pub const SOURCE: &str = "workload-controller";

/// Most Instances created or deleted concurrently.
const MAX_BATCH: usize = 64;

/// How long workers get to finish their current Workload on shutdown.
const WORKER_GRACE: Duration = Duration::from_secs(5);

/// Why one reconcile failed; the Workload is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Creating an Instance failed.
    #[error("cannot create instance {instance}: {source}")]
    Create {
        /// The Instance's name.
        instance: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Deleting an Instance failed.
    #[error("cannot delete instance {instance}: {source}")]
    Delete {
        /// The Instance's name.
        instance: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Writing the Workload's status failed (a conflict when it changed meanwhile).
    #[error("cannot update the status of workload {workload}: {source}")]
    Status {
        /// The Workload's name.
        workload: String,
        /// The API error.
        #[source]
        source: Status,
    },
}

/// The workload controller.
#[derive(Debug, Clone)]
pub struct WorkloadController {
    workloads: Api<Workload>,
    instances: Api<Instance>,
    recorder: EventRecorder,
    workers: usize,
}

/// What the workers share.
struct Shared {
    workloads: Api<Workload>,
    instances: Api<Instance>,
    recorder: EventRecorder,
    workload_cache: Store<Workload>,
    instance_cache: Store<Instance>,
    queue: WorkQueue<ObjectKey>,
    expectations: Expectations,
    /// Workloads as returned by our last status write, newer than the cache until
    /// the watch delivers that write.
    written: Mutex<HashMap<ObjectKey, Arc<Workload>>>,
}

impl WorkloadController {
    /// A controller talking to the apiserver over `channel`; `identity` names this
    /// replica in the Events it records; `workers` Workloads are reconciled at once.
    pub fn new(channel: Channel, identity: &str, workers: usize) -> Self {
        WorkloadController {
            workloads: Api::new(channel.clone()),
            instances: Api::new(channel.clone()),
            recorder: EventRecorder::new(Api::new(channel), SOURCE, identity),
            workers: workers.max(1),
        }
    }

    /// Runs until `shutdown`: watches, caches, and reconciles every Workload.
    pub async fn run(self, shutdown: CancellationToken) {
        let (workload_writer, workload_cache) = reflector::store::<Workload>();
        let (instance_writer, instance_cache) = reflector::store::<Instance>();
        let shared = Arc::new(Shared {
            workloads: self.workloads.clone(),
            instances: self.instances.clone(),
            recorder: self.recorder,
            workload_cache: workload_cache.clone(),
            instance_cache: instance_cache.clone(),
            queue: WorkQueue::new(Backoff::default()),
            expectations: Expectations::default(),
            written: Mutex::new(HashMap::new()),
        });

        let workload_events = reflector::reflector(
            workload_writer,
            watcher::watcher(self.workloads, watcher::Config::default()),
        );
        let instance_events = reflector::reflector(
            instance_writer,
            watcher::watcher(self.instances, watcher::Config::default()),
        );
        let feeds = [
            tokio::spawn(feed_workloads(workload_events, shared.clone())),
            tokio::spawn(feed_instances(instance_events, shared.clone())),
        ];

        let ready = async {
            workload_cache.wait_ready().await;
            instance_cache.wait_ready().await;
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = ready => {
                info!(workers = self.workers, "workload controller started");
                let workers: Vec<_> = (0..self.workers)
                    .map(|_| tokio::spawn(work(shared.clone(), shutdown.clone())))
                    .collect();
                shutdown.cancelled().await;
                shared.queue.shut_down();
                let all = futures::future::join_all(workers);
                if tokio::time::timeout(WORKER_GRACE, all).await.is_err() {
                    warn!("workload workers did not finish in time");
                }
            }
        }
        shared.queue.shut_down();
        for feed in feeds {
            feed.abort();
        }
        info!("workload controller stopped");
    }
}

fn log_watch_error(kind: &str, err: &WatcherError) {
    warn!(kind, error = %err, "watch failed; retrying");
}

async fn feed_workloads(
    events: impl Stream<Item = Result<WatchEvent<Workload>, WatcherError>>,
    shared: Arc<Shared>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Restarted(all)) => all.iter().for_each(|w| shared.queue.add(key_of(w))),
            Ok(WatchEvent::Applied(w) | WatchEvent::Deleted(w)) => shared.queue.add(key_of(&w)),
            Err(err) => log_watch_error(Workload::KIND, &err),
        }
    }
}

/// The key of the Workload controlling `instance`, if any.
fn owner_key(instance: &Instance) -> Option<ObjectKey> {
    controller_of(instance).map(|owner| (instance.meta().namespace.clone(), owner.name.clone()))
}

async fn feed_instances(
    events: impl Stream<Item = Result<WatchEvent<Instance>, WatcherError>>,
    shared: Arc<Shared>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Restarted(all)) => {
                for key in all.iter().filter_map(owner_key) {
                    shared.queue.add(key);
                }
            }
            Ok(WatchEvent::Applied(instance)) => {
                if let Some(key) = owner_key(&instance) {
                    shared.queue.add(key);
                }
            }
            Ok(WatchEvent::Deleted(instance)) => {
                if let Some(key) = owner_key(&instance) {
                    shared
                        .expectations
                        .observed_deletion(&key, &instance.meta().name);
                    shared.queue.add(key);
                }
            }
            Err(err) => log_watch_error(Instance::KIND, &err),
        }
    }
}

async fn work(shared: Arc<Shared>, shutdown: CancellationToken) {
    while let Some(key) = shared.queue.next().await {
        if shutdown.is_cancelled() {
            shared.queue.done(key, true);
            break;
        }
        match shared.reconcile(&key, &shutdown).await {
            Ok(None) => shared.queue.done(key, true),
            Ok(Some(after)) => {
                shared.queue.done(key.clone(), true);
                shared.queue.add_after(key, after);
            }
            Err(err) => {
                let conflict = matches!(&err, ReconcileError::Status { source, .. } if source.code() == Code::Aborted);
                if conflict {
                    debug!(namespace = %key.0, workload = %key.1, error = %err, "status conflict; retrying");
                } else {
                    warn!(namespace = %key.0, workload = %key.1, error = %err, "reconcile failed; retrying");
                }
                shared.queue.done(key, false);
            }
        }
    }
}

/// Revision number of template `hash` for messages: `revision 3`, or the hash when
/// the history no longer has it.
fn revision_label(history: &[hypermesh_api::v1::WorkloadRevision], hash: &str) -> String {
    match status::revision_of(history, hash) {
        Some(n) => format!("revision {n}"),
        None if hash.is_empty() => "unlabelled instances".to_string(),
        None => format!("template {hash}"),
    }
}

fn list_names(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

impl Shared {
    /// The freshest copy of the Workload: the cache's, or our own last write if newer.
    fn workload(&self, key: &ObjectKey) -> Option<Arc<Workload>> {
        let cached = self.workload_cache.get(&key.0, &key.1);
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(cached) = cached else {
            written.remove(key);
            return None;
        };
        match written.get(key) {
            Some(ours)
                if ours.meta().uid == cached.meta().uid
                    && ours.meta().resource_version > cached.meta().resource_version =>
            {
                Some(ours.clone())
            }
            _ => {
                written.remove(key);
                Some(cached)
            }
        }
    }

    fn remember_written(&self, key: &ObjectKey, workload: Workload) {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), Arc::new(workload));
    }

    /// Reconciles one Workload; `Ok(Some(delay))` asks to look again after `delay`.
    async fn reconcile(
        &self,
        key: &ObjectKey,
        shutdown: &CancellationToken,
    ) -> Result<Option<Duration>, ReconcileError> {
        let Some(workload) = self.workload(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        if workload.meta().deletion_timestamp.is_some() {
            // The garbage collector removes its Instances.
            return Ok(None);
        }
        if let Some(wait) = self.expectations.unmet(key, &self.instance_cache) {
            return Ok(Some(wait));
        }
        let uid = workload.meta().uid.clone();
        let owned: Vec<Arc<Instance>> = self
            .instance_cache
            .list()
            .into_iter()
            .filter(|i| {
                i.meta().namespace == key.0 && controller_of(i).is_some_and(|o| o.uid == uid)
            })
            .collect();
        let owned_refs: Vec<&Instance> = owned.iter().map(AsRef::as_ref).collect();

        let spec = workload.spec.clone().unwrap_or_default();
        let template = spec.template.clone().unwrap_or_default();
        let hash = template_hash(&template);
        let replicas = usize::try_from(spec.replicas).unwrap_or(0);
        let strategy = Strategy::of(&spec);
        let previous = workload.status.clone().unwrap_or_default();
        let limit = usize::try_from(spec.revision_history_limit)
            .ok()
            .filter(|l| *l > 0)
            .unwrap_or(status::DEFAULT_HISTORY_LIMIT);
        let mut history = previous.history.clone();
        let (revision, new_revision) = status::record_revision(
            &mut history,
            &hash,
            &template,
            limit,
            hypermesh_api::time::now(),
        );
        let has_old = owned_refs.iter().any(|i| hash_of(i) != hash);
        if new_revision && has_old {
            let how = match strategy {
                Strategy::RollingUpdate {
                    max_surge,
                    max_unavailable,
                } => format!(
                    "rolling update, maxSurge {max_surge}, maxUnavailable {max_unavailable}"
                ),
                Strategy::Recreate => "recreate".to_string(),
            };
            self.recorder
                .record(
                    workload.as_ref(),
                    EventType::Normal,
                    "RolloutStarted",
                    format!("Rolling out revision {revision} (template {hash}): {how}"),
                )
                .await;
        }

        let plan = plan::plan(replicas, strategy, &hash, &owned_refs);
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let deleted = self
            .delete_instances(key, &workload, &owned_refs, &plan.delete, &history)
            .await?;
        let (created, create_failure) = self
            .create_instances(key, &workload, &hash, revision, plan.create, &owned_refs)
            .await;

        // Status from what the cache shows, minus what this pass deleted.
        let live = owned_refs
            .iter()
            .filter(|i| !is_deleting(i) && !is_terminal(i) && !deleted.contains(&i.meta().name));
        let mut counts = Counts::default();
        for i in live {
            counts.total += 1;
            counts.ready += usize::from(is_ready(i));
            counts.available += usize::from(is_available(i));
            counts.updated += usize::from(hash_of(i) == hash);
        }
        let seen = Observation {
            name: &key.1,
            generation: workload.meta().generation,
            replicas,
            max_unavailable: strategy.max_unavailable(),
            counts,
            revision,
            create_failure: create_failure.as_ref().map(ToString::to_string),
        };
        let next = status::next_status(&previous, history, &seen, hypermesh_api::time::now());
        let was_complete = previous
            .conditions
            .iter()
            .any(|c| c.r#type == status::PROGRESSING && c.reason == status::ROLLOUT_COMPLETE);
        let now_complete = seen.complete() && created == 0 && deleted.is_empty();
        if next != previous {
            self.write_status(key, &workload, next).await?;
        }
        if now_complete && (!was_complete || new_revision) {
            self.recorder
                .record(
                    workload.as_ref(),
                    EventType::Normal,
                    "RolloutComplete",
                    format!(
                        "Revision {revision} is rolled out: {} of {replicas} instances available",
                        counts.available
                    ),
                )
                .await;
        }
        match create_failure {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }

    async fn write_status(
        &self,
        key: &ObjectKey,
        workload: &Workload,
        next: WorkloadStatus,
    ) -> Result<(), ReconcileError> {
        let mut updated = workload.clone();
        updated.status = Some(next);
        // Carries the resource_version read: a compare-and-swap.
        match self.workloads.update_status(&updated).await {
            Ok(written) => {
                self.remember_written(key, written);
                Ok(())
            }
            Err(source) if source.code() == Code::NotFound => Ok(()),
            Err(source) => Err(ReconcileError::Status {
                workload: key.1.clone(),
                source,
            }),
        }
    }

    /// Deletes `deletions` (in concurrent batches) and records Events; returns the
    /// names deleted (or already gone).
    async fn delete_instances(
        &self,
        key: &ObjectKey,
        workload: &Workload,
        owned: &[&Instance],
        deletions: &[Deletion],
        history: &[hypermesh_api::v1::WorkloadRevision],
    ) -> Result<HashSet<String>, ReconcileError> {
        if deletions.is_empty() {
            return Ok(HashSet::new());
        }
        for d in deletions.iter().filter(|d| d.why == Why::Terminal) {
            let phase = owned
                .iter()
                .find(|i| i.meta().name == d.name)
                .map(|i| template::phase_of(i).as_str_name())
                .unwrap_or("FAILED");
            self.recorder
                .record(
                    workload,
                    EventType::Warning,
                    "InstanceFailed",
                    format!("Instance {} is {phase}; deleting it to replace it", d.name),
                )
                .await;
        }
        self.expectations
            .expect(key, [], deletions.iter().map(|d| d.name.clone()));
        let mut deleted = HashSet::new();
        let mut failure = None;
        for batch in deletions.chunks(MAX_BATCH) {
            let results = futures::future::join_all(batch.iter().map(|d| {
                self.instances.delete(DeleteRequest {
                    namespace: key.0.clone(),
                    name: d.name.clone(),
                    ..Default::default()
                })
            }))
            .await;
            for (d, result) in batch.iter().zip(results) {
                match result {
                    Ok(_) => {
                        deleted.insert(d.name.clone());
                    }
                    Err(status) if status.code() == Code::NotFound => {
                        deleted.insert(d.name.clone());
                    }
                    Err(source) => {
                        self.expectations.observed_deletion(key, &d.name);
                        failure.get_or_insert(ReconcileError::Delete {
                            instance: d.name.clone(),
                            source,
                        });
                    }
                }
            }
            if failure.is_some() {
                // The rest stay expected until they lapse; forget them now instead.
                for d in deletions {
                    if !deleted.contains(&d.name) {
                        self.expectations.observed_deletion(key, &d.name);
                    }
                }
                break;
            }
        }

        // One Event per revision scaled down, like "Scaled down revision 1 to 2".
        let mut by_revision: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for d in deletions
            .iter()
            .filter(|d| d.why != Why::Terminal && deleted.contains(&d.name))
        {
            by_revision.entry(&d.hash).or_default().push(d.name.clone());
        }
        for (hash, names) in by_revision {
            let left = owned
                .iter()
                .filter(|i| {
                    hash_of(i) == hash
                        && !is_deleting(i)
                        && !is_terminal(i)
                        && !deleted.contains(&i.meta().name)
                })
                .count();
            self.recorder
                .record(
                    workload,
                    EventType::Normal,
                    "ScalingDown",
                    format!(
                        "Scaled down {} to {left} instances: deleted {}",
                        revision_label(history, hash),
                        list_names(&names)
                    ),
                )
                .await;
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(deleted),
        }
    }

    /// Creates `count` Instances of the current template in slow-start batches (1, 2,
    /// 4, ... at once) that stop at the first failure; returns how many were created
    /// and the failure, if any.
    async fn create_instances(
        &self,
        key: &ObjectKey,
        workload: &Workload,
        hash: &str,
        revision: i64,
        count: usize,
        owned: &[&Instance],
    ) -> (usize, Option<ReconcileError>) {
        let Some(template) = workload.spec.as_ref().and_then(|s| s.template.as_ref()) else {
            return (0, None);
        };
        let mut created = Vec::new();
        let mut failure = None;
        let mut batch = 1;
        while created.len() < count && failure.is_none() {
            let size = batch.min(count - created.len());
            let instances: Vec<Instance> = (0..size)
                .map(|_| stamp_instance(workload, template, hash))
                .collect();
            self.expectations
                .expect(key, instances.iter().map(|i| i.meta().name.clone()), []);
            let results =
                futures::future::join_all(instances.iter().map(|i| self.instances.create(i))).await;
            for (instance, result) in instances.iter().zip(results) {
                let name = &instance.meta().name;
                match result {
                    Ok(_) => created.push(name.clone()),
                    Err(source) => {
                        self.expectations.creation_failed(key, name);
                        failure.get_or_insert(ReconcileError::Create {
                            instance: name.clone(),
                            source,
                        });
                    }
                }
            }
            batch = (batch * 2).min(MAX_BATCH);
        }
        if !created.is_empty() {
            let have = owned
                .iter()
                .filter(|i| hash_of(i) == hash && !is_deleting(i) && !is_terminal(i))
                .count()
                + created.len();
            self.recorder
                .record(
                    workload,
                    EventType::Normal,
                    "ScalingUp",
                    format!(
                        "Scaled up revision {revision} to {have} instances: created {}",
                        list_names(&created)
                    ),
                )
                .await;
        }
        if let Some(err) = &failure {
            self.recorder
                .record(
                    workload,
                    EventType::Warning,
                    "FailedCreate",
                    format!("Cannot create instances: {err}"),
                )
                .await;
        }
        (created.len(), failure)
    }
}
