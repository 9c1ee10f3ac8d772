//! A template change rolls out gradually: at every change of the Workload's
//! Instances, the total stays within `replicas + maxSurge` and at least
//! `replicas - maxUnavailable` stay available, for integer, percentage and default
//! settings; at the end every Instance runs the new template.

use hypermesh_tests::workload;

use workload::{
    Agent, Cluster, Observer, condition, hash, rolled_out, rolling, set_image, wait_instances,
    wait_workload, workload,
};

/// Rolls `replicas` Instances from image v1 to v2 with the given strategy and checks
/// the bounds, which resolve to `max_surge` and `max_unavailable`.
async fn rollout_stays_within_bounds(
    replicas: i32,
    surge: &str,
    unavailable: &str,
    max_surge: usize,
    max_unavailable: usize,
) -> Vec<workload::Snapshot> {
    let cluster = Cluster::start().await;
    let (workloads, instances) = (cluster.workloads(), cluster.instances());
    let agent = Agent::start(instances.clone());
    workloads
        .create(&rolling(
            workload("web", replicas, "web:1"),
            surge,
            unavailable,
        ))
        .await
        .expect("create workload");
    wait_workload(&workloads, "web", "rolled out v1", rolled_out).await;
    let old = wait_instances(&instances, "web", replicas as usize, |_| true).await;
    let old_hash = hash(&old[0]).to_string();
    drop(agent);

    // From here the observer plays the agent, so it sees every state in order.
    let observer = Observer::start(instances.clone(), "web", true).await;
    set_image(&workloads, "web", "web:2").await;
    let done = wait_workload(&workloads, "web", "rolled out v2", |w| {
        rolled_out(w) && w.status.as_ref().is_some_and(|s| s.history.len() == 2)
    })
    .await;
    let new = wait_instances(&instances, "web", replicas as usize, |i| {
        workload::is_available(i)
    })
    .await;
    let new_hash = hash(&new[0]).to_string();
    assert_ne!(new_hash, old_hash);
    assert!(new.iter().all(|i| hash(i) == new_hash), "{new:#?}");
    assert_eq!(
        condition(&done, "Progressing").map(|c| c.reason),
        Some("NewRevisionAvailable".to_string())
    );

    let snapshots = observer.snapshots();
    let replicas = replicas as usize;
    for (n, s) in snapshots.iter().enumerate() {
        assert!(
            s.total <= replicas + max_surge,
            "change {n}: {} instances exceed replicas + maxSurge = {}: {snapshots:#?}",
            s.total,
            replicas + max_surge
        );
        assert!(
            s.available + max_unavailable >= replicas,
            "change {n}: only {} available, below replicas - maxUnavailable = {}: {snapshots:#?}",
            s.available,
            replicas - max_unavailable
        );
    }
    // Several steps, ending with only the new template.
    assert!(snapshots.len() > replicas * 2, "{snapshots:#?}");
    let last = snapshots.last().expect("snapshots");
    assert_eq!(last.by_hash.get(&new_hash), Some(&replicas), "{last:?}");
    assert_eq!(last.by_hash.len(), 1, "{last:?}");
    snapshots
}

#[tokio::test]
async fn surge_one_unavailable_zero_never_loses_availability() {
    let snapshots = rollout_stays_within_bounds(3, "1", "0", 1, 0).await;
    // Surging is the only way forward: it happened.
    assert!(snapshots.iter().any(|s| s.total == 4), "{snapshots:#?}");
}

#[tokio::test]
async fn surge_zero_unavailable_one_never_exceeds_replicas() {
    let snapshots = rollout_stays_within_bounds(3, "0", "1", 0, 1).await;
    assert!(snapshots.iter().any(|s| s.available == 2), "{snapshots:#?}");
}

#[tokio::test]
async fn default_percentages_round_surge_up_and_unavailable_down() {
    // 25% of 5: maxSurge 2 (1.25 rounded up), maxUnavailable 1 (rounded down).
    rollout_stays_within_bounds(5, "", "", 2, 1).await;
}

#[tokio::test]
async fn percentages_of_a_larger_workload() {
    // 50% of 6 both ways: 3 and 3.
    rollout_stays_within_bounds(6, "50%", "50%", 3, 3).await;
}
