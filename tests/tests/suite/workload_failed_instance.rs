//! A FAILED Instance is deleted and replaced by a new one, with a Warning Event on
//! the Workload; the other Instances are left alone.

use hypermesh_tests::workload;

use hypermesh_api::Resource;
use hypermesh_api::v1::InstancePhase;
use workload::{
    Agent, Cluster, events_about, has_all, set_status, status, wait_event_reasons, wait_instances,
    wait_workload, workload,
};

#[tokio::test]
async fn failed_instances_are_replaced() {
    let cluster = Cluster::start().await;
    let (workloads, instances) = (cluster.workloads(), cluster.instances());
    let agent = Agent::start(instances.clone());
    workloads
        .create(&workload("batch", 2, "registry.local/batch:1"))
        .await
        .expect("create workload");
    let running = wait_instances(&instances, "batch", 2, |i| {
        i.status.as_ref().map(|s| s.phase) == Some(InstancePhase::Running as i32)
    })
    .await;
    wait_workload(&workloads, "batch", "became available", |w| {
        w.status.as_ref().is_some_and(|s| s.available_replicas == 2)
    })
    .await;

    // The agent reports one Instance failed; it stops making new ones run so the
    // replacement is seen in its initial state.
    agent.set_enabled(false);
    let failed = running[0].meta().name.clone();
    let survivor = running[1].meta().name.clone();
    assert!(
        set_status(
            &instances,
            &running[0],
            status(InstancePhase::Failed, false)
        )
        .await
    );

    let replaced = wait_instances(&instances, "batch", 2, |i| i.meta().name != failed).await;
    assert!(
        replaced.iter().any(|i| i.meta().name == survivor),
        "the healthy instance stays: {replaced:#?}"
    );
    let fresh = replaced
        .iter()
        .find(|i| i.meta().name != survivor)
        .expect("a replacement");
    assert_eq!(
        fresh.status.as_ref().map(|s| s.phase),
        Some(InstancePhase::Pending as i32)
    );

    wait_event_reasons(&cluster.events(), "batch", |seen| {
        has_all(seen, &["InstanceFailed"])
    })
    .await;
    let events = events_about(&cluster.events(), "batch").await;
    let warning = events
        .iter()
        .filter_map(|e| e.spec.as_ref())
        .find(|s| s.reason == "InstanceFailed")
        .expect("an InstanceFailed event");
    assert_eq!(warning.r#type, "Warning");
    assert!(warning.message.contains(&failed), "{}", warning.message);

    // Once the replacement runs, the Workload is whole again.
    agent.set_enabled(true);
    wait_workload(&workloads, "batch", "recovered", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.available_replicas == 2 && s.replicas == 2)
    })
    .await;
}
