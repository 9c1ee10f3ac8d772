//! Create, get, update, update-status and delete a Workload through real gRPC, and
//! check what the server owns: uid, resource_version, generation, timestamps.

use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{self, DeleteRequest, ObjectMeta, Workload};
use hypermesh_tests::InProcessApiServer;
use tonic::Code;

fn workload(name: &str, replicas: i32) -> Workload {
    let labels: std::collections::BTreeMap<String, String> =
        [("app".to_string(), name.to_string())].into();
    Workload {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: labels.clone(),
            ..Default::default()
        }),
        spec: Some(v1::WorkloadSpec {
            replicas,
            selector: labels.clone(),
            template: Some(v1::InstanceTemplate {
                labels,
                containers: vec![v1::Container {
                    name: "main".into(),
                    image: "hypermesh.local/busybox:latest".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[tokio::test]
async fn workload_lifecycle_through_grpc() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();

    let created = api.create(&workload("web", 2)).await.expect("create");
    let meta = created.metadata.clone().expect("metadata");
    assert!(!meta.uid.is_empty());
    assert!(meta.resource_version > 0);
    assert_eq!(meta.generation, 1);
    assert!(meta.creation_timestamp.is_some());

    let err = api
        .create(&workload("web", 2))
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(reason_of(&err), Some(Reason::AlreadyExists));

    let got = api.get("default", "web").await.expect("get");
    assert_eq!(got, created);

    // Metadata-only change: no generation bump.
    let mut labelled = got.clone();
    labelled
        .metadata
        .as_mut()
        .expect("meta")
        .annotations
        .insert("note".into(), "hi".into());
    let labelled = api.update(&labelled).await.expect("update annotations");
    assert_eq!(labelled.metadata.as_ref().expect("meta").generation, 1);
    assert!(labelled.metadata.as_ref().expect("meta").resource_version > meta.resource_version);

    // Spec change bumps generation; status sent with Update is ignored.
    let mut scaled = labelled.clone();
    scaled.spec.as_mut().expect("spec").replicas = 5;
    scaled.status = Some(v1::WorkloadStatus {
        ready_replicas: 99,
        ..Default::default()
    });
    let scaled = api.update(&scaled).await.expect("update spec");
    assert_eq!(scaled.metadata.as_ref().expect("meta").generation, 2);
    assert_eq!(scaled.status, None);

    // UpdateStatus changes only status.
    let mut reported = scaled.clone();
    reported.status = Some(v1::WorkloadStatus {
        ready_replicas: 3,
        ..Default::default()
    });
    reported.spec.as_mut().expect("spec").replicas = 100;
    let reported = api.update_status(&reported).await.expect("update status");
    assert_eq!(reported.status.as_ref().map(|s| s.ready_replicas), Some(3));
    assert_eq!(reported.spec.as_ref().map(|s| s.replicas), Some(5));
    assert_eq!(reported.metadata.as_ref().expect("meta").generation, 2);

    // Writing the same object again changes nothing.
    let again = api.update(&reported).await.expect("no-op update");
    assert_eq!(
        again.metadata.as_ref().expect("meta").resource_version,
        reported.metadata.as_ref().expect("meta").resource_version
    );

    let deleted = api
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "web".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    assert_eq!(deleted.metadata.as_ref().expect("meta").uid, meta.uid);
    let err = api.get("default", "web").await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("workloads \"web\""),
        "{}",
        err.message()
    );
    server.stop().await.expect("clean stop");
}
