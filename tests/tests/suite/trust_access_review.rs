//! `AccessReviewService.Check` over real mTLS answers "may I?" exactly as the writes
//! themselves are judged: a viewer may read but not scale, delete or cordon; an editor
//! of one namespace may write workloads there only and cannot cordon; an admin may do
//! everything. Asking changes nothing, and bad questions name the field.

#![allow(clippy::unwrap_used)]

use hypermesh_api::v1::access_review_service_client::AccessReviewServiceClient;
use hypermesh_api::v1::{AccessCheck, AccessReviewRequest, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::fixtures::workload;
use hypermesh_tests::{InProcessApiServer, connect_target, identities};
use tonic::Code;

fn check(verb: &str, resource: &str, namespace: &str) -> AccessCheck {
    AccessCheck {
        verb: verb.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: String::new(),
    }
}

/// scale in default, delete workloads in default, scale in team-a, cordon, read logs.
fn questions() -> AccessReviewRequest {
    AccessReviewRequest {
        checks: vec![
            check("update", "workloads", "default"),
            check("delete", "workloads", "default"),
            check("update", "workloads", "team-a"),
            check("update", "nodes", ""),
            check("get", "instances/logs", "default"),
        ],
    }
}

async fn ask(
    target: &hypermesh_api::client::Target,
    request: AccessReviewRequest,
) -> Result<(String, Vec<bool>), tonic::Status> {
    let mut client = AccessReviewServiceClient::new(connect_target(target).await.unwrap());
    let answer = client.check(request).await?.into_inner();
    Ok((answer.identity, answer.allowed))
}

#[tokio::test]
async fn answers_match_each_role() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    server
        .api::<Workload>()
        .create(&workload("default", "web", 1))
        .await
        .unwrap();
    let viewer = identities::user(&server, "vera", "viewer", &[])
        .await
        .unwrap();
    let editor = identities::user(&server, "ed", "editor", &["default"])
        .await
        .unwrap();

    let (who, allowed) = ask(&viewer, questions()).await.unwrap();
    assert_eq!(who, "user:vera");
    assert_eq!(allowed, [false, false, false, false, true]);
    let (who, allowed) = ask(&editor, questions()).await.unwrap();
    assert_eq!(who, "user:ed");
    assert_eq!(allowed, [true, true, false, false, true]);
    let (_, allowed) = ask(server.target(), questions()).await.unwrap();
    assert_eq!(allowed, [true; 5]);

    // The answers hold for the real writes, and asking changed nothing.
    let web = server
        .api::<Workload>()
        .get("default", "web")
        .await
        .unwrap();
    let as_viewer = Api::<Workload>::new(connect_target(&viewer).await.unwrap());
    let err = as_viewer.update(&web).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let as_editor = Api::<Workload>::new(connect_target(&editor).await.unwrap());
    let written = as_editor.update(&web).await.unwrap();
    assert_eq!(written.meta().name, "web");

    // Bad questions name the field.
    let err = ask(
        &viewer,
        AccessReviewRequest {
            checks: vec![check("get", "nodes", ""), check("scale", "workloads", "")],
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("checks[1].verb: "), "{err:?}");
    let err = ask(
        &viewer,
        AccessReviewRequest {
            checks: vec![check("get", "nodes", ""); 65],
        },
    )
    .await
    .unwrap_err();
    assert!(err.message().contains("at most 64"), "{err:?}");
}

#[tokio::test]
async fn callers_without_a_cluster_certificate_are_refused() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let anonymous = identities::anonymous(&server).unwrap();
    let err = ask(&anonymous, questions()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // A certificate of another CA does not even complete the handshake.
    let foreign = identities::foreign(&server).unwrap();
    let refused = match connect_target(&foreign).await {
        Err(_) => true,
        Ok(channel) => AccessReviewServiceClient::new(channel)
            .check(questions())
            .await
            .is_err(),
    };
    assert!(refused, "a foreign certificate was answered");
}
