//! A restarted agent (same state dir) keeps its NodeId, updates its Assets in place
//! rather than duplicating them, and deletes the Asset of a device that is gone.

use hypermesh_tests::agent;

use std::collections::BTreeMap;

use agent::{Agent, TIMEOUT, assets_of, config, wait_registered};
use hypermesh_api::Resource;
use hypermesh_api::v1::{Asset, AssetSpec, AssetType, Node, ObjectMeta};
use hypermesh_tests::{InProcessApiServer, wait_for};

fn node_id(node: &Node) -> String {
    node.spec
        .as_ref()
        .and_then(|s| s.identity.as_ref())
        .map(|i| i.node_id.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn restart_keeps_identity_and_assets() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let state = tempfile::tempdir().expect("state dir");
    let cfg = config(
        server.url(),
        "worker-r",
        state.path(),
        state.path().join("none.sock"),
    );
    let nodes = server.api::<Node>();
    let assets = server.api::<Asset>();

    let agent = Agent::start(cfg.clone());
    let (node, first) = wait_registered(&nodes, &assets, "worker-r").await;
    agent.stop().await;
    let first_uids: BTreeMap<String, String> = first
        .iter()
        .map(|a| (a.meta().name.clone(), a.meta().uid.clone()))
        .collect();

    // A device that has since disappeared: an Asset the node registered earlier,
    // properly proved with the node's own key.
    let identity = hypermesh_trust::NodeIdentity::load_or_create(state.path()).expect("identity");
    let spec = AssetSpec {
        node_name: "worker-r".into(),
        r#type: AssetType::Storage as i32,
        capacity: [("storage".to_string(), "1Mi".to_string())]
            .into_iter()
            .collect(),
        privacy: hypermesh_api::v1::PrivacyLevel::Untrusted as i32,
        ..Default::default()
    };
    let mut gone = Asset {
        metadata: Some(ObjectMeta {
            name: "worker-r-storage-gone0".into(),
            labels: [(
                hypermesh_agent::register::NODE_LABEL.to_string(),
                "worker-r".to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        spec: Some(spec),
        status: None,
    };
    hypermesh_tests::proofs::prove(&assets, &identity, "", &mut gone)
        .await
        .expect("proof");
    assets.create(&gone).await.expect("stale asset accepted");

    let agent = Agent::start(cfg);
    let after = wait_for(TIMEOUT, || async {
        let a = assets_of(&assets, "worker-r").await;
        (!a.iter().any(|a| a.meta().name == "worker-r-storage-gone0")).then_some(a)
    })
    .await
    .expect("vanished device's Asset deleted");
    let restarted = nodes.get("", "worker-r").await.expect("node");
    assert_eq!(
        node_id(&restarted),
        node_id(&node),
        "same NodeId after restart"
    );
    assert_eq!(node.meta().uid, restarted.meta().uid, "same Node object");
    let after_uids: BTreeMap<String, String> = after
        .iter()
        .map(|a| (a.meta().name.clone(), a.meta().uid.clone()))
        .collect();
    assert_eq!(after_uids.len(), after.len(), "no duplicate names");
    for (name, uid) in &first_uids {
        if let Some(now) = after_uids.get(name) {
            assert_eq!(now, uid, "{name} updated in place, not recreated");
        }
    }
    let stable = |assets: &[Asset]| {
        assets
            .iter()
            .filter(|a| !agent::is_network(a))
            .map(|a| a.meta().name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(stable(&after), stable(&first), "same devices, same Assets");
    let suspect = agent::condition(&restarted, "Suspect").map(|c| c.status.clone());
    assert_ne!(suspect.as_deref(), Some("True"), "restart is not Byzantine");
    agent.stop().await;
}
