//! A Workload's status as the controller writes it: replica counts, the
//! `Available`, `Progressing` and `ReplicaFailure` conditions, and the revision
//! history `hmctl rollout history|undo` reads.

use hypermesh_api::conditions::{self, set_condition};
use hypermesh_api::v1::{Condition, InstanceTemplate, WorkloadRevision, WorkloadStatus};
use pbjson_types::Timestamp;

/// Old revisions kept when `spec.revisionHistoryLimit` is not set.
pub const DEFAULT_HISTORY_LIMIT: usize = 10;

/// `Available`: at least `replicas - maxUnavailable` Instances are available.
pub const AVAILABLE: &str = "Available";
/// `Progressing`: a rollout is under way (`RolloutInProgress`) or done
/// (`NewRevisionAvailable`).
pub const PROGRESSING: &str = "Progressing";
/// `ReplicaFailure`: Instances cannot be created.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Reason of `Progressing` once every replica runs the current revision.
pub const ROLLOUT_COMPLETE: &str = "NewRevisionAvailable";
/// Reason of `Progressing` while Instances are being replaced or started.
pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
/// Reason of `Progressing=False`: the rollout made no progress within
/// `spec.progressDeadlineSeconds`.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// `spec.progressDeadlineSeconds` when unset.
pub const DEFAULT_PROGRESS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// Instance counts over the Workload's live (not terminal, not deleting) Instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// All of them.
    pub total: usize,
    /// With `Ready=True`.
    pub ready: usize,
    /// Of the current template.
    pub updated: usize,
    /// Running and ready.
    pub available: usize,
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Makes `template` (hashed `hash`) the newest entry of `history`: appended with the
/// next revision number when new, moved to the end with a new number when an old
/// revision comes back (rollback). Keeps the current entry plus `limit` older ones.
/// Returns the current revision and whether it changed.
pub fn record_revision(
    history: &mut Vec<WorkloadRevision>,
    hash: &str,
    template: &InstanceTemplate,
    limit: usize,
    now: Timestamp,
) -> (i64, bool) {
    if let Some(last) = history.last()
        && last.template_hash == hash
    {
        return (last.revision, false);
    }
    let next = history.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    history.retain(|r| r.template_hash != hash);
    history.push(WorkloadRevision {
        revision: next,
        template_hash: hash.to_string(),
        template: Some(template.clone()),
        created: Some(now),
    });
    let excess = history.len().saturating_sub(limit + 1);
    history.drain(..excess);
    (next, true)
}

/// The revision number recorded for template `hash`, if any.
pub fn revision_of(history: &[WorkloadRevision], hash: &str) -> Option<i64> {
    history
        .iter()
        .find(|r| r.template_hash == hash)
        .map(|r| r.revision)
}

fn condition(kind: &str, ok: bool, reason: &str, message: String) -> Condition {
    conditions::condition(kind, conditions::status_of(ok), reason, message)
}

/// What the status is computed from.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The Workload's name, for messages.
    pub name: &'a str,
    /// `metadata.generation` reconciled.
    pub generation: i64,
    /// `spec.replicas`.
    pub replicas: usize,
    /// Instances allowed to be unavailable.
    pub max_unavailable: usize,
    /// The counts.
    pub counts: Counts,
    /// The current revision number.
    pub revision: i64,
    /// Why creating Instances failed in this reconcile, if it did.
    pub create_failure: Option<String>,
    /// The template changed in this reconcile (a new rollout starts).
    pub new_revision: bool,
    /// How long the rollout may go without progress.
    pub progress_deadline: std::time::Duration,
}

impl Observation<'_> {
    /// True when every replica runs the current template and is available.
    pub fn complete(&self) -> bool {
        let c = self.counts;
        c.updated == self.replicas && c.total == self.replicas && c.available == self.replicas
    }
}

/// The next status from the previous one (whose history was already updated).
pub fn next_status(
    previous: &WorkloadStatus,
    history: Vec<WorkloadRevision>,
    seen: &Observation<'_>,
    now: Timestamp,
) -> WorkloadStatus {
    let c = seen.counts;
    let mut conditions = previous.conditions.clone();
    let min_available = seen.replicas.saturating_sub(seen.max_unavailable);
    let available = c.available >= min_available;
    set_condition(
        &mut conditions,
        condition(
            AVAILABLE,
            available,
            if available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            format!(
                "{} of {} instances available (at least {min_available} required)",
                c.available, seen.replicas
            ),
        ),
        now,
    );
    let (progressing, since) = progressing(previous, seen, now);
    set_condition(&mut conditions, progressing, now);
    if let Some(since) = since
        && let Some(c) = conditions.iter_mut().find(|c| c.r#type == PROGRESSING)
    {
        c.last_transition_time = Some(since);
    }
    match &seen.create_failure {
        Some(message) => {
            set_condition(
                &mut conditions,
                condition(REPLICA_FAILURE, true, "FailedCreate", message.clone()),
                now,
            );
        }
        None => conditions.retain(|c| c.r#type != REPLICA_FAILURE),
    }
    WorkloadStatus {
        observed_generation: seen.generation,
        replicas: to_i32(c.total),
        ready_replicas: to_i32(c.ready),
        updated_replicas: to_i32(c.updated),
        available_replicas: to_i32(c.available),
        conditions,
        history,
    }
}

/// The `Progressing` condition, and for a rollout under way the time of its last
/// progress. Complete once every replica runs the revision and is available, and it
/// stays so while the revision and replica count hold (Instances crashing later show
/// in `Available`, not as a new rollout). A rollout whose counts have not moved for
/// the deadline is `False` / `ProgressDeadlineExceeded`.
fn progressing(
    previous: &WorkloadStatus,
    seen: &Observation<'_>,
    now: Timestamp,
) -> (Condition, Option<Timestamp>) {
    let c = seen.counts;
    let before = previous.conditions.iter().find(|c| c.r#type == PROGRESSING);
    let was = |reason: &str| before.is_some_and(|b| b.reason == reason);
    let settled = was(ROLLOUT_COMPLETE)
        && !seen.new_revision
        && c.updated == seen.replicas
        && c.total == seen.replicas;
    if seen.complete() || settled {
        let message = format!(
            "Workload {:?} revision {} is rolled out",
            seen.name, seen.revision
        );
        return (
            condition(PROGRESSING, true, ROLLOUT_COMPLETE, message),
            None,
        );
    }
    let moved = seen.new_revision
        || to_i32(c.updated) != previous.updated_replicas
        || to_i32(c.available) != previous.available_replicas
        || !(was(ROLLOUT_IN_PROGRESS) || was(PROGRESS_DEADLINE_EXCEEDED));
    let since = match before.and_then(|b| b.last_transition_time) {
        Some(t) if !moved => t,
        _ => now,
    };
    let stalled = hypermesh_api::time::to_system_time(&now)
        .duration_since(hypermesh_api::time::to_system_time(&since))
        .is_ok_and(|d| d >= seen.progress_deadline);
    if stalled {
        let message = format!(
            "Workload {:?} revision {} made no progress for {}s: {} of {} instances updated, {} available",
            seen.name,
            seen.revision,
            seen.progress_deadline.as_secs(),
            c.updated,
            seen.replicas,
            c.available
        );
        let condition = condition(PROGRESSING, false, PROGRESS_DEADLINE_EXCEEDED, message);
        return (condition, None);
    }
    let message = format!(
        "Workload {:?} is rolling out revision {}: {} of {} instances updated, {} available",
        seen.name, seen.revision, c.updated, seen.replicas, c.available
    );
    (
        condition(PROGRESSING, true, ROLLOUT_IN_PROGRESS, message),
        Some(since),
    )
}

/// When a rollout under way runs out of time, from its `Progressing` condition.
pub fn progress_deadline_at(
    status: &WorkloadStatus,
    deadline: std::time::Duration,
) -> Option<std::time::SystemTime> {
    let c = status
        .conditions
        .iter()
        .find(|c| c.r#type == PROGRESSING && c.reason == ROLLOUT_IN_PROGRESS)?;
    hypermesh_api::time::to_system_time(c.last_transition_time.as_ref()?).checked_add(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Timestamp {
        Timestamp { seconds, nanos: 0 }
    }

    fn template(image: &str) -> InstanceTemplate {
        InstanceTemplate {
            annotations: [("image".to_string(), image.to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn history_appends_moves_back_and_trims() {
        let mut h = Vec::new();
        assert_eq!(
            record_revision(&mut h, "a", &template("a"), 2, ts(1)),
            (1, true)
        );
        assert_eq!(
            record_revision(&mut h, "a", &template("a"), 2, ts(2)),
            (1, false)
        );
        record_revision(&mut h, "b", &template("b"), 2, ts(3));
        record_revision(&mut h, "c", &template("c"), 2, ts(4));
        // Back to "a": it moves to the end with revision 4.
        assert_eq!(
            record_revision(&mut h, "a", &template("a"), 2, ts(5)),
            (4, true)
        );
        let revs: Vec<(i64, &str)> = h
            .iter()
            .map(|r| (r.revision, r.template_hash.as_str()))
            .collect();
        assert_eq!(revs, [(2, "b"), (3, "c"), (4, "a")]);
        record_revision(&mut h, "d", &template("d"), 2, ts(6));
        let revs: Vec<i64> = h.iter().map(|r| r.revision).collect();
        assert_eq!(revs, [3, 4, 5]);
        assert_eq!(revision_of(&h, "a"), Some(4));
        assert_eq!(revision_of(&h, "b"), None);
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            condition(AVAILABLE, false, "x", String::new()),
            ts(1),
        );
        set_condition(
            &mut conds,
            condition(AVAILABLE, false, "y", String::new()),
            ts(2),
        );
        assert_eq!(conds[0].last_transition_time, Some(ts(1)));
        assert_eq!(conds[0].reason, "y");
        set_condition(
            &mut conds,
            condition(AVAILABLE, true, "z", String::new()),
            ts(3),
        );
        assert_eq!(conds[0].last_transition_time, Some(ts(3)));
    }

    #[test]
    fn status_reports_counts_and_conditions() {
        let seen = Observation {
            name: "web",
            generation: 4,
            replicas: 3,
            max_unavailable: 1,
            counts: Counts {
                total: 3,
                ready: 2,
                updated: 3,
                available: 2,
            },
            revision: 2,
            create_failure: Some("quota".into()),
            new_revision: false,
            progress_deadline: DEFAULT_PROGRESS_DEADLINE,
        };
        let s = next_status(&WorkloadStatus::default(), Vec::new(), &seen, ts(1));
        assert_eq!(
            (
                s.observed_generation,
                s.replicas,
                s.ready_replicas,
                s.updated_replicas,
                s.available_replicas
            ),
            (4, 3, 2, 3, 2)
        );
        let get = |t: &str| s.conditions.iter().find(|c| c.r#type == t).unwrap();
        assert_eq!(get(AVAILABLE).status, "True");
        assert_eq!(get(PROGRESSING).reason, ROLLOUT_IN_PROGRESS);
        assert_eq!(get(REPLICA_FAILURE).message, "quota");

        let done = Observation {
            counts: Counts {
                total: 3,
                ready: 3,
                updated: 3,
                available: 3,
            },
            create_failure: None,
            ..seen
        };
        let s = next_status(&s, Vec::new(), &done, ts(2));
        let get = |t: &str| s.conditions.iter().find(|c| c.r#type == t);
        assert_eq!(get(PROGRESSING).unwrap().reason, ROLLOUT_COMPLETE);
        assert!(get(REPLICA_FAILURE).is_none());

        // A crash later shows in Available; the rollout stays complete.
        let crashed = Observation {
            counts: Counts {
                total: 3,
                ready: 2,
                updated: 3,
                available: 1,
            },
            ..done.clone()
        };
        let s = next_status(&s, Vec::new(), &crashed, ts(3));
        let get = |t: &str| s.conditions.iter().find(|c| c.r#type == t).unwrap();
        assert_eq!(get(PROGRESSING).reason, ROLLOUT_COMPLETE);
        assert_eq!(get(AVAILABLE).status, "False");
    }

    #[test]
    fn a_stalled_rollout_exceeds_its_deadline() {
        let stuck = Observation {
            name: "web",
            generation: 1,
            replicas: 1,
            max_unavailable: 0,
            counts: Counts {
                total: 1,
                ready: 0,
                updated: 1,
                available: 0,
            },
            revision: 1,
            create_failure: None,
            new_revision: true,
            progress_deadline: std::time::Duration::from_secs(10),
        };
        let s = next_status(&WorkloadStatus::default(), Vec::new(), &stuck, ts(100));
        let same = Observation {
            new_revision: false,
            ..stuck.clone()
        };
        let s = next_status(&s, Vec::new(), &same, ts(105));
        let get = |s: &WorkloadStatus| {
            s.conditions
                .iter()
                .find(|c| c.r#type == PROGRESSING)
                .cloned()
                .unwrap()
        };
        assert_eq!(get(&s).reason, ROLLOUT_IN_PROGRESS);
        assert_eq!(get(&s).last_transition_time, Some(ts(100)));
        let s = next_status(&s, Vec::new(), &same, ts(111));
        assert_eq!(
            (get(&s).status.as_str(), get(&s).reason.as_str()),
            ("False", PROGRESS_DEADLINE_EXCEEDED)
        );
    }
}
