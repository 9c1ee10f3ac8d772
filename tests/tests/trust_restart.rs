//! The apiserver's proof state outlives a restart: after `hm-apiserver` is killed and
//! started again on the same data, a device already claimed by a node cannot be
//! claimed again under another name, a spent work answer cannot be replayed, and a
//! proof dated before the node's last accepted one is refused (the time cache is in
//! the store, not in memory).

#![allow(clippy::unwrap_used)]

use hypermesh_api::Api;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{
    Asset, AssetSpec, AssetType, DeleteRequest, Node, NodeSpec, ObjectMeta, PrivacyLevel,
};
use hypermesh_tests::ApiServerProcess;
use hypermesh_tests::proofs::prove;
use hypermesh_trust::NodeIdentity;

async fn disk(assets: &Api<Asset>, identity: &NodeIdentity, name: &str, location: &str) -> Asset {
    let mut asset = Asset {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(AssetSpec {
            node_name: "n1".into(),
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
async fn claims_challenges_and_the_last_proof_time_survive_an_apiserver_restart() {
    let mut server = ApiServerProcess::start().await.unwrap();
    let identity = NodeIdentity::generate();
    let nodes = Api::<Node>::new(server.channel().await.unwrap());
    nodes
        .create(&Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
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
    let assets = Api::<Asset>::new(server.channel().await.unwrap());
    // A proof made now but held back, then later proofs that are accepted.
    let held_back = disk(&assets, &identity, "n1-sdc", "/dev/sdc").await;
    let sda = disk(&assets, &identity, "n1-sda", "/dev/sda").await;
    assets.create(&sda).await.unwrap();
    let sdb = disk(&assets, &identity, "n1-sdb", "/dev/sdb").await;
    assets.create(&sdb).await.unwrap();

    server.kill9().await.unwrap();
    server.restart().await.unwrap();
    let assets = Api::<Asset>::new(server.channel().await.unwrap());

    let again = disk(&assets, &identity, "n1-sda-again", "/dev/sda").await;
    let err = assets.create(&again).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofOverclaimed), "{err:?}");

    // Its challenge is still outstanding, but it is dated before the node's last
    // accepted proof: a replay, refused after the restart as before it.
    let err = assets.create(&held_back).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofReplayed), "{err:?}");

    assets
        .delete(DeleteRequest {
            name: "n1-sdb".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = assets.create(&sdb).await.unwrap_err();
    assert_eq!(
        reason_of(&err),
        Some(Reason::ProofChallengeInvalid),
        "{err:?}"
    );
}
