//! Who sees a Secret's values, over real mTLS: by default everyone who may read a
//! Secret sees its keys and sizes only; `x-hypermesh-reveal: true` shows the values to
//! an admin, while an editor (who may read Secrets) and a viewer (who may not) are
//! refused with PERMISSION_DENIED naming the permission (`get secrets/data`, `get
//! secrets`) on Get, List and Watch; a Role granting `get secrets/data` lets the editor
//! reveal; a withheld copy written back keeps the stored values.

use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{self, ListRequest, ObjectMeta, Role, RoleBinding, Secret, WatchRequest};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::identities;
use hypermesh_tests::secrets::{canary, get_revealed, secret};
use hypermesh_tests::{InProcessApiServer, connect_target};
use tonic::Code;
use tonic::transport::Channel;

fn assert_denied(err: &tonic::Status, says: &str) {
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(reason_of(err), Some(Reason::Forbidden), "{err:?}");
    assert!(
        err.message().contains(says),
        "{:?} should say {says:?}",
        err.message()
    );
}

fn revealing<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "x-hypermesh-reveal",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

async fn list_revealed(channel: Channel) -> Result<v1::SecretList, tonic::Status> {
    let mut client = v1::secret_service_client::SecretServiceClient::new(channel);
    let request = ListRequest {
        namespace: "default".into(),
        ..Default::default()
    };
    Ok(client.list(revealing(request)).await?.into_inner())
}

async fn watch_revealed(channel: Channel) -> Result<(), tonic::Status> {
    let mut client = v1::secret_service_client::SecretServiceClient::new(channel);
    let request = WatchRequest {
        namespace: "default".into(),
        ..Default::default()
    };
    client.watch(revealing(request)).await.map(|_| ())
}

#[tokio::test]
async fn only_a_permitted_user_sees_secret_values() {
    let server = InProcessApiServer::start_tls().await.expect("server");
    let password = canary("reveal-password");
    server
        .api::<Secret>()
        .create(&secret(
            "default",
            "db",
            &[("password", &password), ("user", b"admin")],
        ))
        .await
        .expect("create");

    // The admin: withheld by default (keys and sizes), values when asked.
    let plain = server
        .api::<Secret>()
        .get("default", "db")
        .await
        .expect("get");
    let spec = plain.spec.as_ref().expect("spec");
    assert!(spec.data.is_empty(), "values withheld by default");
    assert_eq!(spec.data_sizes["password"], password.len() as u64);
    assert_eq!(spec.data_sizes["user"], 5);
    let revealed = get_revealed(server.channel(), "default", "db")
        .await
        .expect("admin reveals");
    assert_eq!(
        revealed.spec.as_ref().expect("spec").data["password"],
        password
    );
    let listed = list_revealed(server.channel())
        .await
        .expect("admin lists revealed");
    assert_eq!(
        listed.items[0].spec.as_ref().expect("spec").data["password"],
        password
    );

    // The editor reads Secrets, withheld, but may not reveal them.
    let editor = identities::user(&server, "eddie", "editor", &["default"])
        .await
        .expect("editor");
    let editor_channel = connect_target(&editor).await.expect("connect");
    let as_editor = Api::<Secret>::new(editor_channel.clone())
        .get("default", "db")
        .await
        .expect("editor reads withheld");
    assert!(as_editor.spec.as_ref().expect("spec").data.is_empty());
    let denied = "user \"eddie\" cannot get secrets/data";
    assert_denied(
        &get_revealed(editor_channel.clone(), "default", "db")
            .await
            .expect_err("editor reveal"),
        denied,
    );
    assert_denied(
        &list_revealed(editor_channel.clone())
            .await
            .expect_err("list"),
        denied,
    );
    assert_denied(
        &watch_revealed(editor_channel.clone())
            .await
            .expect_err("watch"),
        denied,
    );

    // Writing the withheld copy back (a label change) keeps the values.
    let mut relabelled = as_editor.clone();
    relabelled
        .meta_mut()
        .labels
        .insert("tier".into(), "db".into());
    Api::<Secret>::new(editor_channel.clone())
        .update(&relabelled)
        .await
        .expect("editor relabels");
    let after = get_revealed(server.channel(), "default", "db")
        .await
        .expect("reveal");
    assert_eq!(
        after.spec.as_ref().expect("spec").data["password"],
        password
    );
    assert_eq!(after.meta().labels["tier"], "db");

    // The viewer may not read Secrets at all.
    let viewer = identities::user(&server, "vera", "viewer", &[])
        .await
        .expect("viewer");
    let viewer_channel = connect_target(&viewer).await.expect("connect");
    assert_denied(
        &get_revealed(viewer_channel.clone(), "default", "db")
            .await
            .expect_err("viewer reveal"),
        "user \"vera\" cannot get secrets \"db\"",
    );
    assert_denied(
        &Api::<Secret>::new(viewer_channel)
            .get("default", "db")
            .await
            .expect_err("viewer get"),
        "cannot get secrets",
    );

    // A Role granting `get secrets/data` lets the editor reveal.
    server
        .api::<Role>()
        .create(&Role {
            metadata: Some(ObjectMeta {
                name: "secret-revealer".into(),
                ..Default::default()
            }),
            spec: Some(v1::RoleSpec {
                rules: vec![v1::PolicyRule {
                    verbs: vec!["get".into(), "list".into(), "watch".into()],
                    resources: vec!["secrets/data".into()],
                }],
            }),
            status: None,
        })
        .await
        .expect("role");
    server
        .api::<RoleBinding>()
        .create(&RoleBinding {
            metadata: Some(ObjectMeta {
                name: "eddie-reveals".into(),
                ..Default::default()
            }),
            spec: Some(v1::RoleBindingSpec {
                role: "secret-revealer".into(),
                subjects: vec![v1::Subject {
                    kind: "User".into(),
                    name: "eddie".into(),
                }],
                namespaces: vec!["default".into()],
            }),
            status: None,
        })
        .await
        .expect("binding");
    let revealed = get_revealed(editor_channel, "default", "db")
        .await
        .expect("now permitted");
    assert_eq!(revealed.spec.expect("spec").data["password"], password);
}
