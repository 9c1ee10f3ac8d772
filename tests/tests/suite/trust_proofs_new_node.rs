//! A node whose first Asset arrives after an apiserver restart has its claims kept as
//! well as one that registered before: the proof verifier reads a node's admitted
//! Assets back from the store only when its ledger shows a proof was ever accepted,
//! and a brand-new node (nothing to read back) still has each claim recorded, so the
//! same device claimed twice is refused for both nodes.

#![allow(clippy::unwrap_used)]

use hypermesh_api::Api;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{Asset, Node};
use hypermesh_tests::ApiServerProcess;
use hypermesh_tests::proofs::{create_node_with_identity, proved_disk};
use hypermesh_trust::NodeIdentity;

#[tokio::test]
async fn a_new_node_after_a_restart_and_an_old_one_both_keep_their_claims() {
    let mut server = ApiServerProcess::start().await.unwrap();
    let (old, new) = (NodeIdentity::generate(), NodeIdentity::generate());
    let nodes = Api::<Node>::new(server.channel().await.unwrap());
    create_node_with_identity(&nodes, "old", &old)
        .await
        .unwrap();
    let assets = Api::<Asset>::new(server.channel().await.unwrap());
    let sda = proved_disk(&assets, &old, "old", "old-sda", "/dev/sda")
        .await
        .unwrap();
    assets.create(&sda).await.unwrap();

    server.kill9().await.unwrap();
    server.restart().await.unwrap();
    let nodes = Api::<Node>::new(server.channel().await.unwrap());
    let assets = Api::<Asset>::new(server.channel().await.unwrap());

    // The new node: nothing admitted before, so nothing is read back; its first claim
    // is recorded all the same and the same device under another name is refused.
    create_node_with_identity(&nodes, "new", &new)
        .await
        .unwrap();
    let first = proved_disk(&assets, &new, "new", "new-sda", "/dev/sda")
        .await
        .unwrap();
    assets.create(&first).await.unwrap();
    let again = proved_disk(&assets, &new, "new", "new-sda-again", "/dev/sda")
        .await
        .unwrap();
    let err = assets.create(&again).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofOverclaimed), "{err:?}");

    // The old node: its claim from before the restart is read back from the store.
    let again = proved_disk(&assets, &old, "old", "old-sda-again", "/dev/sda")
        .await
        .unwrap();
    let err = assets.create(&again).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofOverclaimed), "{err:?}");
}
