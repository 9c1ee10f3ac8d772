//! GPUs are scheduled from the nodes' GPU Assets: a whole-GPU request gets a free GPU
//! that matches its model and memory constraints, named in `spec.assignedAssets`;
//! each GPU goes to one Instance unless its Asset allows sharing, in which case
//! fractional requests pack onto it; Instances without GPU requests keep off nodes
//! whose GPUs are free.

use hypermesh_tests::scheduler;

use hypermesh_api::v1::Instance;
use hypermesh_tests::wait_for;
use scheduler::{DECISION_TIMEOUT, SimCluster, gpu_asset, instance, node};
use tonic::Code;

const A100: &str = "NVIDIA A100-SXM4-40GB";
const T4: &str = "Tesla T4";
const A10: &str = "NVIDIA A10";

fn assigned(inst: &Instance) -> Vec<String> {
    inst.spec
        .as_ref()
        .map(|s| s.assigned_assets.clone())
        .unwrap_or_default()
}

/// Nodes `n-a100` (one A100, 40Gi), `n-t4` (one T4, 16Gi) and `n-cpu` (no GPU).
async fn gpu_cluster() -> SimCluster {
    let cluster = SimCluster::start().await;
    for name in ["n-a100", "n-t4", "n-cpu"] {
        let gpus = if name == "n-cpu" { "0" } else { "1" };
        cluster
            .add_node(node(name, "8", "32Gi").allocatable("gpu", gpus).build())
            .await;
    }
    cluster
        .add_asset(gpu_asset("n-a100-gpu0", "n-a100", A100, "40Gi", false))
        .await;
    cluster
        .add_asset(gpu_asset("n-t4-gpu0", "n-t4", T4, "16Gi", false))
        .await;
    cluster
}

#[tokio::test]
async fn whole_gpus_go_to_matching_free_devices_one_instance_each() {
    let cluster = gpu_cluster().await;

    // Constraints no GPU meets keep an Instance pending although GPUs are free.
    cluster
        .add(instance("wants-h100").gpu("1").gpu_model("H100").build())
        .await;
    cluster
        .add(instance("wants-80gi").gpu("1").gpu_memory("80Gi").build())
        .await;
    cluster
        .wait_pending(
            "default",
            "wants-h100",
            "0/3 nodes are available: 3 insufficient gpu.",
        )
        .await;
    cluster
        .wait_pending(
            "default",
            "wants-80gi",
            "0/3 nodes are available: 3 insufficient gpu.",
        )
        .await;

    // gpuMemory picks the 40Gi A100; gpuModel picks the T4.
    cluster
        .add(instance("big-model").gpu("1").gpu_memory("32Gi").build())
        .await;
    assert_eq!(cluster.wait_bound("default", "big-model").await, "n-a100");
    assert_eq!(
        assigned(&cluster.get("default", "big-model").await),
        ["n-a100-gpu0"]
    );
    cluster
        .add(instance("inference").gpu("1").gpu_model("T4").build())
        .await;
    assert_eq!(cluster.wait_bound("default", "inference").await, "n-t4");
    assert_eq!(
        assigned(&cluster.get("default", "inference").await),
        ["n-t4-gpu0"]
    );

    // Both GPUs are taken: the next whole-GPU request waits.
    cluster.add(instance("third").gpu("1").build()).await;
    cluster
        .wait_pending(
            "default",
            "third",
            "0/3 nodes are available: 3 insufficient gpu.",
        )
        .await;

    // The T4 is freed: `third` gets exactly that GPU.
    cluster.delete("default", "inference").await;
    assert_eq!(cluster.wait_bound("default", "third").await, "n-t4");
    assert_eq!(
        assigned(&cluster.get("default", "third").await),
        ["n-t4-gpu0"]
    );
    assert_eq!(cluster.node_of("default", "wants-h100").await, None);
    assert_eq!(cluster.node_of("default", "wants-80gi").await, None);
}

#[tokio::test]
async fn fractional_requests_share_only_shareable_gpus_and_pack_them() {
    let cluster = SimCluster::start().await;
    cluster
        .add_node(node("n-excl", "8", "32Gi").allocatable("gpu", "1").build())
        .await;
    cluster
        .add_asset(gpu_asset("n-excl-gpu0", "n-excl", A10, "24Gi", false))
        .await;

    // No GPU in the cluster allows sharing yet: half a GPU is refused at the door.
    let refused = cluster
        .instances()
        .create(&instance("too-early").gpu("500m").build())
        .await
        .expect_err("a fractional GPU request needs a shareable GPU");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("spec.containers[0].resources.gpu"),
        "{refused:?}"
    );

    cluster
        .add_node(node("n-share", "8", "32Gi").allocatable("gpu", "2").build())
        .await;
    cluster
        .add_asset(gpu_asset("n-share-gpu0", "n-share", A10, "24Gi", true))
        .await;
    cluster
        .add_asset(gpu_asset("n-share-gpu1", "n-share", A10, "24Gi", true))
        .await;

    // Two halves share one GPU (the other stays whole); two more fill the second.
    for name in ["half-a", "half-b", "half-c", "half-d"] {
        cluster.add(instance(name).gpu("500m").build()).await;
        assert_eq!(cluster.wait_bound("default", name).await, "n-share");
    }
    let devices = [
        assigned(&cluster.get("default", "half-a").await),
        assigned(&cluster.get("default", "half-b").await),
        assigned(&cluster.get("default", "half-c").await),
        assigned(&cluster.get("default", "half-d").await),
    ];
    assert_eq!(devices[0].len(), 1, "{devices:?}");
    assert_eq!(
        devices[0], devices[1],
        "the second half packs onto the first one's GPU: {devices:?}"
    );
    assert_eq!(devices[2], devices[3], "{devices:?}");
    assert_ne!(devices[0], devices[2], "{devices:?}");

    // Both shareable GPUs are full; the free non-shareable GPU is not split.
    cluster.add(instance("half-e").gpu("500m").build()).await;
    cluster
        .wait_pending(
            "default",
            "half-e",
            "0/2 nodes are available: 2 insufficient gpu.",
        )
        .await;

    // A whole GPU still fits on the non-shareable one.
    cluster.add(instance("whole").gpu("1").build()).await;
    assert_eq!(cluster.wait_bound("default", "whole").await, "n-excl");
    assert_eq!(
        assigned(&cluster.get("default", "whole").await),
        ["n-excl-gpu0"]
    );
}

#[tokio::test]
async fn instances_without_gpus_keep_off_nodes_with_free_gpus() {
    let cluster = SimCluster::start().await;
    cluster
        .add_node(node("n-gpu", "8", "32Gi").allocatable("gpu", "1").build())
        .await;
    cluster
        .add_asset(gpu_asset("n-gpu-gpu0", "n-gpu", A100, "40Gi", false))
        .await;
    cluster.add_node(node("n-plain", "8", "32Gi").build()).await;

    // Spread alone would alternate; the free GPU makes n-gpu the last choice.
    for i in 0..4 {
        let name = format!("web-{i}");
        cluster
            .add(instance(&name).cpu("500m").memory("512Mi").build())
            .await;
        assert_eq!(
            cluster.wait_bound("default", &name).await,
            "n-plain",
            "{name} should avoid the node with a free GPU"
        );
    }

    // Once its GPU is in use, n-gpu is an ordinary (and emptier) node again.
    cluster.add(instance("trainer").gpu("1").build()).await;
    assert_eq!(cluster.wait_bound("default", "trainer").await, "n-gpu");
    cluster
        .add(instance("web-4").cpu("500m").memory("512Mi").build())
        .await;
    assert_eq!(cluster.wait_bound("default", "web-4").await, "n-gpu");

    // Nothing was left behind unbound.
    let placement = wait_for(DECISION_TIMEOUT, || async {
        let p = cluster.placement("default").await;
        (p.values().sum::<usize>() == 6).then_some(p)
    })
    .await
    .expect("six bound instances");
    assert_eq!(placement.get("n-plain"), Some(&4), "{placement:?}");
}
