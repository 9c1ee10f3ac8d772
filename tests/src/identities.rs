//! Identities on a TLS apiserver, for tests that play users, nodes and attackers:
//! users with a role ([`user`]), any certificate the CA issues ([`issue`]), nodes
//! joined with a real token through the agent's own join code ([`join_node`]),
//! a client without a certificate ([`anonymous`]) and one whose certificate comes
//! from another CA ([`foreign`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hypermesh_api::client::Target;
use hypermesh_api::v1::{
    Certificate, IssueRequest, JoinResponse, JoinToken, JoinTokenSpec, ObjectMeta, RoleBinding,
    RoleBindingSpec, Subject,
};
use hypermesh_api::{Api, Resource};
use hypermesh_trust::NodeIdentity;
use hypermesh_trust::pki::{CertificateSpec, ClusterCa, make_csr, new_key};
use hypermesh_trust::tls::{ClientIdentity, client_config, provider};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::InProcessApiServer;

fn ca_pem(server: &InProcessApiServer) -> anyhow::Result<String> {
    std::fs::read_to_string(server.data_dir().join("pki").join("ca.crt")).context("pki/ca.crt")
}

/// A TLS target for `server` presenting `identity` (or none).
pub fn target_with(
    server: &InProcessApiServer,
    identity: Option<&ClientIdentity>,
) -> anyhow::Result<Target> {
    let config = client_config(&ca_pem(server)?, identity, provider())?;
    Ok(Target::tls(server.url(), Arc::new(config)))
}

/// A client that trusts the cluster CA but presents no certificate.
pub fn anonymous(server: &InProcessApiServer) -> anyhow::Result<Target> {
    target_with(server, None)
}

/// A client whose certificate (`user:mallory`, in `system:masters` even) was issued by
/// another CA.
pub fn foreign(server: &InProcessApiServer) -> anyhow::Result<Target> {
    let other = ClusterCa::generate("not-this-cluster")?;
    let (issued, key_pem) = other.issue_with_new_key(&CertificateSpec {
        identity: "user:mallory".into(),
        groups: vec!["system:masters".into()],
        validity: Duration::from_secs(3600),
        client: true,
        ..Default::default()
    })?;
    target_with(
        server,
        Some(&ClientIdentity {
            cert_pem: issued.pem,
            key_pem,
        }),
    )
}

/// A certificate for `identity` in `groups`, issued through the API by the admin.
pub async fn issue(
    server: &InProcessApiServer,
    identity: &str,
    groups: &[&str],
) -> anyhow::Result<(Target, String)> {
    let key = new_key()?;
    let csr = make_csr(&key, identity)?;
    let issued: JoinResponse = server
        .api::<Certificate>()
        .call(
            "Issue",
            IssueRequest {
                identity: identity.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                csr_pem: csr,
                validity_hours: 1,
            },
        )
        .await
        .with_context(|| format!("issuing a certificate for {identity}"))?;
    let target = target_with(
        server,
        Some(&ClientIdentity {
            cert_pem: issued.certificate_pem,
            key_pem: key.serialize_pem(),
        }),
    )?;
    Ok((target, issued.serial))
}

/// User `name` bound to `role` (in `namespaces`, or cluster-wide when empty).
pub async fn user(
    server: &InProcessApiServer,
    name: &str,
    role: &str,
    namespaces: &[&str],
) -> anyhow::Result<Target> {
    server
        .api::<RoleBinding>()
        .create(&RoleBinding {
            metadata: Some(ObjectMeta {
                name: format!("user-{name}-{role}"),
                ..Default::default()
            }),
            spec: Some(RoleBindingSpec {
                role: role.into(),
                subjects: vec![Subject {
                    kind: "User".into(),
                    name: name.into(),
                }],
                namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            }),
            status: None,
        })
        .await
        .context("binding the role")?;
    Ok(issue(server, &format!("user:{name}"), &[]).await?.0)
}

/// A join token (`name.secret`) good for `uses` joins during `ttl`.
pub async fn join_token(
    server: &InProcessApiServer,
    uses: u32,
    ttl: Duration,
) -> anyhow::Result<String> {
    make_join_token(&server.api::<JoinToken>(), uses, ttl).await
}

/// A join token created through `tokens` (an admin's client).
pub async fn make_join_token(
    tokens: &Api<JoinToken>,
    uses: u32,
    ttl: Duration,
) -> anyhow::Result<String> {
    let name: String = (0..6)
        .map(|_| char::from(b'a' + rand_byte() % 26))
        .collect();
    let secret: String = (0..16)
        .map(|_| char::from(b'a' + rand_byte() % 26))
        .collect();
    let hash: String = Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expires = std::time::SystemTime::now() + ttl;
    tokens
        .create(&JoinToken {
            metadata: Some(ObjectMeta {
                name: name.clone(),
                ..Default::default()
            }),
            spec: Some(JoinTokenSpec {
                secret_hash: hash,
                expires: Some(hypermesh_api::time::from_system_time(expires)),
                uses,
                description: "test".into(),
            }),
            status: None,
        })
        .await
        .context("creating the join token")?;
    Ok(format!("{name}.{secret}"))
}

fn rand_byte() -> u8 {
    rand::random()
}

/// A node joined the way hm-agent joins, with its state dir kept alive.
pub struct JoinedNode {
    /// The node's name.
    pub name: String,
    /// Its FALCON-1024 identity.
    pub identity: NodeIdentity,
    /// Its authenticated target.
    pub target: Target,
    /// Its state dir (`pki/` holds the certificate).
    pub state_dir: tempfile::TempDir,
}

impl JoinedNode {
    /// A typed client as this node.
    pub async fn api<K: Resource>(&self) -> anyhow::Result<Api<K>> {
        Ok(Api::new(crate::connect_target(&self.target).await?))
    }
}

/// Joins node `name` with a fresh token, through the agent's credentials code.
pub async fn join_node(server: &InProcessApiServer, name: &str) -> anyhow::Result<JoinedNode> {
    let token = join_token(server, 1, Duration::from_secs(600)).await?;
    join_node_with(server, name, &token, &server.ca_pin()?).await
}

/// Joins node `name` with `token`, pinning `pin`.
pub async fn join_node_with(
    server: &InProcessApiServer,
    name: &str,
    token: &str,
    pin: &str,
) -> anyhow::Result<JoinedNode> {
    let state_dir = tempfile::tempdir()?;
    let identity = NodeIdentity::load_or_create(state_dir.path())?;
    let mut config = hypermesh_agent::Config::new(server.url(), name, state_dir.path());
    config.join_token = Some(token.to_string());
    config.ca_cert_hash = Some(pin.to_string());
    let target =
        hypermesh_agent::credentials::establish(&config, &identity, &CancellationToken::new())
            .await?
            .context("joining was cut short")?;
    Ok(JoinedNode {
        name: name.to_string(),
        identity,
        target,
        state_dir,
    })
}
