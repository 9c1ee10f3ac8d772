//! Optimistic concurrency: a write carrying a stale resource_version (Update,
//! UpdateStatus, or a Delete precondition) fails with ABORTED / Conflict and changes
//! nothing, and of ten concurrent updates from the same version exactly one wins.

use hypermesh_tests::fixtures;

use fixtures::{assert_status, rv, workload};
use hypermesh_api::reason::Reason;
use hypermesh_api::v1::{self, DeleteRequest, Workload};
use hypermesh_tests::InProcessApiServer;
use tonic::Code;

#[tokio::test]
async fn stale_update_is_aborted_and_leaves_the_object_alone() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let original = api
        .create(&workload("default", "web", 1))
        .await
        .expect("create");

    let mut first = original.clone();
    first.spec.as_mut().expect("spec").replicas = 2;
    let current = api.update(&first).await.expect("first update");
    assert!(rv(&current) > rv(&original));

    // A second writer still holding the original version.
    let mut stale = original.clone();
    stale.spec.as_mut().expect("spec").replicas = 7;
    stale
        .metadata
        .as_mut()
        .expect("meta")
        .annotations
        .insert("writer".into(), "stale".into());
    let err = api.update(&stale).await.expect_err("stale update");
    assert_status(&err, Code::Aborted, Reason::Conflict);
    assert!(
        err.message().contains(&rv(&original).to_string())
            && err.message().contains(&rv(&current).to_string()),
        "the message names both versions: {}",
        err.message()
    );

    let stored = api.get("default", "web").await.expect("get");
    assert_eq!(stored, current, "the stale update changed nothing");
    assert_eq!(stored.spec.as_ref().map(|s| s.replicas), Some(2));
    assert_eq!(stored.metadata.as_ref().map(|m| m.generation), Some(2));
}

#[tokio::test]
async fn stale_update_status_is_aborted() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let original = api
        .create(&workload("default", "web", 1))
        .await
        .expect("create");

    let mut reported = original.clone();
    reported.status = Some(v1::WorkloadStatus {
        ready_replicas: 1,
        ..Default::default()
    });
    let current = api.update_status(&reported).await.expect("status update");
    assert!(rv(&current) > rv(&original));

    let mut stale = original.clone();
    stale.status = Some(v1::WorkloadStatus {
        ready_replicas: 9,
        ..Default::default()
    });
    let err = api.update_status(&stale).await.expect_err("stale status");
    assert_status(&err, Code::Aborted, Reason::Conflict);

    let stored = api.get("default", "web").await.expect("get");
    assert_eq!(stored, current);
    assert_eq!(stored.status.map(|s| s.ready_replicas), Some(1));
}

#[tokio::test]
async fn delete_with_a_stale_precondition_is_aborted() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let original = api
        .create(&workload("default", "web", 1))
        .await
        .expect("create");
    let mut changed = original.clone();
    changed.spec.as_mut().expect("spec").replicas = 3;
    let current = api.update(&changed).await.expect("update");

    let err = api
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "web".into(),
            resource_version: rv(&original),
            ..Default::default()
        })
        .await
        .expect_err("stale delete");
    assert_status(&err, Code::Aborted, Reason::Conflict);
    assert_eq!(
        api.get("default", "web").await.expect("still there"),
        current
    );

    // The current version as precondition deletes it.
    api.delete(DeleteRequest {
        namespace: "default".into(),
        name: "web".into(),
        resource_version: rv(&current),
        ..Default::default()
    })
    .await
    .expect("delete at the current version");
    let err = api.get("default", "web").await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn exactly_one_of_ten_concurrent_updates_wins() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let original = api
        .create(&workload("default", "web", 1))
        .await
        .expect("create");

    let start = std::sync::Arc::new(tokio::sync::Barrier::new(10));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let api = api.clone();
        let start = start.clone();
        let mut mine = original.clone();
        // Every writer changes something different, so none is a no-op.
        mine.spec.as_mut().expect("spec").replicas = 10 + i;
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            (i, api.update(&mine).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, result) = task.await.expect("task");
        match result {
            Ok(obj) => winners.push((i, obj)),
            Err(e) => assert_status(&e, Code::Aborted, Reason::Conflict),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (i, won) = winners.remove(0);

    let stored = api.get("default", "web").await.expect("get");
    assert_eq!(stored, won);
    assert_eq!(stored.spec.as_ref().map(|s| s.replicas), Some(10 + i));
    assert_eq!(
        stored.metadata.as_ref().map(|m| m.generation),
        Some(2),
        "one spec change, one generation bump"
    );
}
