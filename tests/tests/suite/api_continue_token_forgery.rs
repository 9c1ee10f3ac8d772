//! A List continue token cannot be forged: one edited to an older revision (to read a
//! Secret deleted since) and one issued for another namespace's listing are refused
//! with INVALID_ARGUMENT naming `continue_token`; the real token still pages; and two
//! apiservers of an HA cluster (one key file) accept each other's tokens.

use hypermesh_api::Resource;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{self, ListRequest, Secret};
use hypermesh_api::{Api, client::connect_to};
use hypermesh_tests::InProcessApiServer;
use hypermesh_tests::etcd::EtcdCluster;
use hypermesh_tests::fixtures::{self, namespace};
use hypermesh_tests::ha::{admin_on_all, apiserver_on};
use tonic::Code;

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

fn page(namespace: &str, continue_token: &str) -> ListRequest {
    ListRequest {
        namespace: namespace.into(),
        limit: 1,
        continue_token: continue_token.into(),
        ..Default::default()
    }
}

fn names(items: &[Secret]) -> Vec<String> {
    items.iter().map(|s| s.meta().name.clone()).collect()
}

/// `token` with its revision (the second dot-separated field) replaced.
fn with_revision(token: &str, revision: u64) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = revision.to_string();
    parts.join(".")
}

fn assert_refused(err: &tonic::Status, what: &str) {
    assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    assert_eq!(
        reason_of(err),
        Some(Reason::ContinueTokenInvalid),
        "{what}: {err:?}"
    );
    assert!(
        err.message().contains("continue_token"),
        "{what}: {:?} should name continue_token",
        err.message()
    );
}

#[tokio::test]
async fn a_forged_token_cannot_read_deleted_or_other_namespace_secrets() {
    let server = InProcessApiServer::start().await.expect("server");
    for ns in ["team-a", "team-b"] {
        server
            .api::<v1::Namespace>()
            .create(&namespace(ns))
            .await
            .expect("namespace");
    }
    let api = server.api::<Secret>();
    api.create(&secret("team-a", "a-first"))
        .await
        .expect("create");
    let gone = api
        .create(&secret("team-a", "b-gone"))
        .await
        .expect("create");
    api.create(&secret("team-a", "c-last"))
        .await
        .expect("create");
    api.create(&secret("team-b", "b-other"))
        .await
        .expect("create");
    let before_delete = gone.meta().resource_version;
    api.delete(fixtures::delete_request("team-a", "b-gone"))
        .await
        .expect("delete");

    // Today's listing: a-first, then c-last; b-gone is deleted.
    let (first, _, token) = api.list(page("team-a", "")).await.expect("page 1");
    assert_eq!(names(&first), ["a-first"]);
    let (second, _, _) = api.list(page("team-a", &token)).await.expect("page 2");
    assert_eq!(names(&second), ["c-last"], "the real token pages on");

    // The same token edited to the revision before the delete would read b-gone.
    let forged = with_revision(&token, before_delete);
    let err = api
        .list(page("team-a", &forged))
        .await
        .expect_err("a forged revision must be refused");
    assert_refused(&err, "forged revision");
    // A hand-made token in the unauthenticated format of old.
    let hand_made = format!(
        "v1.{before_delete}.{}",
        "/secrets/team-a/a-first"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let err = api
        .list(page("team-a", &hand_made))
        .await
        .expect_err("a hand-made token must be refused");
    assert_refused(&err, "hand-made token");

    // team-a's token on another listing: every namespace, or team-b.
    for other in ["", "team-b"] {
        let err = api
            .list(page(other, &token))
            .await
            .expect_err("a token of another listing must be refused");
        assert_refused(&err, &format!("team-a's token listing {other:?}"));
    }
    // ... or the same namespace with another selector.
    let mut selected = page("team-a", &token);
    selected.label_selector = "app=web".into();
    let err = api.list(selected).await.expect_err("other selector");
    assert_refused(&err, "another selector");
}

#[tokio::test]
async fn apiservers_sharing_a_key_file_accept_each_others_tokens() {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("encryption.key");
    let a = apiserver_on(&etcd, &key_file, &[]).await;
    let b = apiserver_on(&etcd, &key_file, &[]).await;
    let on_a: Api<Secret> = Api::new(a.channel().await.expect("a"));
    let mut b_target = admin_on_all(&[&a]);
    b_target.url = b.url().to_string();
    let on_b: Api<Secret> = Api::new(connect_to(&b_target).await.expect("b"));
    for name in ["one", "two", "three"] {
        on_a.create(&secret("default", name)).await.expect("create");
    }
    let (first, _, token) = on_a.list(page("default", "")).await.expect("page 1 on a");
    assert_eq!(names(&first), ["one"]);
    let (second, _, token) = on_b
        .list(page("default", &token))
        .await
        .expect("page 2 on b");
    assert_eq!(names(&second), ["three"]);
    let (third, _, token) = on_a
        .list(page("default", &token))
        .await
        .expect("page 3 on a");
    assert_eq!(names(&third), ["two"]);
    assert!(token.is_empty());
}
