//! A node whose first Asset arrives after an apiserver restart has its claims kept as
//! well as one that registered before: the proof verifier reads a node's admitted
//! Assets back from the store only when its ledger shows a proof was ever accepted,
//! and a brand-new node (nothing to read back) still has each claim recorded, so the
//! same device claimed twice is refused for both nodes.

#![allow(clippy::unwrap_used)]

use hypermesh_api::Api;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{Asset, AssetSpec, AssetType, Node, NodeSpec, ObjectMeta, PrivacyLevel};
use hypermesh_tests::ApiServerProcess;
use hypermesh_tests::proofs::prove;
use hypermesh_trust::NodeIdentity;

async fn node(nodes: &Api<Node>, name: &str, identity: &NodeIdentity) {
    nodes
        .create(&Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                identity: Some(identity.to_node_identity()),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap();
}

async fn disk(
    assets: &Api<Asset>,
    identity: &NodeIdentity,
    node: &str,
    name: &str,
    location: &str,
) -> Asset {
    let mut asset = Asset {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(AssetSpec {
            node_name: node.into(),
            r#type: AssetType::Storage as i32,
            capacity: [("storage".to_string(), "64Ki".to_string())].into(),
            attributes: [("path".to_string(), location.to_string())].into(),
            privacy: PrivacyLevel::Untrusted as i32,
            ..Default::default()
        }),
        status: None,
    };
    prove(assets, identity, "", &mut asset).await.unwrap();
    asset
}

#[tokio::test]
async fn a_new_node_after_a_restart_and_an_old_one_both_keep_their_claims() {
    let mut server = ApiServerProcess::start().await.unwrap();
    let (old, new) = (NodeIdentity::generate(), NodeIdentity::generate());
    let nodes = Api::<Node>::new(server.channel().await.unwrap());
    node(&nodes, "old", &old).await;
    let assets = Api::<Asset>::new(server.channel().await.unwrap());
    let sda = disk(&assets, &old, "old", "old-sda", "/dev/sda").await;
    assets.create(&sda).await.unwrap();

    server.kill9().await.unwrap();
    server.restart().await.unwrap();
    let nodes = Api::<Node>::new(server.channel().await.unwrap());
    let assets = Api::<Asset>::new(server.channel().await.unwrap());

    // The new node: nothing admitted before, so nothing is read back; its first claim
    // is recorded all the same and the same device under another name is refused.
    node(&nodes, "new", &new).await;
    let first = disk(&assets, &new, "new", "new-sda", "/dev/sda").await;
    assets.create(&first).await.unwrap();
    let again = disk(&assets, &new, "new", "new-sda-again", "/dev/sda").await;
    let err = assets.create(&again).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofOverclaimed), "{err:?}");

    // The old node: its claim from before the restart is read back from the store.
    let again = disk(&assets, &old, "old", "old-sda-again", "/dev/sda").await;
    let err = assets.create(&again).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofOverclaimed), "{err:?}");
}
