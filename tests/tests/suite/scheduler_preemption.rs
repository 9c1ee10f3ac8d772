//! Priority and preemption: a high-priority Instance that fits nowhere evicts the
//! cheapest set of lower-priority Instances — on the node where the highest victim
//! priority is lowest, then where the fewest must go — is bound in their place, and
//! the victims get a `Preempted` Event. Instances of equal or higher priority are
//! never evicted.

use hypermesh_tests::scheduler;

use scheduler::{SimCluster, instance, node};

#[tokio::test]
async fn a_high_priority_instance_evicts_the_cheapest_victims() {
    let cluster = SimCluster::start().await;
    for name in ["n1", "n2", "n3"] {
        cluster.add_node(node(name, "2", "8Gi").build()).await;
    }
    // n1: two small priority-0 Instances; n2: one big priority-0 Instance;
    // n3: one big priority-50 Instance. Every node is full.
    for (name, node, cpu, priority) in [
        ("small-a", "n1", "1", 0),
        ("small-b", "n1", "1", 0),
        ("big", "n2", "2", 0),
        ("mid", "n3", "2", 50),
    ] {
        cluster
            .add(
                instance(name)
                    .on_node(node)
                    .cpu(cpu)
                    .priority(priority)
                    .build(),
            )
            .await;
        assert_eq!(cluster.wait_bound("default", name).await, node);
    }

    // Priority 0 does not preempt: it just waits, and nothing is evicted. (It is
    // deleted again so it cannot race the preemptors below for the room they free.)
    cluster.add(instance("patient").cpu("2").build()).await;
    cluster
        .wait_pending(
            "default",
            "patient",
            "0/3 nodes are available: 3 insufficient cpu.",
        )
        .await;
    assert_eq!(
        cluster.placement("default").await.values().sum::<usize>(),
        4
    );
    cluster.delete("default", "patient").await;

    // Lowest victim priority wins, then fewest victims: `big` alone on n2.
    cluster
        .add(instance("urgent-1").cpu("2").priority(100).build())
        .await;
    assert_eq!(cluster.wait_bound("default", "urgent-1").await, "n2");
    let preempted = cluster.wait_event("default", "big", "Preempted").await;
    assert!(
        preempted.message.contains("default/urgent-1"),
        "{preempted:?}"
    );
    cluster
        .wait_event("default", "urgent-1", "Preempting")
        .await;
    assert!(
        cluster
            .instances()
            .get("default", "big")
            .await
            .is_err_and(|e| e.code() == tonic::Code::NotFound),
        "the victim is deleted"
    );

    // Priority before count: two priority-0 Instances go rather than one priority-50.
    cluster
        .add(instance("urgent-2").cpu("2").priority(100).build())
        .await;
    assert_eq!(cluster.wait_bound("default", "urgent-2").await, "n1");
    cluster.wait_event("default", "small-a", "Preempted").await;
    cluster.wait_event("default", "small-b", "Preempted").await;

    // Only `mid` is lower than 100 now.
    cluster
        .add(instance("urgent-3").cpu("2").priority(100).build())
        .await;
    assert_eq!(cluster.wait_bound("default", "urgent-3").await, "n3");
    cluster.wait_event("default", "mid", "Preempted").await;

    // Equal priority is never evicted: the fourth waits, and so do the others.
    cluster
        .add(instance("urgent-4").cpu("2").priority(100).build())
        .await;
    cluster
        .wait_pending(
            "default",
            "urgent-4",
            "0/3 nodes are available: 3 insufficient cpu.",
        )
        .await;
    for name in ["urgent-1", "urgent-2", "urgent-3"] {
        assert!(
            cluster
                .events_of("default", name)
                .await
                .iter()
                .all(|e| e.reason != "Preempted"),
            "{name} must not be preempted by an equal priority"
        );
    }
    assert_eq!(
        cluster.placement("default").await,
        [("n1", 1), ("n2", 1), ("n3", 1)]
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect()
    );

    // A higher priority still may: 1000 evicts one of the 100s.
    cluster.delete("default", "urgent-4").await;
    cluster
        .add(instance("critical").cpu("2").priority(1000).build())
        .await;
    let node = cluster.wait_bound("default", "critical").await;
    let victim = ["urgent-1", "urgent-2", "urgent-3"][["n2", "n1", "n3"]
        .iter()
        .position(|n| *n == node)
        .expect("critical runs on one of the nodes")];
    cluster.wait_event("default", victim, "Preempted").await;
}

#[tokio::test]
async fn preemption_evicts_no_more_than_it_needs() {
    let cluster = SimCluster::start().await;
    cluster.add_node(node("n1", "4", "8Gi").build()).await;
    // `tiny` (priority 0) and `hog` (priority 10) fill the node.
    for (name, cpu, priority) in [("tiny", "1", 0), ("hog", "3", 10)] {
        cluster
            .add(instance(name).cpu(cpu).priority(priority).build())
            .await;
        assert_eq!(cluster.wait_bound("default", name).await, "n1");
    }

    // Evicting `hog` alone makes room for 3 cpu; `tiny` must keep running.
    cluster
        .add(instance("urgent").cpu("3").priority(100).build())
        .await;
    assert_eq!(cluster.wait_bound("default", "urgent").await, "n1");
    cluster.wait_event("default", "hog", "Preempted").await;
    assert!(
        cluster
            .events_of("default", "tiny")
            .await
            .iter()
            .all(|e| e.reason != "Preempted"),
        "tiny did not need to go"
    );
    assert_eq!(
        cluster.node_of("default", "tiny").await.as_deref(),
        Some("n1")
    );
}
