//! A node that registers but never creates its heartbeat Lease is treated like one
//! whose Lease expired once the startup grace has passed: `Ready=Unknown` with reason
//! `LeaseMissing` and the unreachable taint. A node that heartbeats is left alone.

use hypermesh_tests::node_lifecycle;

use std::time::Instant;

use hypermesh_controllers::node_lifecycle::REASON_LEASE_MISSING;
use node_lifecycle::{Cluster, STARTUP_GRACE, ready, tainted};

#[tokio::test]
async fn node_without_a_lease_is_marked_after_the_startup_grace() {
    let cluster = Cluster::start().await;
    let _live = cluster.add_live_node("live").await;
    let registered = Instant::now();
    cluster.add_node("silent").await;

    let silent = cluster
        .wait_node("silent", "becomes Ready=Unknown and tainted", |n| {
            tainted(n) && ready(n).is_some_and(|c| c.status == "Unknown")
        })
        .await;
    assert!(
        registered.elapsed() >= STARTUP_GRACE,
        "marked before the startup grace: {:?}",
        registered.elapsed()
    );
    let condition = ready(&silent).expect("Ready condition");
    assert_eq!(condition.reason, REASON_LEASE_MISSING);
    assert!(
        condition.message.contains("no heartbeat lease"),
        "{}",
        condition.message
    );
    cluster
        .wait_event("Node", "", "silent", "NodeNotReady")
        .await;

    let live = cluster.node("live").await;
    assert!(!tainted(&live), "{live:?}");
    assert_eq!(ready(&live).map(|c| c.status.as_str()), Some("True"));
}
