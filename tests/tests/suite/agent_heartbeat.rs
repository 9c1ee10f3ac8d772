//! Heartbeats renew the node's Lease (renew time advances) and keep its conditions:
//! Ready=True, RuntimeReady reflecting whether containerd's socket answers, and with no
//! NVIDIA driver a GpuDriverReady=False condition and no GPU Asset.

use hypermesh_tests::agent;

use agent::{Agent, TIMEOUT, assets_of, condition, config, wait_registered};
use hypermesh_api::v1::{Asset, AssetType, Lease, Node};
use hypermesh_tests::{InProcessApiServer, wait_for};

fn renew_time(lease: &Lease) -> Option<pbjson_types::Timestamp> {
    lease.spec.as_ref()?.renew_time
}

#[tokio::test]
async fn heartbeats_renew_the_lease_and_set_conditions() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let state = tempfile::tempdir().expect("state dir");
    let socket = state.path().join("containerd.sock");
    let agent = Agent::start(config(
        server.url(),
        "worker-hb",
        state.path(),
        socket.clone(),
    ));
    let nodes = server.api::<Node>();
    let leases = server.api::<Lease>();
    wait_registered(&nodes, &server.api::<Asset>(), "worker-hb").await;

    let first = wait_for(TIMEOUT, || async {
        leases.get("hypermesh-system", "node-worker-hb").await.ok()
    })
    .await
    .expect("lease created");
    let spec = first.spec.clone().expect("spec");
    assert_eq!(spec.holder_identity, "worker-hb");
    assert_eq!(spec.lease_duration_seconds, 10);
    let t0 = renew_time(&first).expect("renew time");
    wait_for(TIMEOUT, || async {
        let l = leases
            .get("hypermesh-system", "node-worker-hb")
            .await
            .ok()?;
        let t = renew_time(&l)?;
        ((t.seconds, t.nanos) > (t0.seconds, t0.nanos)).then_some(())
    })
    .await
    .expect("renew time advances");

    // No containerd listening: Ready but RuntimeReady=False, saying why.
    let node = wait_for(TIMEOUT, || async {
        let n = nodes.get("", "worker-hb").await.ok()?;
        (condition(&n, "Ready")?.status == "True").then_some(n)
    })
    .await
    .expect("Ready=True");
    let runtime = condition(&node, "RuntimeReady").expect("RuntimeReady");
    assert_eq!(runtime.status, "False");
    assert_eq!(runtime.reason, "ContainerdUnreachable");
    assert!(
        runtime.message.contains("containerd.sock"),
        "{}",
        runtime.message
    );
    let ready_since = condition(&node, "Ready").and_then(|c| c.last_transition_time);
    for kind in ["MemoryPressure", "DiskPressure"] {
        let c = condition(&node, kind).unwrap_or_else(|| panic!("{kind}"));
        assert!(
            ["True", "False"].contains(&c.status.as_str()),
            "{kind}: {c:?}"
        );
    }

    // Something now accepts connections on the socket: RuntimeReady turns True, and
    // Ready's transition time stays where it was.
    let _listener = tokio::net::UnixListener::bind(&socket).expect("bind socket");
    let node = wait_for(TIMEOUT, || async {
        let n = nodes.get("", "worker-hb").await.ok()?;
        (condition(&n, "RuntimeReady")?.status == "True").then_some(n)
    })
    .await
    .expect("RuntimeReady=True once the socket answers");
    assert_eq!(
        condition(&node, "Ready").and_then(|c| c.last_transition_time),
        ready_since
    );

    // GPUs: only what NVML reports.
    let gpu = condition(&node, "GpuDriverReady").expect("GpuDriverReady");
    let gpu_assets = assets_of(&server.api::<Asset>(), "worker-hb")
        .await
        .into_iter()
        .filter(|a| {
            a.spec
                .as_ref()
                .is_some_and(|s| s.r#type == AssetType::Gpu as i32)
        })
        .count();
    if gpu.status == "False" {
        assert_eq!(gpu.reason, "NvmlUnavailable");
        assert_eq!(gpu_assets, 0, "no GPU invented without a driver");
        assert_eq!(
            node.status
                .as_ref()
                .map(|s| s.capacity["gpu"].clone())
                .as_deref(),
            Some("0")
        );
    }
    agent.stop().await;
}
