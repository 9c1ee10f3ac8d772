//! A node that stops renewing its heartbeat Lease is marked `Ready=Unknown` and
//! tainted `hypermesh.io/unreachable:NoExecute` (with an Event) within its Lease
//! duration; after the eviction grace its Instances are deleted, the Workload replaces
//! them and the scheduler binds the replacements to the other node. When the Lease
//! is renewed again, the taint goes away.

use hypermesh_tests::node_lifecycle;

use std::time::{Duration, Instant};

use hypermesh_api::Resource;
use hypermesh_controllers::node_lifecycle::{REASON_LEASE_EXPIRED, UNREACHABLE_TAINT};
use node_lifecycle::{Cluster, Heartbeats, LEASE_SECONDS, ready, tainted, workload};

#[tokio::test]
async fn lapsed_node_is_tainted_and_its_instances_move() {
    let cluster = Cluster::start().await;
    let a = cluster.add_live_node("a").await;

    // Both replicas land on a, the only node.
    cluster
        .workloads()
        .create(&workload("web", 2, vec![]))
        .await
        .expect("create workload");
    let before = cluster
        .wait_placement("web-", "both replicas bound to a", |p| {
            p.len() == 2 && p.values().all(|n| n == "a")
        })
        .await;
    let _b = cluster.add_live_node("b").await;

    // a stops heartbeating: within the Lease duration (plus slack) it is Unknown
    // and tainted, and an Event says why.
    a.stop();
    let stopped = Instant::now();
    let lapsed = cluster
        .wait_node("a", "becomes Ready=Unknown and tainted", |n| {
            tainted(n) && ready(n).is_some_and(|c| c.status == "Unknown")
        })
        .await;
    let took = stopped.elapsed();
    assert!(
        took <= Duration::from_secs(u64::try_from(LEASE_SECONDS).unwrap() + 3),
        "noticed after {took:?}"
    );
    let condition = ready(&lapsed).expect("Ready condition");
    assert_eq!(condition.reason, REASON_LEASE_EXPIRED);
    assert!(
        condition.message.starts_with("lease not renewed since "),
        "{}",
        condition.message
    );
    let taint = lapsed
        .spec
        .as_ref()
        .and_then(|s| s.taints.iter().find(|t| t.key == UNREACHABLE_TAINT))
        .expect("taint");
    assert_eq!(
        taint.effect,
        hypermesh_api::v1::TaintEffect::NoExecute as i32
    );
    assert!(taint.time_added.is_some());
    let event = cluster.wait_event("Node", "", "a", "NodeNotReady").await;
    assert_eq!(event.r#type, "Warning");
    assert!(
        event.message.contains("lease not renewed"),
        "{}",
        event.message
    );
    // The healthy node is left alone.
    let b = cluster.node("b").await;
    assert!(!tainted(&b), "{b:?}");
    assert_eq!(ready(&b).map(|c| c.status.as_str()), Some("True"));

    // After the eviction grace, a's Instances are deleted and replaced on b.
    let after = cluster
        .wait_placement("web-", "both replicas rebound to b", |p| {
            p.len() == 2 && p.values().all(|n| n == "b")
        })
        .await;
    for old in before.keys() {
        assert!(!after.contains_key(old), "{old} survived: {after:?}");
        let evicted = cluster
            .wait_event("Instance", "default", old, "Evicted")
            .await;
        assert!(
            evicted.message.contains("Node a is unreachable"),
            "{}",
            evicted.message
        );
    }
    let summary = cluster
        .wait_event("Node", "", "a", "EvictingInstances")
        .await;
    assert!(
        summary.message.contains("deleted 2 instance(s)"),
        "{}",
        summary.message
    );

    // a heartbeats again: the taint is removed (Ready stays the agent's to restore).
    let _a = Heartbeats::start(cluster.server.api(), "a").await;
    let back = cluster
        .wait_node("a", "loses the unreachable taint", |n| !tainted(n))
        .await;
    assert!(
        back.spec.as_ref().is_some_and(|s| s.taints.is_empty()),
        "{back:?}"
    );
    cluster.wait_event("Node", "", "a", "NodeReachable").await;
    assert_eq!(back.meta().name, "a");
}
