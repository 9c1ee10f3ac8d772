//! The apiserver's proof state outlives a restart: after `hm-apiserver` is killed and
//! started again on the same data, a device already claimed by a node cannot be
//! claimed again under another name, a spent work answer cannot be replayed, and a
//! proof dated before the node's last accepted one is refused (the time cache is in
//! the store, not in memory).

#![allow(clippy::unwrap_used)]

use hypermesh_api::Api;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{Asset, DeleteRequest, Node};
use hypermesh_tests::ApiServerProcess;
use hypermesh_tests::proofs::{create_node_with_identity, proved_disk};
use hypermesh_trust::NodeIdentity;

#[tokio::test]
async fn claims_challenges_and_the_last_proof_time_survive_an_apiserver_restart() {
    let mut server = ApiServerProcess::start().await.unwrap();
    let identity = NodeIdentity::generate();
    let nodes = Api::<Node>::new(server.channel().await.unwrap());
    create_node_with_identity(&nodes, "n1", &identity)
        .await
        .unwrap();
    let assets = Api::<Asset>::new(server.channel().await.unwrap());
    // A proof made now but held back, then later proofs that are accepted.
    let held_back = proved_disk(&assets, &identity, "n1", "n1-sdc", "/dev/sdc")
        .await
        .unwrap();
    let sda = proved_disk(&assets, &identity, "n1", "n1-sda", "/dev/sda")
        .await
        .unwrap();
    assets.create(&sda).await.unwrap();
    let sdb = proved_disk(&assets, &identity, "n1", "n1-sdb", "/dev/sdb")
        .await
        .unwrap();
    assets.create(&sdb).await.unwrap();

    server.kill9().await.unwrap();
    server.restart().await.unwrap();
    let assets = Api::<Asset>::new(server.channel().await.unwrap());

    let again = proved_disk(&assets, &identity, "n1", "n1-sda-again", "/dev/sda")
        .await
        .unwrap();
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
