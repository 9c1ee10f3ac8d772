//! The privacy rule (docs/scheduling.md, "Privacy"): a node's non-GPU Assets decide
//! who may run there — PRIVATE only the namespace named by the node's
//! `hypermesh.io/owner-namespace` label, PRIVATE_NETWORK only namespaces with the
//! node's `hypermesh.io/network` label, P2P those plus namespaces labelled
//! `hypermesh.io/p2p=true`, PUBLIC_NETWORK (and nodes without such Assets) everyone;
//! and an Instance asking for privacy X runs only on Assets at most as exposed as X.

use hypermesh_tests::scheduler;

use hypermesh_api::v1::{AssetType, Namespace, PrivacyLevel};
use scheduler::{SimCluster, asset, gpu_asset, instance, node};

const OWNER: &str = "hypermesh.io/owner-namespace";
const NETWORK: &str = "hypermesh.io/network";
const P2P: &str = "hypermesh.io/p2p";

/// Namespaces `team-a` (network net-1), `team-b` (net-2), `team-c` (p2p opt-in) and
/// `default` (no labels); nodes `n-private` (owned by team-a), `n-privnet` (net-1),
/// `n-p2p` (net-2) and `n-public` (no privacy-marked Assets).
async fn privacy_cluster() -> SimCluster {
    let cluster = SimCluster::start().await;
    cluster.add_namespace("team-a", &[(NETWORK, "net-1")]).await;
    cluster.add_namespace("team-b", &[(NETWORK, "net-2")]).await;
    cluster.add_namespace("team-c", &[(P2P, "true")]).await;
    cluster
        .add_node(
            node("n-private", "8", "16Gi")
                .label(OWNER, "team-a")
                .label(NETWORK, "net-1")
                .build(),
        )
        .await;
    cluster
        .add_asset(asset(
            "n-private-cpu",
            "n-private",
            AssetType::Cpu,
            PrivacyLevel::Private,
        ))
        .await;
    // A more exposed Asset beside it does not loosen the node: the strictest counts.
    cluster
        .add_asset(asset(
            "n-private-containers",
            "n-private",
            AssetType::Container,
            PrivacyLevel::FullPublic,
        ))
        .await;
    cluster
        .add_node(
            node("n-privnet", "8", "16Gi")
                .label(NETWORK, "net-1")
                .build(),
        )
        .await;
    cluster
        .add_asset(asset(
            "n-privnet-cpu",
            "n-privnet",
            AssetType::Cpu,
            PrivacyLevel::PrivateNetwork,
        ))
        .await;
    cluster
        .add_node(node("n-p2p", "8", "16Gi").label(NETWORK, "net-2").build())
        .await;
    cluster
        .add_asset(asset(
            "n-p2p-containers",
            "n-p2p",
            AssetType::Container,
            PrivacyLevel::P2p,
        ))
        .await;
    cluster
        .add_node(node("n-public", "8", "16Gi").build())
        .await;
    cluster
}

#[tokio::test]
async fn node_assets_serve_only_the_namespaces_their_privacy_allows() {
    let cluster = privacy_cluster().await;
    // (node, namespace, allowed)
    let matrix = [
        ("n-private", "team-a", true),
        ("n-private", "team-b", false),
        ("n-private", "team-c", false),
        ("n-private", "default", false),
        ("n-privnet", "team-a", true),
        ("n-privnet", "team-b", false),
        ("n-privnet", "team-c", false),
        ("n-privnet", "default", false),
        ("n-p2p", "team-a", false),
        ("n-p2p", "team-b", true),
        ("n-p2p", "team-c", true),
        ("n-p2p", "default", false),
        ("n-public", "team-a", true),
        ("n-public", "team-b", true),
        ("n-public", "team-c", true),
        ("n-public", "default", true),
    ];
    for (node, namespace, _) in matrix {
        cluster
            .add(
                instance(&format!("on-{node}"))
                    .namespace(namespace)
                    .on_node(node)
                    .build(),
            )
            .await;
    }
    for (node, namespace, allowed) in matrix {
        let name = format!("on-{node}");
        if allowed {
            assert_eq!(
                cluster.wait_bound(namespace, &name).await,
                node,
                "{namespace} may use {node}"
            );
        } else {
            cluster
                .wait_pending(
                    namespace,
                    &name,
                    "0/4 nodes are available: 3 node(s) didn't match node selector, \
                     1 node(s) privacy level forbids it.",
                )
                .await;
        }
    }
}

#[tokio::test]
async fn instances_asking_for_privacy_run_only_on_assets_at_most_that_exposed() {
    let cluster = privacy_cluster().await;

    // PRIVATE: only PRIVATE Assets (of its own namespace), however loaded.
    for i in 0..3 {
        let name = format!("secret-{i}");
        cluster
            .add(
                instance(&name)
                    .namespace("team-a")
                    .privacy(PrivacyLevel::Private)
                    .build(),
            )
            .await;
        assert_eq!(cluster.wait_bound("team-a", &name).await, "n-private");
    }

    // PRIVATE_NETWORK: PRIVATE or PRIVATE_NETWORK Assets, never P2P or public ones.
    for i in 0..4 {
        let name = format!("internal-{i}");
        cluster
            .add(
                instance(&name)
                    .namespace("team-a")
                    .privacy(PrivacyLevel::PrivateNetwork)
                    .build(),
            )
            .await;
        let node = cluster.wait_bound("team-a", &name).await;
        assert!(
            node == "n-private" || node == "n-privnet",
            "{name} ran on {node}"
        );
    }

    // P2P from team-b: the P2P node only (PRIVATE ones belong to team-a's network).
    cluster
        .add(
            instance("peer")
                .namespace("team-b")
                .privacy(PrivacyLevel::P2p)
                .build(),
        )
        .await;
    assert_eq!(cluster.wait_bound("team-b", "peer").await, "n-p2p");

    // PRIVATE from a namespace that owns no node: nowhere.
    cluster
        .add(
            instance("homeless")
                .namespace("team-b")
                .privacy(PrivacyLevel::Private)
                .build(),
        )
        .await;
    cluster
        .wait_pending(
            "team-b",
            "homeless",
            "0/4 nodes are available: 4 node(s) privacy level forbids it.",
        )
        .await;
}

#[tokio::test]
async fn gpu_assets_carry_their_own_privacy() {
    let cluster = SimCluster::start().await;
    cluster.add_namespace("team-a", &[]).await;
    cluster.add_namespace("team-b", &[]).await;
    cluster
        .add_node(
            node("n-gpu", "8", "32Gi")
                .allocatable("gpu", "1")
                .label(OWNER, "team-a")
                .build(),
        )
        .await;
    let mut gpu = gpu_asset("n-gpu-gpu0", "n-gpu", "NVIDIA A100", "40Gi", false);
    if let Some(spec) = gpu.spec.as_mut() {
        spec.privacy = PrivacyLevel::Private as i32;
    }
    cluster.add_asset(gpu).await;

    // The node itself is public (no CPU/CONTAINER Assets), but its GPU is team-a's.
    cluster
        .add(instance("b-cpu").namespace("team-b").build())
        .await;
    assert_eq!(cluster.wait_bound("team-b", "b-cpu").await, "n-gpu");
    cluster
        .add(instance("b-gpu").namespace("team-b").gpu("1").build())
        .await;
    cluster
        .wait_pending(
            "team-b",
            "b-gpu",
            "0/1 nodes are available: 1 insufficient gpu.",
        )
        .await;
    cluster
        .add(instance("a-gpu").namespace("team-a").gpu("1").build())
        .await;
    assert_eq!(cluster.wait_bound("team-a", "a-gpu").await, "n-gpu");
}

#[tokio::test]
async fn joining_a_network_admits_waiting_instances() {
    let cluster = privacy_cluster().await;
    cluster.add_namespace("team-d", &[]).await;
    cluster
        .add(
            instance("joiner")
                .namespace("team-d")
                .on_node("n-privnet")
                .build(),
        )
        .await;
    cluster
        .wait_pending(
            "team-d",
            "joiner",
            "0/4 nodes are available: 3 node(s) didn't match node selector, \
             1 node(s) privacy level forbids it.",
        )
        .await;

    // team-d joins net-1: n-privnet's PRIVATE_NETWORK Assets now serve it.
    let namespaces = cluster.server.api::<Namespace>();
    let mut ns = namespaces.get("", "team-d").await.expect("get namespace");
    ns.metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert(NETWORK.into(), "net-1".into());
    namespaces.update(&ns).await.expect("label namespace");
    assert_eq!(cluster.wait_bound("team-d", "joiner").await, "n-privnet");
}
