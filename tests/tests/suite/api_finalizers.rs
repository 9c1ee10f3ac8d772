//! Finalizers hold deletion: Delete only sets deletion_timestamp (Get still works,
//! watchers see MODIFIED), no finalizer can be added meanwhile, and removing the last
//! one removes the object (NOT_FOUND, watchers see DELETED).

use hypermesh_tests::fixtures;

use fixtures::{assert_status, delete_request, next_change, rv, workload};
use hypermesh_api::reason::Reason;
use hypermesh_api::v1::{WatchEventType, WatchRequest, Workload};
use hypermesh_tests::InProcessApiServer;
use tonic::Code;

const HOLD: &str = "example.com/hold";

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let mut held = workload("default", "web", 1);
    held.metadata
        .as_mut()
        .expect("meta")
        .finalizers
        .push(HOLD.into());
    let created = api.create(&held).await.expect("create");
    let mut watch = api
        .watch(WatchRequest {
            namespace: "default".into(),
            resource_version: rv(&created),
            ..Default::default()
        })
        .await
        .expect("watch");

    // Delete only marks it.
    let marked = api
        .delete(delete_request("default", "web"))
        .await
        .expect("delete");
    let marked_meta = marked.metadata.clone().expect("meta");
    assert!(marked_meta.deletion_timestamp.is_some());
    assert_eq!(marked_meta.finalizers, vec![HOLD.to_string()]);
    assert!(rv(&marked) > rv(&created));

    let got = api.get("default", "web").await.expect("still readable");
    assert_eq!(got, marked);
    assert_eq!(got.spec, created.spec);

    let (kind, seen) = next_change::<Workload>(&mut watch).await;
    assert_eq!(kind, WatchEventType::Modified);
    assert_eq!(seen, marked);

    // Deleting again changes nothing.
    let again = api
        .delete(delete_request("default", "web"))
        .await
        .expect("second delete");
    assert_eq!(rv(&again), rv(&marked));
    assert_eq!(
        again.metadata.as_ref().map(|m| &m.deletion_timestamp),
        Some(&marked_meta.deletion_timestamp)
    );

    // No new finalizer while deleting.
    let mut more = got.clone();
    more.metadata
        .as_mut()
        .expect("meta")
        .finalizers
        .push("example.com/another".into());
    let err = api.update(&more).await.expect_err("adding a finalizer");
    assert_status(&err, Code::InvalidArgument, Reason::FieldInvalid);
    assert!(
        err.message().contains("metadata.finalizers")
            && err.message().contains("example.com/another"),
        "{}",
        err.message()
    );
    assert_eq!(api.get("default", "web").await.expect("get"), marked);

    // Removing the last finalizer lets it go.
    let mut release = got.clone();
    release.metadata.as_mut().expect("meta").finalizers.clear();
    let released = api.update(&release).await.expect("remove finalizer");
    assert!(rv(&released) > rv(&marked));
    let err = api.get("default", "web").await.expect_err("gone");
    assert_status(&err, Code::NotFound, Reason::NotFound);

    let (kind, seen) = next_change::<Workload>(&mut watch).await;
    assert_eq!(kind, WatchEventType::Deleted);
    assert_eq!(
        seen.metadata.as_ref().map(|m| m.uid.as_str()),
        Some(marked_meta.uid.as_str())
    );
    assert_eq!(
        rv(&seen),
        rv(&released),
        "DELETED carries the deletion's revision"
    );
}

#[tokio::test]
async fn removing_one_of_two_finalizers_keeps_the_object() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let mut held = workload("default", "web", 1);
    held.metadata.as_mut().expect("meta").finalizers =
        vec![HOLD.into(), "example.com/second".into()];
    api.create(&held).await.expect("create");
    let marked = api
        .delete(delete_request("default", "web"))
        .await
        .expect("delete");

    let mut one_left = marked.clone();
    one_left
        .metadata
        .as_mut()
        .expect("meta")
        .finalizers
        .retain(|f| f != HOLD);
    let updated = api.update(&one_left).await.expect("remove one finalizer");
    assert_eq!(
        updated.metadata.as_ref().map(|m| m.finalizers.clone()),
        Some(vec!["example.com/second".to_string()])
    );
    let got = api.get("default", "web").await.expect("still there");
    assert!(
        got.metadata
            .as_ref()
            .expect("meta")
            .deletion_timestamp
            .is_some()
    );

    let mut none_left = got;
    none_left
        .metadata
        .as_mut()
        .expect("meta")
        .finalizers
        .clear();
    api.update(&none_left).await.expect("remove the last one");
    let err = api.get("default", "web").await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
}
