//! The workload controller: keeps `spec.replicas` Instances of each Workload's
//! template, replaces failed ones, rolls template changes out (rolling update or
//! recreate) and reports progress in the Workload's status and Events.
//!
//! It is a reconcile function on the runtime's [`Controller`]: Workloads are the
//! primary kind, and every Instance change maps to the Workload named by its
//! controller owner reference. A reconcile reads the Workload and the Instances it
//! owns from the caches, [`plan::plan`]s what to create and delete, does it, then
//! writes the status. [`expectations`] hold a Workload back until the caches show the
//! controller's own changes, so a stale cache never causes double creations.
//!
//! Only Instances carrying the Workload's uid as controller owner count as its own;
//! other Instances that merely match the selector are left alone (no adoption).

pub mod expectations;
pub mod plan;
pub mod status;
pub mod template;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hypermesh_api::v1::{DeleteRequest, Instance, Workload, WorkloadStatus};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::controller::{self, Action, Change, Controller, ObjectKey, Watched};
use hypermesh_runtime::events::{EventRecorder, EventType};
use hypermesh_runtime::reflector::{Store, key_of};
use tonic::transport::Channel;
use tonic::{Code, Status};

use expectations::Expectations;
use plan::{Deletion, Strategy, Why};
use status::{Counts, Observation};
use template::{
    controller_of, hash_of, is_available, is_deleting, is_ready, is_terminal, stamp_instance,
    template_hash,
};

/// The name of this controller (logs, metrics, health).
pub const NAME: &str = "workload";
/// The `source` of the Events this controller records.
pub const SOURCE: &str = "workload-controller";

/// Most Instances created or deleted concurrently.
const MAX_BATCH: usize = 64;

/// Why one reconcile failed; the Workload is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
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

impl controller::ReconcileError for WorkloadError {
    fn is_conflict(&self) -> bool {
        matches!(self, WorkloadError::Status { source, .. } if source.code() == Code::Aborted)
    }
}

/// What reconciles share.
pub struct Ctx {
    workloads: Api<Workload>,
    instances: Api<Instance>,
    recorder: EventRecorder,
    instance_cache: Store<Instance>,
    expectations: Arc<Expectations>,
    /// Workloads as returned by our last status write, newer than the cache until
    /// the watch delivers that write.
    written: Mutex<HashMap<ObjectKey, Arc<Workload>>>,
}

/// The key of the Workload controlling `instance`, if any.
fn owner_key(instance: &Instance) -> Option<ObjectKey> {
    controller_of(instance).map(|owner| (instance.meta().namespace.clone(), owner.name.clone()))
}

/// The workload controller talking to the apiserver over `channel` (`identity` names
/// this replica in the Events it records), with its context; run it with
/// `controller.run(reconcile, ctx, shutdown)`.
pub fn controller(channel: &Channel, identity: &str) -> (Controller<Workload>, Arc<Ctx>) {
    let workloads = Watched::all(Api::<Workload>::new(channel.clone()));
    // Indexed by controlling Workload: a sync reads its own Instances, not all of
    // them (with 600 Workloads and 50,000 Instances, the scan was most of the
    // apiserver's CPU after a load; docs/scaling.md).
    let instances = Watched::all(Api::<Instance>::new(channel.clone()))
        .indexed_by(|i| controller_of(i).map(|owner| owner.uid.clone()));
    let expectations = Arc::new(Expectations::default());
    let ctx = Arc::new(Ctx {
        workloads: Api::new(channel.clone()),
        instances: Api::new(channel.clone()),
        recorder: EventRecorder::new(Api::new(channel.clone()), SOURCE, identity),
        instance_cache: instances.store(),
        expectations: expectations.clone(),
        written: Mutex::new(HashMap::new()),
    });
    let seen = expectations.clone();
    let forget = ctx.clone();
    let controller = Controller::new(NAME, workloads)
        .watches(instances, move |change: Change<'_, Instance>| {
            let Some(key) = owner_key(change.object()) else {
                return Vec::new();
            };
            if let Change::Deleted(instance) = change {
                seen.observed_deletion(&key, &instance.meta().name);
            }
            vec![key]
        })
        .on_delete(move |workload: &Workload| {
            let key = key_of(workload);
            forget.expectations.forget(&key);
            forget.written().remove(&key);
        });
    (controller, ctx)
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

/// Reconciles one Workload.
pub async fn reconcile(workload: Arc<Workload>, ctx: Arc<Ctx>) -> Result<Action, WorkloadError> {
    let key = key_of(workload.as_ref());
    let workload = ctx.freshest(&key, workload);
    if workload.meta().deletion_timestamp.is_some() {
        // The garbage collector removes its Instances.
        return Ok(Action::await_change());
    }
    if let Some(wait) = ctx.expectations.unmet(&key, &ctx.instance_cache) {
        return Ok(Action::requeue(wait));
    }
    ctx.sync(&key, &workload).await
}

impl Ctx {
    fn written(&self) -> MutexGuard<'_, HashMap<ObjectKey, Arc<Workload>>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The freshest copy of the Workload: the cache's, or our own last write if newer.
    fn freshest(&self, key: &ObjectKey, cached: Arc<Workload>) -> Arc<Workload> {
        let mut written = self.written();
        match written.get(key) {
            Some(ours)
                if ours.meta().uid == cached.meta().uid
                    && ours.meta().resource_version > cached.meta().resource_version =>
            {
                ours.clone()
            }
            _ => {
                written.remove(key);
                cached
            }
        }
    }

    fn remember_written(&self, key: &ObjectKey, workload: Workload) {
        self.written().insert(key.clone(), Arc::new(workload));
    }

    /// Creates and deletes Instances as planned, then writes the status.
    async fn sync(
        &self,
        key: &ObjectKey,
        workload: &Arc<Workload>,
    ) -> Result<Action, WorkloadError> {
        let uid = workload.meta().uid.clone();
        let owned: Vec<Arc<Instance>> = self
            .instance_cache
            .indexed(&uid)
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
        let deleted = self
            .delete_instances(key, workload, &owned_refs, &plan.delete, &history)
            .await?;
        let (created, create_failure) = self
            .create_instances(key, workload, &hash, revision, plan.create, &owned_refs)
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
            new_revision,
            progress_deadline: u64::try_from(spec.progress_deadline_seconds)
                .ok()
                .filter(|s| *s > 0)
                .map_or(
                    status::DEFAULT_PROGRESS_DEADLINE,
                    std::time::Duration::from_secs,
                ),
        };
        let next = status::next_status(&previous, history, &seen, hypermesh_api::time::now());
        let reason_of = |s: &WorkloadStatus| {
            s.conditions
                .iter()
                .find(|c| c.r#type == status::PROGRESSING)
                .map(|c| (c.reason.clone(), c.message.clone()))
                .unwrap_or_default()
        };
        let (was, _) = reason_of(&previous);
        let (now_reason, now_message) = reason_of(&next);
        let now_complete =
            now_reason == status::ROLLOUT_COMPLETE && created == 0 && deleted.is_empty();
        let wake = status::progress_deadline_at(&next, seen.progress_deadline);
        if next != previous {
            self.write_status(key, workload, next).await?;
        }
        if now_complete && (was != status::ROLLOUT_COMPLETE || new_revision) {
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
        if now_reason == status::PROGRESS_DEADLINE_EXCEEDED
            && was != status::PROGRESS_DEADLINE_EXCEEDED
        {
            self.recorder
                .record(
                    workload.as_ref(),
                    EventType::Warning,
                    status::PROGRESS_DEADLINE_EXCEEDED,
                    now_message,
                )
                .await;
        }
        if let (None, Some(at)) = (&create_failure, wake) {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            return Ok(Action::requeue(
                left + std::time::Duration::from_millis(100),
            ));
        }
        match create_failure {
            Some(err) => Err(err),
            None => Ok(Action::await_change()),
        }
    }

    async fn write_status(
        &self,
        key: &ObjectKey,
        workload: &Workload,
        next: WorkloadStatus,
    ) -> Result<(), WorkloadError> {
        let mut updated = workload.clone();
        updated.status = Some(next);
        // Carries the resource_version read: a compare-and-swap.
        match self.workloads.update_status(&updated).await {
            Ok(written) => {
                self.remember_written(key, written);
                Ok(())
            }
            Err(source) if source.code() == Code::NotFound => Ok(()),
            Err(source) => Err(WorkloadError::Status {
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
    ) -> Result<HashSet<String>, WorkloadError> {
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
                        failure.get_or_insert(WorkloadError::Delete {
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
    ) -> (usize, Option<WorkloadError>) {
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
                        failure.get_or_insert(WorkloadError::Create {
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
