//! What one reconcile of a Workload does to its Instances, decided without I/O from
//! the desired replicas, the update strategy and the Instances it owns: how many to
//! create and which to delete, and why.
//!
//! The rules follow Kubernetes Deployments, per Instance instead of per ReplicaSet:
//! - terminal (FAILED/SUCCEEDED) Instances are deleted and replaced;
//! - with no old revision left, the current revision is scaled to `replicas`, deleting
//!   the least useful first (unbound before bound, pending before running, not ready
//!   before ready, newest first);
//! - `RollingUpdate` creates new Instances while the total stays within `replicas +
//!   maxSurge`, and deletes old ones only while at least `replicas - maxUnavailable`
//!   stay available (unavailable old ones go first, as that costs no availability);
//! - `Recreate` deletes every old Instance and creates new ones only once they are gone.

use std::cmp::Reverse;

use hypermesh_api::Resource;
use hypermesh_api::v1::{Instance, InstancePhase, UpdateStrategyType, WorkloadSpec};

use super::template::{hash_of, is_available, is_deleting, is_ready, is_terminal, phase_of};

/// Used when maxSurge / maxUnavailable are not given.
const DEFAULT_PERCENT: &str = "25%";

/// How a Workload moves from one template to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Replace Instances a few at a time.
    RollingUpdate {
        /// Instances allowed above `replicas` during the update.
        max_surge: usize,
        /// Instances allowed to be unavailable below `replicas` during the update.
        max_unavailable: usize,
    },
    /// Delete every old Instance, then create the new ones.
    Recreate,
}

impl Strategy {
    /// The strategy of `spec`, with maxSurge rounded up and maxUnavailable rounded
    /// down from percentages of `replicas` (defaults 25% each; never both 0).
    pub fn of(spec: &WorkloadSpec) -> Strategy {
        let replicas = usize::try_from(spec.replicas).unwrap_or(0);
        let strategy = spec.strategy.clone().unwrap_or_default();
        if strategy.r#type == UpdateStrategyType::Recreate as i32 {
            return Strategy::Recreate;
        }
        let value = |s: &str| {
            if s.is_empty() {
                DEFAULT_PERCENT.to_string()
            } else {
                s.to_string()
            }
        };
        let max_surge = resolve_int_or_percent(&value(&strategy.max_surge), replicas, true);
        let mut max_unavailable =
            resolve_int_or_percent(&value(&strategy.max_unavailable), replicas, false);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        }
    }

    /// Instances that may be unavailable at any time (Recreate: none, by this measure).
    pub fn max_unavailable(&self) -> usize {
        match self {
            Strategy::RollingUpdate {
                max_unavailable, ..
            } => *max_unavailable,
            Strategy::Recreate => 0,
        }
    }
}

/// `"3"` → 3; `"25%"` of `total`, rounded up or down. Unparsable values (which
/// validation rejects) count as 25%.
pub fn resolve_int_or_percent(value: &str, total: usize, round_up: bool) -> usize {
    let value = value.trim();
    if let Some(percent) = value.strip_suffix('%') {
        let percent: usize = percent.parse().unwrap_or(25);
        let scaled = total.saturating_mul(percent);
        return if round_up {
            scaled.div_ceil(100)
        } else {
            scaled / 100
        };
    }
    value
        .parse()
        .unwrap_or_else(|_| resolve_int_or_percent(DEFAULT_PERCENT, total, round_up))
}

/// Why an Instance is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It ended (FAILED or SUCCEEDED) and is replaced.
    Terminal,
    /// The current revision has more Instances than `replicas`.
    ScaleDown,
    /// It belongs to an old revision being replaced.
    OldRevision,
}

/// One Instance to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Its name.
    pub name: String,
    /// Its template hash.
    pub hash: String,
    /// Why it goes.
    pub why: Why,
}

/// The actions of one reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Instances of the current template to create.
    pub create: usize,
    /// Instances to delete.
    pub delete: Vec<Deletion>,
}

/// Orders Instances so that the least useful come first: unbound before bound,
/// pending before scheduled before running, not ready before ready, newest first.
pub fn deletion_order(a: &Instance, b: &Instance) -> std::cmp::Ordering {
    let key = |i: &Instance| {
        let bound = i.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
        let phase = match phase_of(i) {
            InstancePhase::Running => 2,
            InstancePhase::Scheduled => 1,
            _ => 0,
        };
        let created = i
            .meta()
            .creation_timestamp
            .map(|t| (t.seconds, t.nanos))
            .unwrap_or_default();
        (bound, phase, is_ready(i), Reverse(created))
    };
    key(a)
        .cmp(&key(b))
        .then_with(|| a.meta().name.cmp(&b.meta().name))
}

fn deletions<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    count: usize,
    why: Why,
) -> Vec<Deletion> {
    let mut sorted: Vec<&Instance> = instances.into_iter().collect();
    sorted.sort_by(|a, b| deletion_order(a, b));
    sorted
        .into_iter()
        .take(count)
        .map(|i| Deletion {
            name: i.meta().name.clone(),
            hash: hash_of(i).to_string(),
            why,
        })
        .collect()
}

/// Decides what to do for a Workload wanting `replicas` Instances of the template
/// hashed `current`, given every Instance it owns (including ones being deleted).
pub fn plan(replicas: usize, strategy: Strategy, current: &str, owned: &[&Instance]) -> Plan {
    let mut plan = Plan::default();
    let live: Vec<&Instance> = owned.iter().copied().filter(|i| !is_deleting(i)).collect();
    let (terminal, active): (Vec<&Instance>, Vec<&Instance>) =
        live.into_iter().partition(|i| is_terminal(i));
    plan.delete.extend(deletions(
        terminal.iter().copied(),
        terminal.len(),
        Why::Terminal,
    ));
    let (new, old): (Vec<&Instance>, Vec<&Instance>) =
        active.into_iter().partition(|i| hash_of(i) == current);

    let scale_new = |plan: &mut Plan| {
        if new.len() < replicas {
            plan.create = replicas - new.len();
        } else {
            plan.delete.extend(deletions(
                new.iter().copied(),
                new.len() - replicas,
                Why::ScaleDown,
            ));
        }
    };

    match strategy {
        Strategy::Recreate => {
            if !old.is_empty() {
                plan.delete
                    .extend(deletions(old.iter().copied(), old.len(), Why::OldRevision));
                return plan;
            }
            // Old Instances still shutting down (finalizers) hold the new ones back.
            let old_terminating = owned
                .iter()
                .any(|i| is_deleting(i) && hash_of(i) != current);
            if old_terminating {
                return plan;
            }
            scale_new(&mut plan);
        }
        Strategy::RollingUpdate { .. } if old.is_empty() => scale_new(&mut plan),
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => {
            let total = new.len() + old.len();
            if new.len() > replicas {
                plan.delete.extend(deletions(
                    new.iter().copied(),
                    new.len() - replicas,
                    Why::ScaleDown,
                ));
            } else {
                let room = (replicas + max_surge).saturating_sub(total);
                plan.create = (replicas - new.len()).min(room);
            }

            let min_available = replicas.saturating_sub(max_unavailable);
            let new_available = new.iter().filter(|i| is_available(i)).count();
            let old_available = old.iter().filter(|i| is_available(i)).count();
            let available = new_available + old_available;
            let new_unavailable = new.len() - new_available;
            // Old Instances that may go at all without the total dropping below what
            // must stay available plus the new ones still starting.
            let mut budget = total
                .saturating_sub(min_available)
                .saturating_sub(new_unavailable);
            let (healthy, unhealthy): (Vec<&Instance>, Vec<&Instance>) =
                old.iter().copied().partition(|i| is_available(i));
            let n = unhealthy.len().min(budget);
            budget -= n;
            plan.delete
                .extend(deletions(unhealthy, n, Why::OldRevision));
            let n = healthy
                .len()
                .min(available.saturating_sub(min_available))
                .min(budget);
            plan.delete.extend(deletions(healthy, n, Why::OldRevision));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::{Condition, InstanceSpec, InstanceStatus, ObjectMeta, UpdateStrategy};

    use crate::workload::template::TEMPLATE_HASH_LABEL;

    fn instance(name: &str, hash: &str, phase: InstancePhase, ready: bool) -> Instance {
        Instance {
            metadata: Some(ObjectMeta {
                name: name.into(),
                labels: [(TEMPLATE_HASH_LABEL.to_string(), hash.to_string())].into(),
                creation_timestamp: Some(pbjson_types::Timestamp {
                    seconds: name.bytes().map(i64::from).sum(),
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(InstanceSpec {
                node_name: if phase == InstancePhase::Pending {
                    String::new()
                } else {
                    "node-1".into()
                },
                ..Default::default()
            }),
            status: Some(InstanceStatus {
                phase: phase as i32,
                conditions: vec![Condition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn up(name: &str, hash: &str) -> Instance {
        instance(name, hash, InstancePhase::Running, true)
    }

    fn pending(name: &str, hash: &str) -> Instance {
        instance(name, hash, InstancePhase::Pending, false)
    }

    fn spec(replicas: i32, surge: &str, unavailable: &str) -> WorkloadSpec {
        WorkloadSpec {
            replicas,
            strategy: Some(UpdateStrategy {
                r#type: UpdateStrategyType::RollingUpdate as i32,
                max_surge: surge.into(),
                max_unavailable: unavailable.into(),
            }),
            ..Default::default()
        }
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.delete.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        assert_eq!(resolve_int_or_percent("25%", 10, true), 3);
        assert_eq!(resolve_int_or_percent("25%", 10, false), 2);
        assert_eq!(resolve_int_or_percent("2", 10, false), 2);
        assert_eq!(resolve_int_or_percent("100%", 3, false), 3);
        assert_eq!(
            Strategy::of(&spec(4, "", "")),
            Strategy::RollingUpdate {
                max_surge: 1,
                max_unavailable: 1
            }
        );
        // 25% of 1: surge rounds up to 1, unavailable down to 0.
        assert_eq!(
            Strategy::of(&spec(1, "", "")),
            Strategy::RollingUpdate {
                max_surge: 1,
                max_unavailable: 0
            }
        );
        // Never both 0.
        assert_eq!(
            Strategy::of(&spec(3, "0", "10%")),
            Strategy::RollingUpdate {
                max_surge: 0,
                max_unavailable: 1
            }
        );
        let mut recreate = spec(3, "", "");
        if let Some(s) = recreate.strategy.as_mut() {
            s.r#type = UpdateStrategyType::Recreate as i32;
        }
        assert_eq!(Strategy::of(&recreate), Strategy::Recreate);
    }

    #[test]
    fn scales_up_and_down_least_useful_first() {
        let s = Strategy::of(&spec(3, "", ""));
        let a = up("a", "h");
        assert_eq!(plan(3, s, "h", &[&a]).create, 2);
        let (b, c, d) = (pending("b", "h"), up("c", "h"), pending("dd", "h"));
        let p = plan(1, s, "h", &[&a, &b, &c, &d]);
        assert_eq!(p.create, 0);
        // Pending ones first, the newest (dd) before b; then the newer running one.
        assert_eq!(names(&p), ["dd", "b", "c"]);
        assert!(p.delete.iter().all(|d| d.why == Why::ScaleDown));
    }

    #[test]
    fn terminal_instances_are_replaced() {
        let s = Strategy::of(&spec(2, "", ""));
        let failed = instance("f", "h", InstancePhase::Failed, false);
        let ok = up("a", "h");
        let p = plan(2, s, "h", &[&failed, &ok]);
        assert_eq!(p.create, 1);
        assert_eq!(p.delete[0].why, Why::Terminal);
        assert_eq!(names(&p), ["f"]);
    }

    #[test]
    fn rolling_update_respects_surge_and_unavailability() {
        // 3 replicas, surge 1, unavailable 0: one new at a time, old go once new are up.
        let s = Strategy::of(&spec(3, "1", "0"));
        let old: Vec<Instance> = ["o1", "o2", "o3"].iter().map(|n| up(n, "old")).collect();
        let refs: Vec<&Instance> = old.iter().collect();
        let p = plan(3, s, "new", &refs);
        assert_eq!((p.create, p.delete.len()), (1, 0));

        let n1 = pending("n1", "new");
        let mut refs2 = refs.clone();
        refs2.push(&n1);
        let p = plan(3, s, "new", &refs2);
        assert_eq!((p.create, p.delete.len()), (0, 0), "{p:?}");

        let n1 = up("n1", "new");
        let mut refs3 = refs.clone();
        refs3.push(&n1);
        let p = plan(3, s, "new", &refs3);
        assert_eq!(p.create, 0);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.delete[0].why, Why::OldRevision);
    }

    #[test]
    fn rolling_update_without_surge_deletes_first() {
        let s = Strategy::of(&spec(3, "0", "1"));
        let old: Vec<Instance> = ["o1", "o2", "o3"].iter().map(|n| up(n, "old")).collect();
        let refs: Vec<&Instance> = old.iter().collect();
        let p = plan(3, s, "new", &refs);
        assert_eq!((p.create, p.delete.len()), (0, 1));
        // With one old gone: create one, delete none until it is available.
        let p = plan(3, s, "new", &refs[..2]);
        assert_eq!((p.create, p.delete.len()), (1, 0));
    }

    #[test]
    fn unavailable_old_instances_go_first_and_freely() {
        let s = Strategy::of(&spec(2, "1", "0"));
        let (o1, o2) = (pending("o1", "old"), up("o2", "old"));
        let (n1, n2) = (up("n1", "new"), up("n2", "new"));
        let p = plan(2, s, "new", &[&o1, &o2, &n1, &n2]);
        assert_eq!(names(&p), ["o1", "o2"]);
    }

    #[test]
    fn recreate_deletes_old_before_creating() {
        let s = Strategy::Recreate;
        let (o1, o2) = (up("o1", "old"), up("o2", "old"));
        let p = plan(2, s, "new", &[&o1, &o2]);
        assert_eq!((p.create, p.delete.len()), (0, 2));
        let mut going = up("o3", "old");
        going.meta_mut().deletion_timestamp = Some(pbjson_types::Timestamp::default());
        assert_eq!(plan(2, s, "new", &[&going]), Plan::default());
        assert_eq!(plan(2, s, "new", &[]).create, 2);
    }
}
