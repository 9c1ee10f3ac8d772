//! Instance affinity and anti-affinity by topology key: anti-affinity on the
//! hostname label spreads replicas one per node even where spreading by load would
//! stack them; affinity on a zone label puts an Instance in the zone of the Instances
//! it selects.

use hypermesh_tests::scheduler;

use std::collections::BTreeSet;

use scheduler::{HOSTNAME_LABEL, SimCluster, instance, node};

#[tokio::test]
async fn anti_affinity_on_hostname_puts_one_replica_per_node() {
    let cluster = SimCluster::start().await;
    // By load alone every replica would go to the big node.
    cluster.add_node(node("n-big", "64", "256Gi").build()).await;
    cluster
        .add_node(node("n-small-1", "4", "8Gi").build())
        .await;
    cluster
        .add_node(node("n-small-2", "4", "8Gi").build())
        .await;

    let replica = |name: &str| {
        instance(name)
            .label("app", "db")
            .cpu("1")
            .instance_anti_affinity(&[("app", "db")], HOSTNAME_LABEL)
            .build()
    };
    let mut nodes = BTreeSet::new();
    for i in 0..3 {
        let name = format!("db-{i}");
        cluster.add(replica(&name)).await;
        nodes.insert(cluster.wait_bound("default", &name).await);
    }
    assert_eq!(
        nodes,
        BTreeSet::from(["n-big".to_string(), "n-small-1".into(), "n-small-2".into()])
    );

    // A fourth replica has no node left without one.
    cluster.add(replica("db-3")).await;
    cluster
        .wait_pending(
            "default",
            "db-3",
            "0/3 nodes are available: 3 node(s) didn't match instance anti-affinity.",
        )
        .await;

    // Instances the term does not select are not affected.
    cluster
        .add(
            instance("cache")
                .label("app", "cache")
                .instance_anti_affinity(&[("app", "cache")], HOSTNAME_LABEL)
                .build(),
        )
        .await;
    assert_eq!(cluster.wait_bound("default", "cache").await, "n-big");

    // A node goes away from the set (its replica is deleted): the fourth one takes it.
    let freed = cluster
        .node_of("default", "db-1")
        .await
        .expect("db-1 bound");
    cluster.delete("default", "db-1").await;
    assert_eq!(cluster.wait_bound("default", "db-3").await, freed);
}

#[tokio::test]
async fn affinity_on_zone_follows_the_selected_instances() {
    let cluster = SimCluster::start().await;
    // Zone a has the roomier nodes, so load alone would pick it.
    for (name, zone, cpu) in [
        ("n-a1", "a", "64"),
        ("n-a2", "a", "64"),
        ("n-b1", "b", "4"),
        ("n-b2", "b", "4"),
    ] {
        cluster
            .add_node(node(name, cpu, "64Gi").label("zone", zone).build())
            .await;
    }
    cluster
        .add(
            instance("cache")
                .label("app", "cache")
                .on_node("n-b1")
                .build(),
        )
        .await;
    assert_eq!(cluster.wait_bound("default", "cache").await, "n-b1");

    let mut zone_b = BTreeSet::new();
    for i in 0..3 {
        let name = format!("app-{i}");
        cluster
            .add(
                instance(&name)
                    .label("app", "web")
                    .cpu("500m")
                    .instance_affinity(&[("app", "cache")], "zone")
                    .build(),
            )
            .await;
        zone_b.insert(cluster.wait_bound("default", &name).await);
    }
    assert!(
        zone_b.is_subset(&BTreeSet::from(["n-b1".to_string(), "n-b2".into()])),
        "every app replica runs in zone b: {zone_b:?}"
    );

    // Nothing matches the selector (and the Instance does not match itself): pending.
    cluster
        .add(
            instance("orphan")
                .label("app", "orphan")
                .instance_affinity(&[("app", "missing")], "zone")
                .build(),
        )
        .await;
    cluster
        .wait_pending(
            "default",
            "orphan",
            "0/4 nodes are available: 4 node(s) didn't match instance affinity.",
        )
        .await;

    // The first of a group that selects itself may start anywhere; the rest follow it.
    cluster
        .add(
            instance("group-0")
                .label("app", "group")
                .instance_affinity(&[("app", "group")], "zone")
                .build(),
        )
        .await;
    let first = cluster.wait_bound("default", "group-0").await;
    cluster
        .add(
            instance("group-1")
                .label("app", "group")
                .instance_affinity(&[("app", "group")], "zone")
                .build(),
        )
        .await;
    let second = cluster.wait_bound("default", "group-1").await;
    let zone_of = |n: &str| if n.starts_with("n-a") { "a" } else { "b" };
    assert_eq!(zone_of(&first), zone_of(&second), "{first} vs {second}");
}
