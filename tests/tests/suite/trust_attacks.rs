//! The attacks issue 13 lists, replayed over real mTLS against a TLS apiserver; each
//! is refused now, and the cluster keeps working afterwards:
//! - an Instance that names its own node, mounts the host's `/` or asks to be
//!   privileged (the scheduler skipped, root on the host);
//! - a node marking another node Suspect with a bad proof in its name, and clearing
//!   its own Suspect mark with a plain status write;
//! - (the tunnel hijack, the key takeover and the node-name takeover are in
//!   `trust_node_restriction.rs` and `trust_join.rs`; plaintext without --insecure-dev
//!   in `trust_tls.rs`.)

#![allow(clippy::unwrap_used)]

use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{self, Asset, AssetSpec, AssetType, Instance, ListRequest, Node, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::proofs::prove;
use hypermesh_tests::{DEFAULT_TIMEOUT, InProcessApiServer, connect_target, identities, wait_for};

use hypermesh_tests::fixtures;

fn policy_denied(err: &tonic::Status, says: &str) {
    assert_eq!(reason_of(err), Some(Reason::PolicyDenied), "{err:?}");
    assert!(
        err.message().contains(says),
        "{:?} should say {says:?}",
        err.message()
    );
}

fn root_of_the_host() -> v1::Volume {
    v1::Volume {
        name: "root".into(),
        source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
            path: "/".into(),
        })),
    }
}

#[tokio::test]
async fn an_instance_cannot_pick_its_node_mount_the_host_or_be_privileged() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    server
        .api::<v1::Namespace>()
        .create(&fixtures::namespace("team-a"))
        .await
        .unwrap();
    let editor = identities::user(&server, "mallory", "editor", &["team-a"])
        .await
        .unwrap();
    let instances = Api::<Instance>::new(connect_target(&editor).await.unwrap());

    let mut pinned = fixtures::instance("team-a", "pinned");
    pinned.spec.as_mut().unwrap().node_name = "victim".into();
    policy_denied(
        &instances.create(&pinned).await.unwrap_err(),
        "spec.nodeName",
    );

    let mut rooted = fixtures::instance("team-a", "rooted");
    let spec = rooted.spec.as_mut().unwrap();
    spec.volumes = vec![root_of_the_host()];
    spec.containers[0].volume_mounts = vec![v1::VolumeMount {
        name: "root".into(),
        mount_path: "/host".into(),
        read_only: false,
    }];
    policy_denied(
        &instances.create(&rooted).await.unwrap_err(),
        "spec.volumes[0].hostPath",
    );

    let mut privileged = fixtures::instance("team-a", "privileged");
    privileged.spec.as_mut().unwrap().containers[0].security_context = Some(v1::SecurityContext {
        privileged: true,
        host_network: true,
        ..Default::default()
    });
    let err = instances.create(&privileged).await.unwrap_err();
    policy_denied(&err, "securityContext.privileged");
    assert!(
        err.message().contains("securityContext.hostNetwork"),
        "{err:?}"
    );

    let workloads = Api::<Workload>::new(connect_target(&editor).await.unwrap());
    let mut template_rooted = fixtures::workload("team-a", "web", 1);
    let template = template_rooted
        .spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap();
    template.volumes = vec![root_of_the_host()];
    policy_denied(
        &workloads.create(&template_rooted).await.unwrap_err(),
        "spec.template.volumes[0].hostPath",
    );

    // An admin decides a namespace may touch its hosts; then the editor's hostPath
    // goes through there (but still not a chosen node).
    let namespaces = server.api::<v1::Namespace>();
    let mut ns = namespaces.get("", "team-a").await.unwrap();
    ns.meta_mut()
        .labels
        .insert("hypermesh.io/policy".into(), "privileged".into());
    namespaces.update(&ns).await.unwrap();
    instances.create(&rooted).await.unwrap();
    policy_denied(
        &instances.create(&pinned).await.unwrap_err(),
        "spec.nodeName",
    );

    // The cluster keeps working.
    workloads
        .create(&fixtures::workload("team-a", "fine", 1))
        .await
        .unwrap();
}

async fn suspect(nodes: &Api<Node>, name: &str) -> Option<String> {
    nodes
        .get("", name)
        .await
        .unwrap()
        .status?
        .conditions
        .into_iter()
        .find(|c| c.r#type == "Suspect")
        .map(|c| c.status)
}

/// An Asset proved by `identity`, answering a challenge the admin asked for `node`.
async fn disk(
    server: &InProcessApiServer,
    identity: &hypermesh_trust::NodeIdentity,
    node: &str,
    name: &str,
) -> Asset {
    let spec = AssetSpec {
        r#type: AssetType::Storage as i32,
        node_name: node.into(),
        capacity: [("storage".to_string(), "64Ki".to_string())].into(),
        privacy: hypermesh_api::v1::PrivacyLevel::Untrusted as i32,
        ..Default::default()
    };
    let mut asset = Asset {
        metadata: Some(fixtures::meta("", name)),
        spec: Some(spec),
        status: None,
    };
    prove(&server.api::<Asset>(), identity, "", &mut asset)
        .await
        .unwrap();
    asset
}

#[tokio::test]
async fn nodes_cannot_make_others_suspect_nor_clear_their_own_mark() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let a = identities::join_node(&server, "node-a").await.unwrap();
    let b = identities::join_node(&server, "node-b").await.unwrap();
    let nodes = server.api::<Node>();

    // B forges a bad proof in A's name: refused as B's write of A's asset; A untouched.
    let assets_as_b = b.api::<Asset>().await.unwrap();
    let mut forged = disk(&server, &b.identity, "node-a", "node-a-sdz").await;
    forged
        .spec
        .as_mut()
        .unwrap()
        .proof
        .as_mut()
        .unwrap()
        .stake
        .as_mut()
        .unwrap()
        .signature[5] ^= 1;
    let err = assets_as_b.create(&forged).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert_eq!(suspect(&nodes, "node-a").await, None);

    // A sends a bad proof of its own: A becomes Suspect.
    let assets_as_a = a.api::<Asset>().await.unwrap();
    let mut bad = disk(&server, &a.identity, "node-a", "node-a-sdz").await;
    bad.spec
        .as_mut()
        .unwrap()
        .proof
        .as_mut()
        .unwrap()
        .stake
        .as_mut()
        .unwrap()
        .signature[5] ^= 1;
    let err = assets_as_a.create(&bad).await.unwrap_err();
    assert_eq!(reason_of(&err), Some(Reason::ProofForged), "{err:?}");
    wait_for(DEFAULT_TIMEOUT, || async {
        (suspect(&nodes, "node-a").await.as_deref() == Some("True")).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(suspect(&nodes, "node-b").await, None);

    // A cannot clear the mark: not by a status write, not by dropping the taint.
    let nodes_as_a = a.api::<Node>().await.unwrap();
    let mut me = nodes_as_a.get("", "node-a").await.unwrap();
    for c in &mut me.status.as_mut().unwrap().conditions {
        if c.r#type == "Suspect" {
            c.status = "False".into();
        }
    }
    nodes_as_a.update_status(&me).await.unwrap();
    assert_eq!(suspect(&nodes, "node-a").await.as_deref(), Some("True"));
    let mut me = nodes_as_a.get("", "node-a").await.unwrap();
    me.spec.as_mut().unwrap().taints.clear();
    nodes_as_a.update(&me).await.unwrap();
    let taints = nodes.get("", "node-a").await.unwrap().spec.unwrap().taints;
    assert!(
        taints.iter().any(|t| t.key == "hypermesh.io/suspect"),
        "{taints:?}"
    );

    // A user with node write access still cannot: only admins trust nodes.
    let viewer = identities::user(&server, "vera", "viewer", &[])
        .await
        .unwrap();
    let nodes_as_viewer = Api::<Node>::new(connect_target(&viewer).await.unwrap());
    assert!(nodes_as_viewer.update_status(&me).await.is_err());

    // The cluster keeps working: A's good proofs are still admitted, lists answer.
    assets_as_a
        .create(&disk(&server, &a.identity, "node-a", "node-a-sdy").await)
        .await
        .unwrap();
    let (all, _, _) = nodes.list(ListRequest::default()).await.unwrap();
    assert_eq!(all.len(), 2);
}
