//! The apiserver's proof state outlives a restart: after `hm-apiserver` is killed and
//! started again on the same data, a device already claimed by a node cannot be
//! claimed again under another name, and a stored registration cannot be replayed.

#![allow(clippy::unwrap_used)]

use hypermesh_api::Api;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{Asset, AssetSpec, AssetType, DeleteRequest, Node, NodeSpec, ObjectMeta};
use hypermesh_tests::ApiServerProcess;
use hypermesh_trust::NodeIdentity;
use hypermesh_trust::proof::{ProofParams, prove_asset};

fn disk(identity: &NodeIdentity, name: &str, location: &str) -> Asset {
    let mut spec = AssetSpec {
        node_name: "n1".into(),
        r#type: AssetType::Storage as i32,
        capacity: [("storage".to_string(), "1Ti".to_string())].into(),
        ..Default::default()
    };
    spec.proof = Some(prove_asset(
        identity,
        name,
        &spec,
        location,
        1 << 40,
        &ProofParams::default(),
    ));
    Asset {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(spec),
        status: None,
    }
}

#[tokio::test]
async fn claims_and_nonces_survive_an_apiserver_restart() {
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
    let sda = disk(&identity, "n1-sda", "/dev/sda");
    let sdb = disk(&identity, "n1-sdb", "/dev/sdb");
    assets.create(&sda).await.unwrap();
    assets.create(&sdb).await.unwrap();

    server.kill9().await.unwrap();
    server.restart().await.unwrap();
    let assets = Api::<Asset>::new(server.channel().await.unwrap());

    let err = assets
        .create(&disk(&identity, "n1-sda-again", "/dev/sda"))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofOverclaimed), "{err:?}");

    assets
        .delete(DeleteRequest {
            name: "n1-sdb".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = assets.create(&sdb).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofReplayed), "{err:?}");
}
