//! Story: the usage API keeps node restriction. A node reports only its own usage
//! (another node's name is refused with PERMISSION_DENIED), and an Instance it names
//! that is not bound to it is dropped from its report; readers see what was kept.

use hypermesh_api::v1::usage_service_client::UsageServiceClient;
use hypermesh_api::v1::{NodeUsageReport, ResourceUsage, UsageListRequest};
use hypermesh_tests::identities::join_node;
use hypermesh_tests::{InProcessApiServer, connect_target, fixtures};
use tonic::Code;

fn usage(namespace: &str, name: &str, memory: u64) -> ResourceUsage {
    ResourceUsage {
        namespace: namespace.into(),
        name: name.into(),
        cpu_millicores: Some(100),
        memory_bytes: memory,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_node_reports_only_its_own_usage() {
    let server = InProcessApiServer::start_tls().await.expect("apiserver");
    let a = join_node(&server, "node-a").await.expect("join a");
    let _b = join_node(&server, "node-b").await.expect("join b");
    let mut as_a = UsageServiceClient::new(connect_target(&a.target).await.expect("channel"));

    let refused = as_a
        .report(NodeUsageReport {
            node_name: "node-b".into(),
            node: Some(usage("", "node-b", 1)),
            instances: vec![],
        })
        .await
        .expect_err("a reports for b");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("cannot report the usage of node \"node-b\""),
        "{refused:?}"
    );

    // An Instance bound to nobody, claimed by a: dropped.
    let instances = server.api::<hypermesh_api::v1::Instance>();
    instances
        .create(&fixtures::instance("default", "elsewhere"))
        .await
        .expect("create instance");
    as_a.report(NodeUsageReport {
        node_name: "node-a".into(),
        node: Some(usage("", "node-a", 7 << 20)),
        instances: vec![usage("default", "elsewhere", 5 << 20)],
    })
    .await
    .expect("a reports its own");

    let mut admin = UsageServiceClient::new(server.channel());
    let nodes = admin
        .list(UsageListRequest {
            kind: "nodes".into(),
            namespace: String::new(),
        })
        .await
        .expect("list nodes")
        .into_inner()
        .items;
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(
        (nodes[0].name.as_str(), nodes[0].memory_bytes),
        ("node-a", 7 << 20)
    );
    let listed = admin
        .list(UsageListRequest {
            kind: "instances".into(),
            namespace: String::new(),
        })
        .await
        .expect("list instances")
        .into_inner()
        .items;
    assert!(
        listed.is_empty(),
        "an Instance not bound to node-a: {listed:?}"
    );

    let bad = admin
        .list(UsageListRequest {
            kind: "pods".into(),
            namespace: String::new(),
        })
        .await
        .expect_err("unknown kind");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("kind: \"pods\""), "{bad:?}");
}
