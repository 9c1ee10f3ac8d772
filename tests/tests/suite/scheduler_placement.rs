//! Where an Instance may go: nodeSelector, required node affinity (In, NotIn, Exists),
//! NoSchedule/NoExecute taints against tolerations (Equal, Exists), and nodes that
//! are cordoned, not Ready or Suspect are skipped. An Instance that fits nowhere stays
//! Pending and says why, as `0/N nodes are available: <count> <reason>, ...`, in its
//! `Scheduled=False` condition and a `FailedScheduling` Event.

use hypermesh_tests::scheduler;

use hypermesh_api::v1::TaintEffect;
use scheduler::{SimCluster, instance, node};

#[tokio::test]
async fn node_selector_picks_labelled_nodes() {
    let cluster = SimCluster::start().await;
    cluster
        .add_node(node("n-eu", "4", "8Gi").label("zone", "eu-1").build())
        .await;
    cluster
        .add_node(node("n-us", "4", "8Gi").label("zone", "us-1").build())
        .await;

    for i in 0..3 {
        let name = format!("us-{i}");
        cluster
            .add(instance(&name).node_selector("zone", "us-1").build())
            .await;
        assert_eq!(cluster.wait_bound("default", &name).await, "n-us");
    }
    cluster
        .add(instance("ap").node_selector("zone", "ap-1").build())
        .await;
    cluster
        .wait_pending(
            "default",
            "ap",
            "0/2 nodes are available: 2 node(s) didn't match node selector.",
        )
        .await;
}

#[tokio::test]
async fn node_affinity_in_notin_exists() {
    let cluster = SimCluster::start().await;
    cluster
        .add_node(node("n-ssd", "4", "8Gi").label("disk", "ssd").build())
        .await;
    cluster
        .add_node(node("n-hdd", "4", "8Gi").label("disk", "hdd").build())
        .await;
    cluster.add_node(node("n-bare", "4", "8Gi").build()).await;

    cluster
        .add(
            instance("in-ssd")
                .node_affinity("disk", "In", &["ssd"])
                .build(),
        )
        .await;
    assert_eq!(cluster.wait_bound("default", "in-ssd").await, "n-ssd");

    cluster
        .add(
            instance("no-disk")
                .node_affinity("disk", "NotIn", &["ssd", "hdd"])
                .build(),
        )
        .await;
    assert_eq!(cluster.wait_bound("default", "no-disk").await, "n-bare");

    cluster
        .add(
            instance("any-disk-but-ssd")
                .node_affinity("disk", "Exists", &[])
                .node_affinity("disk", "NotIn", &["ssd"])
                .build(),
        )
        .await;
    assert_eq!(
        cluster.wait_bound("default", "any-disk-but-ssd").await,
        "n-hdd"
    );

    cluster
        .add(
            instance("nvme")
                .node_affinity("disk", "In", &["nvme"])
                .build(),
        )
        .await;
    cluster
        .wait_pending(
            "default",
            "nvme",
            "0/3 nodes are available: 3 node(s) didn't match node affinity.",
        )
        .await;
}

#[tokio::test]
async fn taints_repel_instances_without_matching_tolerations() {
    let cluster = SimCluster::start().await;
    cluster
        .add_node(
            node("n-dedicated", "4", "8Gi")
                .taint("dedicated", "gpu", TaintEffect::NoSchedule)
                .build(),
        )
        .await;
    cluster
        .add_node(
            node("n-maintenance", "4", "8Gi")
                .taint("maintenance", "", TaintEffect::NoExecute)
                .build(),
        )
        .await;
    let both_tainted = "0/2 nodes are available: 2 node(s) had untolerated taint.";

    cluster.add(instance("plain").build()).await;
    cluster.wait_pending("default", "plain", both_tainted).await;

    // Equal needs the same key and value; the effect must match when given.
    cluster
        .add(
            instance("wrong-value")
                .toleration("dedicated", "Equal", "cpu", TaintEffect::NoSchedule)
                .build(),
        )
        .await;
    cluster
        .wait_pending("default", "wrong-value", both_tainted)
        .await;
    cluster
        .add(
            instance("gpu-team")
                .toleration("dedicated", "Equal", "gpu", TaintEffect::NoSchedule)
                .build(),
        )
        .await;
    assert_eq!(
        cluster.wait_bound("default", "gpu-team").await,
        "n-dedicated"
    );

    // Exists matches any value; a NoSchedule toleration does not cover NoExecute.
    cluster
        .add(
            instance("wrong-effect")
                .toleration("maintenance", "Exists", "", TaintEffect::NoSchedule)
                .build(),
        )
        .await;
    cluster
        .wait_pending("default", "wrong-effect", both_tainted)
        .await;
    cluster
        .add(
            instance("ops")
                .toleration("maintenance", "Exists", "", TaintEffect::Unspecified)
                .build(),
        )
        .await;
    assert_eq!(cluster.wait_bound("default", "ops").await, "n-maintenance");

    // PreferNoSchedule only lowers the score: what waited for an untainted node
    // lands there.
    cluster
        .add_node(
            node("n-soft", "4", "8Gi")
                .taint("spot", "true", TaintEffect::PreferNoSchedule)
                .build(),
        )
        .await;
    for name in ["plain", "wrong-value", "wrong-effect"] {
        assert_eq!(cluster.wait_bound("default", name).await, "n-soft");
    }
}

#[tokio::test]
async fn cordoned_not_ready_and_suspect_nodes_are_skipped() {
    let cluster = SimCluster::start().await;
    cluster
        .add_node(node("n-cordoned", "4", "8Gi").unschedulable().build())
        .await;
    cluster
        .add_node(
            node("n-not-ready", "4", "8Gi")
                .condition("Ready", "False")
                .build(),
        )
        .await;
    cluster
        .add_node(
            node("n-suspect", "4", "8Gi")
                .condition("Suspect", "True")
                .build(),
        )
        .await;

    cluster.add(instance("web").build()).await;
    cluster
        .wait_pending(
            "default",
            "web",
            "0/3 nodes are available: 1 node(s) cordoned, 1 node(s) not ready, 1 node(s) suspect.",
        )
        .await;

    // A healthy node takes it.
    cluster.add_node(node("n-ok", "4", "8Gi").build()).await;
    assert_eq!(cluster.wait_bound("default", "web").await, "n-ok");

    // Uncordoning brings the node back into play.
    let nodes = cluster.nodes();
    let mut cordoned = nodes.get("", "n-cordoned").await.expect("get node");
    cordoned
        .spec
        .get_or_insert_with(Default::default)
        .unschedulable = false;
    nodes.update(&cordoned).await.expect("uncordon");
    cluster
        .add(instance("pinned").on_node("n-cordoned").build())
        .await;
    assert_eq!(cluster.wait_bound("default", "pinned").await, "n-cordoned");
}

#[tokio::test]
async fn too_big_instances_stay_pending_with_every_reason_counted() {
    let cluster = SimCluster::start().await;
    cluster.add_node(node("n-small", "2", "4Gi").build()).await;
    cluster.add_node(node("n-large", "4", "8Gi").build()).await;

    cluster.add(instance("huge-cpu").cpu("16").build()).await;
    cluster
        .wait_pending(
            "default",
            "huge-cpu",
            "0/2 nodes are available: 2 insufficient cpu.",
        )
        .await;
    cluster
        .add(instance("huge-memory").memory("64Gi").build())
        .await;
    cluster
        .wait_pending(
            "default",
            "huge-memory",
            "0/2 nodes are available: 2 insufficient memory.",
        )
        .await;
    let event = cluster
        .wait_event("default", "huge-memory", "FailedScheduling")
        .await;
    assert_eq!(
        event.message,
        "0/2 nodes are available: 2 insufficient memory."
    );
    assert_eq!(event.r#type, "Warning");

    // Reasons are counted per node, the most common first.
    for (name, taint) in [("n-tainted-1", "a"), ("n-tainted-2", "b")] {
        cluster
            .add_node(
                node(name, "64", "256Gi")
                    .taint("team", taint, TaintEffect::NoSchedule)
                    .build(),
            )
            .await;
    }
    cluster
        .add(instance("mid").cpu("3").memory("16Gi").build())
        .await;
    cluster
        .wait_pending(
            "default",
            "mid",
            "0/4 nodes are available: 2 node(s) had untolerated taint, 1 insufficient cpu, \
             1 insufficient memory.",
        )
        .await;
    assert_eq!(cluster.node_of("default", "huge-cpu").await, None);
}
