//! An agent registers its Node (identity, labels, capacity from the host, allocatable
//! minus the reserve, node info) and one Asset per device, each with a proof the
//! apiserver accepted and a global address in fd48:4d00::/32. The admin staked the
//! node beforehand, so its Assets carry the configured privacy level and cite the
//! stake record (without stake they would be UNTRUSTED).

use hypermesh_tests::agent;

use std::net::Ipv6Addr;

use agent::{Agent, config, wait_registered};
use hypermesh_api::Resource;
use hypermesh_api::v1::{Asset, AssetType, Node, PrivacyLevel};
use hypermesh_tests::InProcessApiServer;

#[tokio::test]
async fn agent_registers_node_and_assets_with_proofs() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let state = tempfile::tempdir().expect("state dir");
    let mut cfg = config(
        server.url(),
        "worker-1",
        state.path(),
        state.path().join("no-containerd.sock"),
    );
    cfg.labels
        .insert("hypermesh.io/role".into(), "worker".into());
    cfg.reserved =
        hypermesh_agent::config::parse_reserve("cpu=500m,memory=512Mi").expect("reserve");
    cfg.privacy = PrivacyLevel::Private;
    let nodes = server.api::<Node>();
    let stake = hypermesh_tests::proofs::stake("worker-1", 10);
    nodes
        .create(&Node {
            metadata: Some(hypermesh_api::v1::ObjectMeta {
                name: "worker-1".into(),
                ..Default::default()
            }),
            spec: Some(hypermesh_api::v1::NodeSpec {
                stake: Some(stake.clone()),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("admin pre-creates the staked node");
    let agent = Agent::start(cfg);

    let assets = server.api::<Asset>();
    let (node, registered) = wait_registered(&nodes, &assets, "worker-1").await;

    // Identity: the key in the state dir.
    let identity = hypermesh_trust::NodeIdentity::load_or_create(state.path()).expect("identity");
    let spec_identity = node
        .spec
        .as_ref()
        .and_then(|s| s.identity.clone())
        .expect("identity");
    assert_eq!(spec_identity.node_id, identity.node_id());
    assert_eq!(spec_identity.public_key, identity.public_key());
    assert_eq!(spec_identity.algorithm, "falcon-1024");
    assert_eq!(
        node.meta()
            .labels
            .get("hypermesh.io/role")
            .map(String::as_str),
        Some("worker")
    );

    // Capacity read from the host; allocatable = capacity − reserve.
    let status = node.status.clone().expect("status");
    let nproc = std::fs::read_to_string("/proc/cpuinfo")
        .expect("cpuinfo")
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(status.capacity["cpu"], nproc.to_string());
    assert_eq!(
        status.allocatable["cpu"],
        format!("{}m", nproc * 1000 - 500)
    );
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .expect("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    assert_eq!(status.capacity["memory"], format!("{mem_kib}Ki"));
    assert_eq!(
        status.allocatable["memory"],
        format!("{}Ki", mem_kib - 512 * 1024)
    );
    assert_eq!(status.capacity["instances"], "110");
    let info = status.node_info.expect("node info");
    assert!(info.agent_version.starts_with("hm-agent/"));
    assert!(!info.kernel_version.is_empty() && !info.architecture.is_empty());
    assert!(status.addresses.iter().any(|a| a.r#type == "GlobalIPv6"));
    assert!(
        !status
            .conditions
            .iter()
            .any(|c| c.r#type == "Suspect" && c.status == "True"),
        "honest registration does not make the node Suspect: {:?}",
        status.conditions
    );

    // Assets: one per device, proofs set (admission accepted them), addresses in prefix.
    let prefix: Ipv6Addr = "fd48:4d00::".parse().expect("prefix");
    for a in &registered {
        let spec = a.spec.as_ref().expect("spec");
        let name = &a.meta().name;
        assert!(name.starts_with("worker-1-"), "{name}");
        assert_eq!(spec.privacy, PrivacyLevel::Private as i32, "{name}");
        let proof = spec.proof.as_ref().expect("proof");
        assert_eq!(
            proof.stake.as_ref().expect("stake").node_id,
            identity.node_id()
        );
        assert_eq!(
            proof.stake.as_ref().expect("stake").stake_record,
            stake.record_id,
            "{name} cites the stake record"
        );
        let addr: Ipv6Addr = a
            .status
            .as_ref()
            .expect("status")
            .address
            .parse()
            .expect("ipv6");
        assert_eq!(addr.octets()[..4], prefix.octets()[..4], "{name}");
        assert_eq!(
            a.meta().owner_references.first().map(|o| o.name.as_str()),
            Some("worker-1")
        );
    }
    let count = |t: AssetType| {
        registered
            .iter()
            .filter(|a| a.spec.as_ref().is_some_and(|s| s.r#type == t as i32))
            .count()
    };
    assert!(count(AssetType::Cpu) >= 1);
    assert!(count(AssetType::Memory) >= 1);
    assert_eq!(count(AssetType::Container), 1);
    agent.stop().await;
}
