//! The `Recreate` strategy deletes every old Instance before creating any new one:
//! old and new templates never run side by side, and the total never exceeds
//! `replicas`.

use hypermesh_tests::workload;

use hypermesh_api::v1::{UpdateStrategy, UpdateStrategyType};
use workload::{
    Agent, Cluster, Observer, has_all, hash, rolled_out, set_image, wait_event_reasons,
    wait_instances, wait_workload, workload,
};

#[tokio::test]
async fn recreate_replaces_everything_at_once() {
    let cluster = Cluster::start().await;
    let (workloads, instances) = (cluster.workloads(), cluster.instances());
    let agent = Agent::start(instances.clone());
    let mut db = workload("db", 3, "db:1");
    db.spec.as_mut().expect("spec").strategy = Some(UpdateStrategy {
        r#type: UpdateStrategyType::Recreate as i32,
        ..Default::default()
    });
    workloads.create(&db).await.expect("create workload");
    wait_workload(&workloads, "db", "rolled out v1", rolled_out).await;
    let old = wait_instances(&instances, "db", 3, |_| true).await;
    let old_hash = hash(&old[0]).to_string();
    drop(agent);

    let observer = Observer::start(instances.clone(), "db", true).await;
    set_image(&workloads, "db", "db:2").await;
    wait_workload(&workloads, "db", "rolled out v2", |w| {
        rolled_out(w) && w.status.as_ref().is_some_and(|s| s.history.len() == 2)
    })
    .await;
    let new = wait_instances(&instances, "db", 3, workload::is_available).await;
    assert!(new.iter().all(|i| hash(i) != old_hash), "{new:#?}");

    let snapshots = observer.snapshots();
    for (n, s) in snapshots.iter().enumerate() {
        assert!(
            s.by_hash.len() <= 1,
            "change {n}: old and new together: {snapshots:#?}"
        );
        assert!(
            s.total <= 3,
            "change {n}: more than 3 instances: {snapshots:#?}"
        );
    }
    assert!(
        snapshots.iter().any(|s| s.total == 0),
        "every old instance went before new ones came: {snapshots:#?}"
    );
    let seen = wait_event_reasons(&cluster.events(), "db", |seen| {
        has_all(seen, &["RolloutStarted", "ScalingDown", "ScalingUp"])
            && seen.last().is_some_and(|r| r == "RolloutComplete")
    })
    .await;
    // The second rollout: started, old deleted, new created, complete.
    let second = seen
        .iter()
        .rposition(|r| r == "RolloutStarted")
        .expect("started");
    assert_eq!(
        seen[second..],
        [
            "RolloutStarted",
            "ScalingDown",
            "ScalingUp",
            "RolloutComplete"
        ]
    );
}
