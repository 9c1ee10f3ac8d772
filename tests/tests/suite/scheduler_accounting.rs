//! The scheduler counts what is already bound: Instances bound before it started, and
//! the Instances of a node that leaves and registers again, still use that node's
//! capacity, so nothing is placed beyond it.

use hypermesh_tests::scheduler;

use hypermesh_api::v1::{DeleteRequest, Node};
use hypermesh_scheduler::Config;
use scheduler::{SimCluster, instance, node};

#[tokio::test]
async fn instances_bound_before_the_scheduler_started_are_counted() {
    let cluster = SimCluster::without_scheduler().await;
    cluster.add_node(node("n1", "2", "4Gi").build()).await;
    for name in ["old-0", "old-1"] {
        cluster.add(instance(name).cpu("1").build()).await;
        cluster.bind("default", name, "n1").await;
    }

    cluster.start_scheduler(Config::default());
    cluster.add(instance("new").cpu("1").build()).await;
    cluster
        .wait_pending(
            "default",
            "new",
            "0/1 nodes are available: 1 insufficient cpu.",
        )
        .await;
}

#[tokio::test]
async fn a_reregistered_node_keeps_counting_its_instances() {
    let cluster = SimCluster::start().await;
    cluster.add_node(node("n1", "2", "4Gi").build()).await;
    for name in ["web-0", "web-1"] {
        cluster.add(instance(name).cpu("1").build()).await;
        assert_eq!(cluster.wait_bound("default", name).await, "n1");
    }
    cluster.add(instance("extra").cpu("1").build()).await;
    cluster
        .wait_pending(
            "default",
            "extra",
            "0/1 nodes are available: 1 insufficient cpu.",
        )
        .await;

    // The node's object is deleted and its agent registers it again; its two
    // Instances stay bound to it throughout.
    cluster
        .nodes()
        .delete(DeleteRequest {
            name: "n1".into(),
            ..Default::default()
        })
        .await
        .expect("delete node");
    let node_api = cluster.nodes();
    hypermesh_tests::wait_for(scheduler::DECISION_TIMEOUT, || async {
        node_api.get("", "n1").await.is_err().then_some(())
    })
    .await
    .expect("node gone");
    let again: Node = node("n1", "2", "4Gi").build();
    cluster.add_node(again).await;

    // Another Instance must still find n1 full.
    cluster.add(instance("later").cpu("1").build()).await;
    cluster
        .wait_pending(
            "default",
            "later",
            "0/1 nodes are available: 1 insufficient cpu.",
        )
        .await;
    assert_eq!(cluster.node_of("default", "extra").await, None);
}
