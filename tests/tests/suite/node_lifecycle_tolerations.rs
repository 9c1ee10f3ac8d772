//! Eviction from an unreachable node honours tolerations of the
//! `hypermesh.io/unreachable:NoExecute` taint: with a long eviction grace, an
//! Instance that tolerates the taint for one second is evicted after that second
//! while one without a toleration is still waiting for the grace, and one that
//! tolerates it for an hour stays.

use hypermesh_tests::node_lifecycle;

use std::time::Duration;

use hypermesh_api::Resource;
use node_lifecycle::{Cluster, ready, tainted, tolerate_unreachable, workload};

#[tokio::test]
async fn tolerating_instances_stay_for_their_toleration_seconds() {
    let cluster = Cluster::start_with(Duration::from_secs(600)).await;
    let a = cluster.add_live_node("a").await;
    for (name, tolerations) in [
        ("patient", vec![tolerate_unreachable(3600)]),
        ("brief", vec![tolerate_unreachable(1)]),
        ("plain", vec![]),
    ] {
        cluster
            .workloads()
            .create(&workload(name, 1, tolerations))
            .await
            .expect("create workload");
    }
    let bound = |prefix: &'static str| {
        let cluster = &cluster;
        async move {
            cluster
                .wait_placement(prefix, "bound to a", |p| {
                    p.len() == 1 && p.values().all(|n| n == "a")
                })
                .await
        }
    };
    let patient = bound("patient-").await;
    let brief = bound("brief-").await;
    let plain = bound("plain-").await;

    a.stop();
    cluster
        .wait_node("a", "becomes Ready=Unknown and tainted", |n| {
            tainted(n) && ready(n).is_some_and(|c| c.status == "Unknown")
        })
        .await;

    // The one-second toleration runs out: evicted and replaced (unbound, as a is
    // the only node and tainted).
    cluster
        .wait_placement("brief-", "evicted and replaced (unbound)", |p| {
            p.len() == 1 && p.values().all(String::is_empty)
        })
        .await;
    let old = brief.keys().next().expect("brief instance");
    cluster
        .wait_event("Instance", "default", old, "Evicted")
        .await;

    // The untolerating one waits for the (10-minute) grace; the patient one for
    // its hour. Both are still on a.
    assert_eq!(cluster.placement("plain-").await, plain);
    assert_eq!(cluster.placement("patient-").await, patient);
    for name in plain.keys().chain(patient.keys()) {
        let events = cluster.events_of("Instance", "default", name).await;
        assert!(events.iter().all(|e| e.reason != "Evicted"), "{events:?}");
        let still = cluster
            .instances()
            .get("default", name)
            .await
            .expect("instance still exists");
        assert!(still.meta().deletion_timestamp.is_none());
    }
}
