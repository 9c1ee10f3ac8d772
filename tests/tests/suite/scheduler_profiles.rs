//! Scoring profiles: the same Instances on the same nodes are spread evenly by the
//! `Spread` (least allocated) profile and packed onto as few nodes as possible by the
//! `Binpack` (most allocated) profile.

use hypermesh_tests::scheduler;

use std::collections::BTreeMap;

use hypermesh_scheduler::Profile;
use scheduler::{SimCluster, instance, node};

/// Two 4-cpu nodes, then `count` 1-cpu Instances created one after another; returns
/// how many landed on each node.
async fn place(profile: Profile, count: usize) -> BTreeMap<String, usize> {
    let cluster = SimCluster::with_profile(profile).await;
    cluster.add_node(node("n1", "4", "8Gi").build()).await;
    cluster.add_node(node("n2", "4", "8Gi").build()).await;
    for i in 0..count {
        let name = format!("web-{i}");
        cluster
            .add(instance(&name).cpu("1").memory("1Gi").build())
            .await;
        cluster.wait_bound("default", &name).await;
    }
    cluster.placement("default").await
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

#[tokio::test]
async fn spread_balances_the_nodes() {
    let placement = place(Profile::Spread, 4).await;
    assert_eq!(placement, counts(&[("n1", 2), ("n2", 2)]));
}

#[tokio::test]
async fn binpack_fills_one_node_before_the_next() {
    let placement = place(Profile::Binpack, 4).await;
    assert_eq!(
        placement.values().copied().collect::<Vec<_>>(),
        [4],
        "all four on one node: {placement:?}"
    );
    let placement = place(Profile::Binpack, 5).await;
    let mut per_node: Vec<usize> = placement.values().copied().collect();
    per_node.sort_unstable();
    assert_eq!(
        per_node,
        [1, 4],
        "the fifth opens the second node: {placement:?}"
    );
}
