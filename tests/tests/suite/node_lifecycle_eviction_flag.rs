//! `hm-apiserver --node-eviction-grace-seconds`: the Instances of a node whose Lease
//! lapsed are deleted that long after the node is tainted unreachable (and replaced on
//! a live node), instead of after the default 30 s — and not before.

use hypermesh_tests::node_lifecycle;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use hypermesh_api::v1::{Asset, Instance, Lease, ListRequest, Node, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_controllers::node_lifecycle::unreachable_taint;
use hypermesh_tests::{ApiServerProcess, proofs, wait_for};
use node_lifecycle::{Heartbeats, node, tainted, workload};

const GRACE: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(30);

/// Each live Instance of `default` and its node.
async fn placement(instances: &Api<Instance>) -> BTreeMap<String, String> {
    let (items, _) = instances
        .list_all(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    items
        .into_iter()
        .filter(|i| i.meta().deletion_timestamp.is_none())
        .map(|i| {
            let node = i.spec.map(|s| s.node_name).unwrap_or_default();
            (i.metadata.unwrap_or_default().name, node)
        })
        .collect()
}

#[tokio::test]
async fn instances_leave_an_unreachable_node_after_the_configured_grace() {
    let grace = GRACE.as_secs().to_string();
    let server = ApiServerProcess::start_with_args(&[
        "--controllers",
        "all",
        "--node-eviction-grace-seconds",
        &grace,
    ])
    .await
    .expect("hm-apiserver");
    let channel = server.channel().await.expect("channel");
    let _stop_scheduler = hypermesh_tests::scheduler::spawn_default(channel.clone());
    let nodes: Api<Node> = Api::new(channel.clone());
    let assets: Api<Asset> = Api::new(channel.clone());
    let leases: Api<Lease> = Api::new(channel.clone());
    let instances: Api<Instance> = Api::new(channel.clone());
    let mut heartbeats = BTreeMap::new();
    for name in ["sim-a", "sim-b"] {
        proofs::create_offering_node(&nodes, &assets, node(name))
            .await
            .expect("create node");
        heartbeats.insert(name, Heartbeats::start(leases.clone(), name).await);
    }

    Api::<Workload>::new(channel.clone())
        .create(&workload("web", 1, vec![]))
        .await
        .expect("create workload");
    let first = wait_for(TIMEOUT, || async {
        let placed = placement(&instances).await;
        let node = placed.values().next().filter(|n| !n.is_empty())?.clone();
        (placed.len() == 1).then_some(node)
    })
    .await
    .expect("the replica is bound");
    let other = if first == "sim-a" { "sim-b" } else { "sim-a" };

    heartbeats[first.as_str()].stop();
    let taint = wait_for(TIMEOUT, || async {
        let n = nodes.get("", &first).await.ok()?;
        unreachable_taint(&n).cloned().filter(|_| tainted(&n))
    })
    .await
    .expect("the node is tainted unreachable");
    let tainted_seen = Instant::now();
    let tainted_at = taint
        .time_added
        .map(|t| {
            SystemTime::UNIX_EPOCH
                + Duration::new(
                    u64::try_from(t.seconds).expect("time after 1970"),
                    u32::try_from(t.nanos).expect("nanos"),
                )
        })
        .expect("the taint says when it was added");

    wait_for(TIMEOUT, || async {
        let placed = placement(&instances).await;
        (placed.len() == 1 && placed.values().all(|n| n == other)).then_some(())
    })
    .await
    .expect("the replica is replaced on the live node");
    let moved_after = tainted_seen.elapsed();
    let since_taint = SystemTime::now()
        .duration_since(tainted_at)
        .unwrap_or_default();
    assert!(
        since_taint >= GRACE,
        "evicted {since_taint:?} after the taint, before the {GRACE:?} grace"
    );
    assert!(
        moved_after < GRACE + Duration::from_secs(10),
        "replaced {moved_after:?} after the taint was seen: the {GRACE:?} grace, not the default 30 s"
    );
}
