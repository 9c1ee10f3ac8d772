//! Namespaces: the system ones exist from the start and cannot be deleted; deleting
//! another marks it TERMINATING, refuses new objects in it, deletes everything in it
//! (waiting for their finalizers), then removes the namespace itself — leaving other
//! namespaces untouched.

use hypermesh_tests::fixtures;

use fixtures::{
    EVENT_TIMEOUT, assert_status, delete_request, get_opt, instance, lease, list_request, names,
    namespace, wait_gone, workload,
};
use hypermesh_api::Resource;
use hypermesh_api::reason::Reason;
use hypermesh_api::v1::{Instance, Lease, Namespace, NamespacePhase, Secret, Workload};
use hypermesh_tests::{InProcessApiServer, wait_for};
use tonic::Code;

const HOLD: &str = "example.com/hold";

fn phase(ns: &Namespace) -> Option<NamespacePhase> {
    ns.status
        .as_ref()
        .and_then(|s| NamespacePhase::try_from(s.phase).ok())
}

#[tokio::test]
async fn system_namespaces_exist_and_cannot_be_deleted() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Namespace>();
    let (all, _, _) = api.list(list_request("")).await.expect("list");
    assert_eq!(names(&all), ["default", "hypermesh-system"]);
    for ns in &all {
        assert_eq!(phase(ns), Some(NamespacePhase::Active), "{ns:?}");
    }
    for name in hypermesh_api::SYSTEM_NAMESPACES {
        let before = api.get("", name).await.expect("get");
        let err = api
            .delete(delete_request("", name))
            .await
            .expect_err("deleting a system namespace");
        assert_status(&err, Code::FailedPrecondition, Reason::DeleteForbidden);
        assert_eq!(api.get("", name).await.expect("still there"), before);
    }
}

#[tokio::test]
async fn deleting_a_namespace_deletes_everything_in_it_then_itself() {
    let server = InProcessApiServer::start().await.expect("server");
    let namespaces = server.api::<Namespace>();
    let workloads = server.api::<Workload>();
    let instances = server.api::<Instance>();
    let leases = server.api::<Lease>();
    let secrets = server.api::<Secret>();
    for name in ["team-a", "team-b"] {
        let ns = namespaces
            .create(&namespace(name))
            .await
            .expect("create ns");
        assert_eq!(phase(&ns), Some(NamespacePhase::Active));
    }

    // Contents of team-a, one of them held by a finalizer.
    workloads
        .create(&workload("team-a", "web", 2))
        .await
        .expect("workload");
    instances
        .create(&instance("team-a", "web-0"))
        .await
        .expect("instance");
    leases
        .create(&lease("team-a", "lock"))
        .await
        .expect("lease");
    secrets
        .create(&Secret {
            metadata: Some(fixtures::meta("team-a", "token")),
            ..Default::default()
        })
        .await
        .expect("secret");
    let mut held = lease("team-a", "held");
    held.metadata
        .as_mut()
        .expect("meta")
        .finalizers
        .push(HOLD.into());
    leases.create(&held).await.expect("held lease");

    // Neighbours that must survive.
    let b_web = workloads
        .create(&workload("team-b", "web", 1))
        .await
        .expect("team-b workload");
    let b_lease = leases
        .create(&lease("team-b", "lock"))
        .await
        .expect("team-b lease");
    let default_web = workloads
        .create(&workload("default", "web", 1))
        .await
        .expect("default workload");

    let deleting = namespaces
        .delete(delete_request("", "team-a"))
        .await
        .expect("delete namespace");
    assert!(deleting.meta().deletion_timestamp.is_some());
    assert_eq!(phase(&deleting), Some(NamespacePhase::Terminating));
    let got = namespaces.get("", "team-a").await.expect("still there");
    assert_eq!(phase(&got), Some(NamespacePhase::Terminating));

    // Nothing new may be created in it.
    let err = leases
        .create(&lease("team-a", "late"))
        .await
        .expect_err("create in a terminating namespace");
    assert_status(&err, Code::FailedPrecondition, Reason::NamespaceTerminating);

    // Its contents go; the finalizer holds one object (and so the namespace).
    wait_gone(&workloads, "team-a", "web").await;
    wait_gone(&instances, "team-a", "web-0").await;
    wait_gone(&leases, "team-a", "lock").await;
    wait_gone(&secrets, "team-a", "token").await;
    let held = wait_for(EVENT_TIMEOUT, || async {
        get_opt(&leases, "team-a", "held")
            .await
            .filter(|l| l.meta().deletion_timestamp.is_some())
    })
    .await
    .expect("the held lease is marked for deletion");
    let ns = namespaces
        .get("", "team-a")
        .await
        .expect("the namespace waits for its last object");
    assert_eq!(phase(&ns), Some(NamespacePhase::Terminating));

    let mut release = held;
    release.metadata.as_mut().expect("meta").finalizers.clear();
    leases.update(&release).await.expect("remove finalizer");
    wait_gone(&leases, "team-a", "held").await;
    wait_gone(&namespaces, "", "team-a").await;

    for (kind, items) in [
        (
            "workloads",
            names(
                &workloads
                    .list(list_request("team-a"))
                    .await
                    .expect("list")
                    .0,
            ),
        ),
        (
            "leases",
            names(&leases.list(list_request("team-a")).await.expect("list").0),
        ),
    ] {
        assert!(items.is_empty(), "{kind} left in team-a: {items:?}");
    }
    let err = leases
        .create(&lease("team-a", "again"))
        .await
        .expect_err("the namespace is gone");
    assert_status(&err, Code::NotFound, Reason::NamespaceNotFound);

    // Everything elsewhere is exactly as it was.
    assert_eq!(get_opt(&workloads, "team-b", "web").await, Some(b_web));
    assert_eq!(get_opt(&leases, "team-b", "lock").await, Some(b_lease));
    assert_eq!(
        get_opt(&workloads, "default", "web").await,
        Some(default_web)
    );
    let team_b = namespaces.get("", "team-b").await.expect("team-b");
    assert_eq!(phase(&team_b), Some(NamespacePhase::Active));
    assert!(team_b.meta().deletion_timestamp.is_none());

    // The name can be used again.
    let reborn = namespaces
        .create(&namespace("team-a"))
        .await
        .expect("recreate team-a");
    assert_eq!(phase(&reborn), Some(NamespacePhase::Active));
    leases
        .create(&lease("team-a", "fresh"))
        .await
        .expect("create in the new team-a");
}

#[tokio::test]
async fn an_empty_namespace_goes_at_once() {
    let server = InProcessApiServer::start().await.expect("server");
    let namespaces = server.api::<Namespace>();
    namespaces
        .create(&namespace("empty"))
        .await
        .expect("create ns");
    namespaces
        .delete(delete_request("", "empty"))
        .await
        .expect("delete");
    wait_gone(&namespaces, "", "empty").await;
}
