//! A node whose agent reports `RuntimeReady=False` (containerd unreachable) gets no new
//! Instances: they go to nodes whose runtime answers, or stay Pending with
//! `node(s) runtime not ready` (also in the `FailedScheduling` Event) until a runtime is
//! back, and then are placed. Nodes that do not report the condition are not held back.

use hypermesh_tests::scheduler;

use scheduler::{SimCluster, instance, node};

#[tokio::test]
async fn nodes_whose_runtime_is_not_ready_get_no_instances() {
    let cluster = SimCluster::start().await;
    cluster
        .add_node(
            node("n-down", "8", "16Gi")
                .condition("RuntimeReady", "False")
                .build(),
        )
        .await;
    cluster
        .add_node(
            node("n-up", "4", "8Gi")
                .condition("RuntimeReady", "True")
                .build(),
        )
        .await;

    // The bigger node would win on free resources; its runtime is down.
    for i in 0..4 {
        let name = format!("web-{i}");
        cluster.add(instance(&name).cpu("500m").build()).await;
        assert_eq!(cluster.wait_bound("default", &name).await, "n-up");
    }

    // Only runtime-down nodes left with room: Pending, saying why.
    cluster.add(instance("big").cpu("6").build()).await;
    cluster
        .wait_pending(
            "default",
            "big",
            "0/2 nodes are available: 1 insufficient cpu, 1 node(s) runtime not ready.",
        )
        .await;
    let event = cluster
        .wait_event("default", "big", "FailedScheduling")
        .await;
    assert!(
        event.message.contains("1 node(s) runtime not ready"),
        "{}",
        event.message
    );

    // The agent reports its runtime back: the waiting Instance is placed there.
    let nodes = cluster.nodes();
    let mut down = nodes.get("", "n-down").await.expect("get node");
    for c in &mut down.status.get_or_insert_with(Default::default).conditions {
        if c.r#type == "RuntimeReady" {
            c.status = "True".into();
            c.reason = "ContainerdReachable".into();
        }
    }
    nodes.update_status(&down).await.expect("runtime back");
    assert_eq!(cluster.wait_bound("default", "big").await, "n-down");

    // A node without the condition (e.g. another agent version) is not held back.
    cluster
        .add_node(node("n-plain", "16", "32Gi").build())
        .await;
    cluster.add(instance("huge").cpu("12").build()).await;
    assert_eq!(cluster.wait_bound("default", "huge").await, "n-plain");
}
