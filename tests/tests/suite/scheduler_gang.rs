//! Gang scheduling: the Instances of a Workload with `spec.gang.minAvailable` are
//! bound all-or-nothing. While only some of them fit, none is bound and each says
//! why; once the cluster has room for the whole gang, all are bound together.

use hypermesh_tests::scheduler;

use std::collections::BTreeSet;

use hypermesh_api::v1::{self, ObjectMeta, Workload};
use scheduler::{SimCluster, instance, labels, node};

/// Workload `trainer` asking for its 3 Instances to be bound together.
fn gang_workload() -> Workload {
    let selector = labels(&[("app", "trainer")]);
    Workload {
        metadata: Some(ObjectMeta {
            name: "trainer".into(),
            namespace: "default".into(),
            labels: selector.clone(),
            ..Default::default()
        }),
        spec: Some(v1::WorkloadSpec {
            replicas: 3,
            selector: selector.clone(),
            template: Some(v1::InstanceTemplate {
                labels: selector,
                containers: vec![v1::Container {
                    name: "main".into(),
                    image: "hypermesh.local/busybox:latest".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            gang: Some(v1::GangPolicy { min_available: 3 }),
            ..Default::default()
        }),
        status: None,
    }
}

#[tokio::test]
async fn a_gang_is_bound_all_or_nothing() {
    let cluster = SimCluster::start().await;
    // Room for two 1-cpu members only.
    cluster.add_node(node("n1", "1", "4Gi").build()).await;
    cluster.add_node(node("n2", "1", "4Gi").build()).await;
    let workload = cluster
        .server
        .api::<Workload>()
        .create(&gang_workload())
        .await
        .expect("create workload");

    let members = ["trainer-0", "trainer-1", "trainer-2"];
    for name in members {
        cluster
            .add(
                instance(name)
                    .label("app", "trainer")
                    .cpu("1")
                    .controlled_by(&workload)
                    .build(),
            )
            .await;
    }
    for name in members {
        cluster
            .wait_pending(
                "default",
                name,
                "gang trainer: only 2 of minAvailable 3 instances fit; none bound. \
                 0/2 nodes are available: 2 insufficient cpu.",
            )
            .await;
    }
    for name in members {
        assert_eq!(
            cluster.node_of("default", name).await,
            None,
            "{name} must not be bound before the whole gang fits"
        );
    }

    // An Instance outside the gang still uses the room the gang could not.
    cluster.add(instance("loner").cpu("1").build()).await;
    let loner_node = cluster.wait_bound("default", "loner").await;
    cluster.delete("default", "loner").await;

    // Room for everyone: all three are bound, one per node.
    cluster.add_node(node("n3", "1", "4Gi").build()).await;
    let mut nodes = BTreeSet::new();
    for name in members {
        nodes.insert(cluster.wait_bound("default", name).await);
    }
    assert_eq!(
        nodes,
        BTreeSet::from(["n1".to_string(), "n2".into(), "n3".into()]),
        "(loner used {loner_node} meanwhile)"
    );
}

#[tokio::test]
async fn a_gang_waits_until_enough_members_exist() {
    let cluster = SimCluster::start().await;
    cluster.add_node(node("n1", "8", "16Gi").build()).await;
    let workload = cluster
        .server
        .api::<Workload>()
        .create(&gang_workload())
        .await
        .expect("create workload");

    let member = |name: &str| {
        instance(name)
            .label("app", "trainer")
            .controlled_by(&workload)
            .build()
    };
    cluster.add(member("trainer-0")).await;
    cluster.add(member("trainer-1")).await;
    for name in ["trainer-0", "trainer-1"] {
        cluster
            .wait_pending(
                "default",
                name,
                "gang trainer: 2 of minAvailable 3 instances exist; waiting for the rest",
            )
            .await;
    }
    cluster.add(member("trainer-2")).await;
    for name in ["trainer-0", "trainer-1", "trainer-2"] {
        assert_eq!(cluster.wait_bound("default", name).await, "n1");
    }
}

#[tokio::test]
async fn members_beyond_min_available_wait_for_room_like_any_instance() {
    let cluster = SimCluster::start().await;
    cluster.add_node(node("n1", "1", "4Gi").build()).await;
    cluster.add_node(node("n2", "1", "4Gi").build()).await;
    let mut gang = gang_workload();
    if let Some(spec) = gang.spec.as_mut() {
        spec.gang = Some(v1::GangPolicy { min_available: 2 });
    }
    let workload = cluster
        .server
        .api::<Workload>()
        .create(&gang)
        .await
        .expect("create workload");
    let member = |name: &str| {
        instance(name)
            .label("app", "trainer")
            .cpu("1")
            .controlled_by(&workload)
            .build()
    };
    for name in ["trainer-0", "trainer-1"] {
        cluster.add(member(name)).await;
    }
    for name in ["trainer-0", "trainer-1"] {
        cluster.wait_bound("default", name).await;
    }

    // The gang is complete; a third member (scale-up) finds no room and must say so,
    // then be bound when a node joins.
    cluster.add(member("trainer-2")).await;
    let reason = cluster
        .wait_pending_with("default", "trainer-2", |m| m.contains("insufficient cpu"))
        .await;
    assert!(reason.contains("0/2 nodes are available"), "{reason}");
    cluster.add_node(node("n3", "1", "4Gi").build()).await;
    assert_eq!(cluster.wait_bound("default", "trainer-2").await, "n3");
}

#[tokio::test]
async fn lowering_min_available_lets_a_waiting_gang_start() {
    let cluster = SimCluster::start().await;
    cluster.add_node(node("n1", "1", "4Gi").build()).await;
    cluster.add_node(node("n2", "1", "4Gi").build()).await;
    let workloads = cluster.server.api::<Workload>();
    let workload = workloads
        .create(&gang_workload())
        .await
        .expect("create workload");
    let members = ["trainer-0", "trainer-1", "trainer-2"];
    for name in members {
        cluster
            .add(
                instance(name)
                    .label("app", "trainer")
                    .cpu("1")
                    .controlled_by(&workload)
                    .build(),
            )
            .await;
    }
    for name in members {
        cluster
            .wait_pending_with("default", name, |m| m.contains("only 2 of minAvailable 3"))
            .await;
    }

    // Two are enough now: two members are bound at once.
    let mut lowered = workloads
        .get("default", "trainer")
        .await
        .expect("get workload");
    if let Some(spec) = lowered.spec.as_mut() {
        spec.gang = Some(v1::GangPolicy { min_available: 2 });
    }
    workloads
        .update(&lowered)
        .await
        .expect("lower minAvailable");
    let bound = hypermesh_tests::wait_for(scheduler::DECISION_TIMEOUT, || async {
        let p = cluster.placement("default").await;
        (p.values().sum::<usize>() == 2).then_some(p)
    })
    .await;
    assert!(
        bound.is_ok(),
        "two members should be bound after minAvailable dropped to 2; placement {:?}",
        cluster.placement("default").await
    );
}
