//! Joining nodes with bootstrap tokens, through the agent's own join code against a
//! real TLS apiserver: a single-use token works once; an expired, malformed or wrong
//! token is refused with a message saying so; a wrong --ca-cert-hash makes the agent
//! refuse to talk to the server; a restarted agent needs no token; a name already
//! bound to another FALCON key cannot be joined until an admin rekeys it; renewal
//! keeps the identity and the key binding.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hypermesh_api::Resource;
use hypermesh_api::v1::{
    Certificate, JoinToken, JoinTokenSpec, Node, ObjectMeta, RenewRequest,
    join_service_client::JoinServiceClient,
};
use hypermesh_tests::identities::{join_node_with, join_token};
use hypermesh_tests::{InProcessApiServer, connect_target, identities};
use tokio_util::sync::CancellationToken;

fn refused(err: &anyhow::Error, says: &str) {
    let text = format!("{err:#}");
    assert!(text.contains(says), "{text:?} should say {says:?}");
}

#[tokio::test]
async fn a_single_use_token_joins_one_node() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let token = join_token(&server, 1, Duration::from_secs(600))
        .await
        .unwrap();
    let pin = server.ca_pin().unwrap();
    let first = join_node_with(&server, "n1", &token, &pin).await.unwrap();
    assert!(first.state_dir.path().join("pki/node.crt").exists());
    let err = join_node_with(&server, "n2", &token, &pin)
        .await
        .err()
        .unwrap();
    refused(&err, "has been used up");
    let used = server
        .api::<JoinToken>()
        .get("", token.split('.').next().unwrap())
        .await
        .unwrap();
    assert_eq!(used.status.unwrap().nodes, vec!["n1".to_string()]);
}

#[tokio::test]
async fn expired_malformed_and_wrong_tokens_are_refused() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let pin = server.ca_pin().unwrap();
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    server
        .api::<JoinToken>()
        .create(&JoinToken {
            metadata: Some(ObjectMeta {
                name: "oldtok".into(),
                ..Default::default()
            }),
            spec: Some(JoinTokenSpec {
                secret_hash: hypermesh_apiserver::join::sha256_hex(b"0123456789abcdef"),
                expires: Some(hypermesh_api::time::from_system_time(past)),
                uses: 0,
                description: String::new(),
            }),
            status: None,
        })
        .await
        .unwrap();
    let err = join_node_with(&server, "n1", "oldtok.0123456789abcdef", &pin)
        .await
        .err()
        .unwrap();
    refused(&err, "expired");
    let err = join_node_with(&server, "n1", "oldtok.xxxxxxxxxxxxxxxx", &pin)
        .await
        .err()
        .unwrap();
    refused(&err, "does not match");
    let err = join_node_with(&server, "n1", "not-a-token", &pin)
        .await
        .err()
        .unwrap();
    refused(&err, "expected <6 characters>.<16 characters>");
    let err = join_node_with(&server, "n1", "abcdef.0123456789abcdef", &pin)
        .await
        .err()
        .unwrap();
    refused(&err, "unknown token");
}

#[tokio::test]
async fn a_wrong_ca_hash_makes_the_agent_refuse_the_server() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let token = join_token(&server, 1, Duration::from_secs(600))
        .await
        .unwrap();
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let err = join_node_with(&server, "n1", &token, &wrong)
        .await
        .err()
        .unwrap();
    refused(&err, "does not present the CA pinned by --ca-cert-hash");
    // Nothing was spent: the token still joins with the right pin.
    join_node_with(&server, "n1", &token, &server.ca_pin().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restarted_agent_needs_no_token_and_renews_its_certificate() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let node = identities::join_node(&server, "n1").await.unwrap();
    // Same state dir, no token: the stored certificate is used.
    let config = hypermesh_agent::Config::new(server.url(), "n1", node.state_dir.path());
    let target =
        hypermesh_agent::credentials::establish(&config, &node.identity, &CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
    let nodes = hypermesh_api::Api::<Node>::new(connect_target(&target).await.unwrap());
    assert!(nodes.get("", "n1").await.is_ok());

    // Renewal: a new serial, the same identity and NodeId.
    let key = hypermesh_trust::pki::new_key().unwrap();
    let csr = hypermesh_trust::pki::make_csr(&key, "renewal").unwrap();
    let renewed = JoinServiceClient::new(connect_target(&target).await.unwrap())
        .renew(RenewRequest { csr_pem: csr })
        .await
        .unwrap()
        .into_inner();
    let der = hypermesh_trust::pki::first_certificate(&renewed.certificate_pem).unwrap();
    let who = hypermesh_trust::pki::read_identity(&der).unwrap();
    assert_eq!(who.identity, "node:n1");
    assert_eq!(who.node_id.as_deref(), Some(node.identity.node_id()));
    let records = server.api::<Certificate>();
    assert!(records.get("", &renewed.serial).await.is_ok());

    // Users do not renew node certificates.
    let (user, _) = identities::issue(&server, "user:bob", &[]).await.unwrap();
    let key = hypermesh_trust::pki::new_key().unwrap();
    let err = JoinServiceClient::new(connect_target(&user).await.unwrap())
        .renew(RenewRequest {
            csr_pem: hypermesh_trust::pki::make_csr(&key, "x").unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_joined_name_keeps_its_key_until_an_admin_rekeys_it() {
    let server = InProcessApiServer::start_tls().await.unwrap();
    let pin = server.ca_pin().unwrap();
    identities::join_node(&server, "n1").await.unwrap();
    // Someone else, with another FALCON key and a valid token, asks for the same name.
    let token = join_token(&server, 1, Duration::from_secs(600))
        .await
        .unwrap();
    let err = join_node_with(&server, "n1", &token, &pin)
        .await
        .err()
        .unwrap();
    refused(&err, "is bound to another key");
    // An admin rekeys (clears the binding); then a new key may join as n1.
    let nodes = server.api::<Node>();
    let mut node = nodes.get("", "n1").await.unwrap();
    node.spec.as_mut().unwrap().identity = None;
    nodes.update(&node).await.unwrap();
    let token = join_token(&server, 1, Duration::from_secs(600))
        .await
        .unwrap();
    let rejoined = join_node_with(&server, "n1", &token, &pin).await.unwrap();
    let bound = nodes.get("", "n1").await.unwrap();
    assert!(bound.meta().name == "n1");
    let as_node = rejoined.api::<Node>().await.unwrap();
    let mut mine = as_node.get("", "n1").await.unwrap();
    mine.spec.get_or_insert_with(Default::default).identity =
        Some(rejoined.identity.to_node_identity());
    as_node.update(&mine).await.unwrap();
}
