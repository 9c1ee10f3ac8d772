//! `InstanceService.Bind`: binds once, to a node that exists, and records it.

use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{self, BindRequest, Instance, Node, ObjectMeta};
use hypermesh_tests::InProcessApiServer;
use tonic::Code;

fn instance(name: &str) -> Instance {
    Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: "hypermesh.local/busybox:latest".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn node(name: &str) -> Node {
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn bind(name: &str, node: &str) -> BindRequest {
    BindRequest {
        namespace: "default".into(),
        name: name.into(),
        node_name: node.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn binds_once_to_an_existing_node() {
    let server = InProcessApiServer::start().await.expect("server");
    let instances = server.api::<Instance>();
    server
        .api::<Node>()
        .create(&node("n1"))
        .await
        .expect("node");
    let created = instances.create(&instance("i1")).await.expect("instance");
    assert_eq!(
        created.status.as_ref().map(|s| s.phase),
        Some(v1::InstancePhase::Pending as i32),
        "new Instances start Pending"
    );

    let err = instances
        .bind(bind("i1", "ghost"))
        .await
        .expect_err("missing node");
    assert_eq!(
        (err.code(), reason_of(&err)),
        (Code::NotFound, Some(Reason::NodeNotFound))
    );

    let mut stale = bind("i1", "n1");
    stale.resource_version = created.metadata.as_ref().expect("meta").resource_version + 100;
    assert_eq!(
        instances.bind(stale).await.expect_err("stale").code(),
        Code::Aborted
    );

    let bound = instances.bind(bind("i1", "n1")).await.expect("bind");
    assert_eq!(
        bound.spec.as_ref().map(|s| s.node_name.as_str()),
        Some("n1")
    );
    let status = bound.status.as_ref().expect("status");
    assert_eq!(status.phase, v1::InstancePhase::Scheduled as i32);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.r#type == "Scheduled" && c.status == "True")
    );

    let err = instances
        .bind(bind("i1", "n1"))
        .await
        .expect_err("already bound");
    assert_eq!(
        (err.code(), reason_of(&err)),
        (Code::FailedPrecondition, Some(Reason::AlreadyBound))
    );

    // Moving a bound Instance with Update is refused too.
    let mut moved = instances.get("default", "i1").await.expect("get");
    moved.spec.as_mut().expect("spec").node_name = "n2".into();
    assert_eq!(
        instances
            .update(&moved)
            .await
            .expect_err("immutable")
            .code(),
        Code::InvalidArgument
    );

    // The stored object agrees.
    let stored = instances.get("default", "i1").await.expect("get");
    assert_eq!(
        stored.spec.as_ref().map(|s| s.node_name.as_str()),
        Some("n1")
    );
}
