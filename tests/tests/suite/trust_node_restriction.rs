//! Node restriction over real mTLS, with nodes joined by token: node A writes its own
//! Node, Lease, Assets and the status of its Instances, and reads the Secrets they
//! use; it cannot update node B, B's Lease or Assets, the status of B's Instances,
//! read a Secret only B's Instances use, open B's tunnel, cordon itself, or change the
//! key its certificate binds.

#![allow(clippy::unwrap_used)]

use hypermesh_api::Resource;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{
    self, AgentHello, Asset, AssetSpec, AssetType, Instance, Lease, ListRequest, Node, Secret,
    agent_tunnel_service_client::AgentTunnelServiceClient,
};
use hypermesh_tests::identities::{JoinedNode, join_node};
use hypermesh_tests::{InProcessApiServer, connect_target};
use tonic::Code;

use hypermesh_tests::fixtures;

fn forbidden(err: &tonic::Status, says: &str) {
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains(says),
        "{:?} should say {says:?}",
        err.message()
    );
}

async fn register(node: &JoinedNode) -> Node {
    let nodes = node.api::<Node>().await.unwrap();
    let mut me = nodes.get("", &node.name).await.unwrap();
    me.meta_mut()
        .labels
        .insert("hypermesh.io/role".into(), "worker".into());
    nodes.update(&me).await.unwrap()
}

fn secret(name: &str) -> Secret {
    Secret {
        metadata: Some(fixtures::meta("default", name)),
        spec: Some(v1::SecretSpec {
            data: [("k".to_string(), b"v".to_vec())].into(),
            ..Default::default()
        }),
        status: None,
    }
}

#[tokio::test]
async fn a_node_writes_only_its_own_objects() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let a = join_node(&server, "node-a").await.unwrap();
    let b = join_node(&server, "node-b").await.unwrap();
    register(&a).await;
    let node_b = register(&b).await;

    let nodes_as_a = a.api::<Node>().await.unwrap();
    // Not B's Node, not a new Node, not deleting, not cordoning itself.
    let mut hijacked = node_b.clone();
    hijacked
        .meta_mut()
        .labels
        .insert("owned".into(), "a".into());
    forbidden(
        &nodes_as_a.update(&hijacked).await.unwrap_err(),
        "node \"node-a\" cannot update nodes \"node-b\"",
    );
    forbidden(
        &nodes_as_a
            .delete(fixtures::delete_request("", "node-a"))
            .await
            .unwrap_err(),
        "cannot delete nodes",
    );
    let mut me = nodes_as_a.get("", "node-a").await.unwrap();
    me.spec.get_or_insert_with(Default::default).unschedulable = true;
    forbidden(&nodes_as_a.update(&me).await.unwrap_err(), "unschedulable");

    // Not B's Lease.
    let leases_as_a = a.api::<Lease>().await.unwrap();
    forbidden(
        &leases_as_a
            .create(&fixtures::lease("hypermesh-system", "node-node-b"))
            .await
            .unwrap_err(),
        "node \"node-a\" cannot create leases in namespace \"hypermesh-system\"",
    );
    leases_as_a
        .create(&fixtures::lease("hypermesh-system", "node-node-a"))
        .await
        .unwrap();

    // Not an Asset in B's name (and B is not blamed for it).
    let assets_as_a = a.api::<Asset>().await.unwrap();
    let fake = Asset {
        metadata: Some(fixtures::meta("", "node-b-disk")),
        spec: Some(AssetSpec {
            r#type: AssetType::Storage as i32,
            node_name: "node-b".into(),
            capacity: [("storage".to_string(), "1Ti".to_string())].into(),
            ..Default::default()
        }),
        status: None,
    };
    forbidden(
        &assets_as_a.create(&fake).await.unwrap_err(),
        "belongs to another node",
    );

    // Status only of its own Instances.
    server
        .api::<Secret>()
        .create(&secret("b-only"))
        .await
        .unwrap();
    server
        .api::<Secret>()
        .create(&secret("unused"))
        .await
        .unwrap();
    let on_b = server
        .api::<Instance>()
        .create(&fixtures::instance_using_secret("on-b", "node-b", "b-only"))
        .await
        .unwrap();
    let instances_as_a = a.api::<Instance>().await.unwrap();
    let mut faked = on_b.clone();
    faked.status.get_or_insert_with(Default::default).phase = v1::InstancePhase::Failed as i32;
    forbidden(
        &instances_as_a.update_status(&faked).await.unwrap_err(),
        "it is not bound to this node",
    );
    let instances_as_b = b.api::<Instance>().await.unwrap();
    instances_as_b.update_status(&faked).await.unwrap();
    // Beyond status, a node may only drop the containers finalizer of its own
    // Instances (confirming their containers are gone), nothing else.
    let mut relabelled = instances_as_b.get("default", "on-b").await.unwrap();
    relabelled
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert("app".into(), "stolen".into());
    forbidden(
        &instances_as_b.update(&relabelled).await.unwrap_err(),
        "may only remove the \"hypermesh.io/containers\" finalizer",
    );
    forbidden(
        &instances_as_a
            .update(&instances_as_b.get("default", "on-b").await.unwrap())
            .await
            .unwrap_err(),
        "it is not bound to this node",
    );
    // Nodes never create Instances or bind them.
    forbidden(
        &instances_as_a
            .create(&fixtures::instance("default", "mine"))
            .await
            .unwrap_err(),
        "cannot create instances",
    );

    // Secrets: only those its Instances use.
    let secrets_as_a = a.api::<Secret>().await.unwrap();
    forbidden(
        &secrets_as_a.get("default", "b-only").await.unwrap_err(),
        "no Instance bound to it uses that Secret",
    );
    let secrets_as_b = b.api::<Secret>().await.unwrap();
    assert!(secrets_as_b.get("default", "b-only").await.is_ok());
    forbidden(
        &secrets_as_b.get("default", "unused").await.unwrap_err(),
        "no Instance bound to it uses that Secret",
    );
    forbidden(
        &secrets_as_b.list(ListRequest::default()).await.unwrap_err(),
        "cannot list secrets",
    );

    // Its key is the one its certificate binds.
    let mut rekeyed = nodes_as_a.get("", "node-a").await.unwrap();
    rekeyed.spec.as_mut().unwrap().identity =
        Some(hypermesh_trust::NodeIdentity::generate().to_node_identity());
    let err = nodes_as_a.update(&rekeyed).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::NodeKeyMismatch), "{err:?}");
}

#[tokio::test]
async fn a_node_opens_only_its_own_tunnel() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let a = join_node(&server, "node-a").await.unwrap();
    let b = join_node(&server, "node-b").await.unwrap();

    let mut tunnel_as_b = AgentTunnelServiceClient::new(connect_target(&b.target).await.unwrap());
    let err = tunnel_as_b
        .listen(AgentHello {
            node_name: "node-a".into(),
        })
        .await
        .unwrap_err();
    forbidden(
        &err,
        "node \"node-b\" cannot open the tunnel of node \"node-a\"",
    );

    // A's own tunnel works, named by its certificate whatever it sends.
    let mut tunnel_as_a = AgentTunnelServiceClient::new(connect_target(&a.target).await.unwrap());
    let mut opens = tunnel_as_a
        .listen(AgentHello {
            node_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    // A session for an Instance on A reaches A's stream, not B's.
    let inst = server
        .api::<Instance>()
        .create(&{
            let mut i = fixtures::instance("default", "on-a");
            i.spec.as_mut().unwrap().node_name = "node-a".into();
            i
        })
        .await
        .unwrap();
    let channel = server.channel();
    let request = tokio::spawn(async move {
        let mut client = v1::instance_service_client::InstanceServiceClient::new(channel);
        client
            .logs(v1::LogsRequest {
                namespace: "default".into(),
                name: "on-a".into(),
                ..Default::default()
            })
            .await
    });
    let open = tokio::time::timeout(fixtures::EVENT_TIMEOUT, opens.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(open.instance_uid, inst.meta().uid);
    // B cannot attach to A's session.
    let first = v1::SessionFrame {
        session_id: open.session_id.clone(),
        payload: None,
    };
    let err = tunnel_as_b
        .attach(tokio_stream::iter(vec![first]))
        .await
        .unwrap_err();
    forbidden(&err, "belongs to another node");
    request.abort();
}

#[tokio::test]
async fn proof_challenges_are_issued_only_to_the_node_itself() {
    use hypermesh_api::v1::ProofChallengeRequest;
    use hypermesh_api::v1::asset_service_client::AssetServiceClient;

    let server = InProcessApiServer::start_tls().await.unwrap();
    let a = join_node(&server, "node-a").await.unwrap();
    join_node(&server, "node-b").await.unwrap();
    let mut as_a = AssetServiceClient::new(connect_target(&a.target).await.unwrap());

    let own = as_a
        .challenge(ProofChallengeRequest {
            asset_name: "node-a-cpu0".into(),
            node_name: String::new(),
        })
        .await;
    assert!(
        own.is_ok(),
        "a node gets challenges for its own Assets: {own:?}"
    );

    // Not for another node's Assets: their proofs are that node's to answer.
    let err = as_a
        .challenge(ProofChallengeRequest {
            asset_name: "node-b-cpu0".into(),
            node_name: "node-b".into(),
        })
        .await
        .unwrap_err();
    forbidden(
        &err,
        "node \"node-a\" cannot ask for challenges of node \"node-b\"",
    );

    // Nor for anyone without a certificate.
    let anonymous = connect_target(&hypermesh_tests::identities::anonymous(&server).unwrap())
        .await
        .unwrap();
    let err = AssetServiceClient::new(anonymous)
        .challenge(ProofChallengeRequest {
            asset_name: "node-a-cpu0".into(),
            node_name: "node-a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}
