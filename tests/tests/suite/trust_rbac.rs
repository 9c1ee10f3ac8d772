//! Users and roles over real mTLS: a viewer reads but cannot write or read Secrets; an
//! editor of one namespace writes workloads, instances, routes and secrets there but
//! cannot touch nodes, assets or roles, nor another namespace; an admin can do all of
//! it. Refusals are PERMISSION_DENIED and name the missing permission.

#![allow(clippy::unwrap_used)]

use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{self, ListRequest, Node, ObjectMeta, Role, Secret, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::{InProcessApiServer, connect_target, identities};
use tonic::Code;

use fixtures::{namespace, workload};
use hypermesh_tests::fixtures;

async fn api<K: Resource>(target: &hypermesh_api::client::Target) -> Api<K> {
    Api::new(connect_target(target).await.unwrap())
}

fn secret(ns: &str, name: &str) -> Secret {
    Secret {
        metadata: Some(fixtures::meta(ns, name)),
        spec: Some(v1::SecretSpec {
            data: [("password".to_string(), b"hunter2".to_vec())].into(),
            ..Default::default()
        }),
        status: None,
    }
}

fn assert_denied(err: &tonic::Status, says: &str) {
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(reason_of(err), Some(Reason::Forbidden), "{err:?}");
    assert!(
        err.message().contains(says),
        "{:?} should say {says:?}",
        err.message()
    );
}

#[tokio::test]
async fn viewer_reads_but_cannot_write_or_see_secrets() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    server
        .api::<Workload>()
        .create(&workload("default", "web", 1))
        .await
        .unwrap();
    server
        .api::<Secret>()
        .create(&secret("default", "db"))
        .await
        .unwrap();
    let viewer = identities::user(&server, "vera", "viewer", &[])
        .await
        .unwrap();

    let workloads = api::<Workload>(&viewer).await;
    let (items, _, _) = workloads.list(ListRequest::default()).await.unwrap();
    assert_eq!(items.len(), 1);
    let err = workloads
        .create(&workload("default", "other", 1))
        .await
        .unwrap_err();
    assert_denied(
        &err,
        "user \"vera\" cannot create workloads in namespace \"default\"",
    );
    let err = workloads
        .delete(fixtures::delete_request("default", "web"))
        .await
        .unwrap_err();
    assert_denied(&err, "cannot delete workloads");

    let secrets = api::<Secret>(&viewer).await;
    let err = secrets.get("default", "db").await.unwrap_err();
    assert_denied(
        &err,
        "user \"vera\" cannot get secrets \"db\" in namespace \"default\"",
    );
    let err = secrets.list(ListRequest::default()).await.unwrap_err();
    assert_denied(&err, "cannot list secrets");
    // Watches are authorized too.
    let err = secrets
        .watch(v1::WatchRequest::default())
        .await
        .unwrap_err();
    assert_denied(&err, "cannot watch secrets");
}

#[tokio::test]
async fn editor_writes_in_its_namespace_only_and_never_nodes_or_roles() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let namespaces = server.api::<v1::Namespace>();
    namespaces.create(&namespace("team-a")).await.unwrap();
    namespaces.create(&namespace("team-b")).await.unwrap();
    let editor = identities::user(&server, "bob", "editor", &["team-a"])
        .await
        .unwrap();

    let workloads = api::<Workload>(&editor).await;
    workloads
        .create(&workload("team-a", "web", 1))
        .await
        .unwrap();
    let err = workloads
        .create(&workload("team-b", "web", 1))
        .await
        .unwrap_err();
    assert_denied(
        &err,
        "user \"bob\" cannot create workloads in namespace \"team-b\"",
    );
    // Listing every namespace is more than a namespaced binding gives.
    let err = workloads.list(ListRequest::default()).await.unwrap_err();
    assert_denied(&err, "in every namespace");
    let (mine, _, _) = workloads
        .list(ListRequest {
            namespace: "team-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);

    let secrets = api::<Secret>(&editor).await;
    secrets.create(&secret("team-a", "db")).await.unwrap();
    assert!(secrets.get("team-a", "db").await.is_ok());

    let nodes = api::<Node>(&editor).await;
    let node = Node {
        metadata: Some(ObjectMeta {
            name: "sneaky".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_denied(
        &nodes.create(&node).await.unwrap_err(),
        "cannot create nodes",
    );
    let assets = api::<v1::Asset>(&editor).await;
    assert_denied(
        &assets.list(ListRequest::default()).await.unwrap_err(),
        "cannot list assets",
    );
    let roles = api::<Role>(&editor).await;
    let mut admin = server.api::<Role>().get("", "admin").await.unwrap();
    admin.meta_mut().labels.insert("owned".into(), "bob".into());
    assert_denied(
        &roles.update(&admin).await.unwrap_err(),
        "cannot update roles",
    );
    let bindings = api::<v1::RoleBinding>(&editor).await;
    assert_denied(
        &bindings.list(ListRequest::default()).await.unwrap_err(),
        "cannot list rolebindings",
    );
    // Nor may it make itself an admin through a namespace's policy label.
    let namespaces_as_bob = api::<v1::Namespace>(&editor).await;
    assert!(
        namespaces_as_bob
            .create(&namespace("team-c"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn admin_may_do_everything_and_anonymous_nothing() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let admin = identities::user(&server, "alice", "admin", &[])
        .await
        .unwrap();
    let nodes = api::<Node>(&admin).await;
    nodes
        .create(&Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let secrets = api::<Secret>(&admin).await;
    secrets.create(&secret("default", "db")).await.unwrap();
    assert!(secrets.list(ListRequest::default()).await.is_ok());

    let anonymous = identities::anonymous(&server).unwrap();
    let err = api::<Workload>(&anonymous)
        .await
        .list(ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("no client certificate"), "{err:?}");
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_and_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let server = InProcessApiServer::start_with(|c| {
        c.tls = Some(hypermesh_apiserver::TlsSettings::default());
        c.audit = Some(hypermesh_apiserver::audit::AuditSettings {
            path: log.clone(),
            max_bytes: 1 << 20,
            max_files: 2,
        });
    })
    .await
    .unwrap();
    let viewer = identities::user(&server, "vera", "viewer", &[])
        .await
        .unwrap();
    let workloads = api::<Workload>(&viewer).await;
    workloads.list(ListRequest::default()).await.unwrap();
    workloads
        .create(&workload("default", "web", 1))
        .await
        .unwrap_err();

    let lines = hypermesh_tests::wait_for(hypermesh_tests::DEFAULT_TIMEOUT, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["identity"] == "user:vera")
            .collect();
        (lines.len() >= 2).then_some(lines)
    })
    .await
    .unwrap();
    assert_eq!(lines[0]["verb"], "List");
    assert_eq!(lines[0]["resource"], "workloads");
    assert_eq!(lines[0]["code"], "OK");
    assert_eq!(lines[1]["verb"], "Create");
    assert_eq!(lines[1]["namespace"], "default");
    assert_eq!(lines[1]["name"], "web");
    assert_eq!(lines[1]["code"], "PermissionDenied");
    assert!(
        lines[1]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}
