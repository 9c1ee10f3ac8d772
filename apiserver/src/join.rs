//! Certificates from the cluster CA: nodes join with a bootstrap token
//! (`JoinService.Join`) and renew with their current certificate (`Renew`); admins
//! issue user certificates (`CertificateService.Issue`). Every certificate issued is
//! recorded as a `Certificate` object named by its serial, which is what revocation
//! marks.
//!
//! Joining binds the node's FALCON-1024 key to its name: the request carries the key
//! and a FALCON signature over the token, the name and the CSR; the key's NodeId goes
//! into the certificate, and a Node of that name with another key refuses the join
//! (an admin rekeys or deletes the Node first). The Node is created at join when it
//! does not exist yet, so nobody else can claim the name with another key meanwhile.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::{self, IssueRequest, JoinRequest, JoinResponse, RenewRequest};
use hypermesh_trust::pki::{CertificateSpec, Issued, NODE_DNS_SUFFIX, csr_public_key};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Response, Status};

use crate::admission::Operation;
pub use crate::ca::Pki;
use crate::call::Call;
use crate::caller::{Caller, NODE_PREFIX, NODES_GROUP};
use crate::registry::Registry;

/// Largest FALCON public key accepted (FALCON-1024's is 1,793 bytes).
const MAX_FALCON_KEY: usize = 4096;
/// Bytes of an ML-KEM-1024 public key.
const KEM_PUBLIC_KEY_BYTES: usize = 1568;
/// Largest FALCON signature accepted (FALCON-1024's are at most 1,462 bytes).
const MAX_FALCON_SIGNATURE: usize = 4096;

/// Splits `<name>.<secret>` (6 and 16 lower-case letters or digits).
pub fn parse_token(token: &str) -> Result<(&str, &str), Status> {
    let invalid = || {
        status(
            Reason::TokenInvalid,
            "join token: expected <6 characters>.<16 characters> (hmctl token create prints one)",
        )
    };
    let (name, secret) = token.split_once('.').ok_or_else(invalid)?;
    let ok = |s: &str, len: usize| {
        s.len() == len
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    if !ok(name, 6) || !ok(secret, 16) {
        return Err(invalid());
    }
    Ok((name, secret))
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn no_tls() -> Status {
    Status::failed_precondition(
        "this apiserver runs without TLS (--insecure-dev): there is no cluster CA to issue certificates",
    )
}

fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    hypermesh_api::time::from_system_time(t)
}

/// Records an issued certificate as a `Certificate` object.
async fn record(
    certificates: &Registry<v1::Certificate>,
    issued: &Issued,
    spec: &CertificateSpec,
) -> Result<(), Status> {
    let record = v1::Certificate {
        metadata: Some(v1::ObjectMeta {
            name: issued.serial.clone(),
            labels: [(
                "hypermesh.io/identity-kind".to_string(),
                identity_kind(&spec.identity),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        spec: Some(v1::CertificateSpec {
            identity: spec.identity.clone(),
            groups: spec.groups.clone(),
            node_id: spec.node_id.clone().unwrap_or_default(),
            not_before: Some(timestamp(issued.not_before)),
            not_after: Some(timestamp(issued.not_after)),
            revoked: false,
        }),
        status: None,
    };
    certificates
        .create(&Caller::apiserver(), record)
        .await
        .map(|_| ())
}

fn identity_kind(identity: &str) -> String {
    identity
        .split_once(':')
        .map_or("other", |(kind, _)| kind)
        .to_string()
}

/// Issues a certificate and records it.
pub async fn issue_and_record(
    certificates: &Registry<v1::Certificate>,
    pki: &Pki,
    spec: &CertificateSpec,
    csr_pem: &str,
) -> Result<JoinResponse, Status> {
    let key = csr_public_key(csr_pem)
        .map_err(|e| status(Reason::FieldInvalid, format!("csr_pem: {e}")))?;
    let issued = pki
        .ca
        .issue(spec, &key)
        .map_err(|e| status(Reason::InternalError, e.to_string()))?;
    record(certificates, &issued, spec).await?;
    Ok(JoinResponse {
        certificate_pem: issued.pem,
        ca_pem: pki.ca.certificate_pem().to_string(),
        not_after: Some(timestamp(issued.not_after)),
        serial: issued.serial,
    })
}

/// The certificate of node `name` with FALCON NodeId `node_id`.
fn node_spec(name: &str, node_id: &str, validity: Duration) -> CertificateSpec {
    CertificateSpec {
        identity: format!("{NODE_PREFIX}{name}"),
        groups: vec![NODES_GROUP.to_string()],
        dns_names: vec![format!("{name}.{NODE_DNS_SUFFIX}")],
        ip_addresses: Vec::new(),
        node_id: Some(node_id.to_string()),
        validity,
        server: true,
        client: true,
    }
}

/// `CertificateService.Issue`: an admin issues a certificate for a user or system
/// identity (nodes join instead).
pub async fn issue(
    certificates: &Registry<v1::Certificate>,
    caller: &Caller,
    request: IssueRequest,
) -> Result<JoinResponse, Status> {
    certificates
        .authorize(caller, Operation::Create, "", "")
        .await?;
    let pki = certificates.pki().ok_or_else(no_tls)?;
    let identity = request.identity.trim().to_string();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 253
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._@".contains(c))
    };
    let ok = match identity.split_once(':') {
        Some(("user", name)) | Some(("system", name)) => valid_name(name),
        _ => false,
    };
    if !ok {
        return Err(status(
            Reason::FieldInvalid,
            format!(
                "identity: {identity:?} must be user:NAME or system:NAME (letters, digits, - . _ @); nodes join with a token instead"
            ),
        ));
    }
    if request.groups.iter().any(|g| g == NODES_GROUP) {
        return Err(status(
            Reason::FieldInvalid,
            "groups: system:nodes is only for nodes, which join with a token",
        ));
    }
    let validity = if request.validity_hours == 0 {
        pki.user_validity
    } else {
        Duration::from_secs(u64::from(request.validity_hours.min(24 * 365 * 5)) * 3600)
    };
    let spec = CertificateSpec {
        identity,
        groups: request.groups,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        node_id: None,
        validity,
        server: false,
        client: true,
    };
    issue_and_record(certificates, pki, &spec, &request.csr_pem).await
}

/// The `JoinService`.
#[derive(Clone)]
pub struct JoinService {
    /// Join tokens.
    pub tokens: Registry<v1::JoinToken>,
    /// Nodes (key binding).
    pub nodes: Registry<v1::Node>,
    /// Certificate records.
    pub certificates: Registry<v1::Certificate>,
}

impl std::fmt::Debug for JoinService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinService").finish_non_exhaustive()
    }
}

impl JoinService {
    /// Checks the token and takes one use of it (compare-and-swap on its status).
    async fn consume(&self, token: &str, node: &str) -> Result<(), Status> {
        let (name, secret) = parse_token(token)?;
        let apiserver = Caller::apiserver();
        for _ in 0..16 {
            let mut stored = match self.tokens.read("", name).await {
                Ok(t) => t,
                Err(s) if s.code() == Code::NotFound => {
                    return Err(status(
                        Reason::TokenInvalid,
                        "join token: unknown token (it may have been deleted); ask an admin for a new one (hmctl token create)",
                    ));
                }
                Err(s) => return Err(s),
            };
            let spec = stored.spec.clone().unwrap_or_default();
            if !constant_time_eq(
                sha256_hex(secret.as_bytes()).as_bytes(),
                spec.secret_hash.as_bytes(),
            ) {
                return Err(status(
                    Reason::TokenInvalid,
                    "join token: the secret does not match; check the token (hmctl token create prints it)",
                ));
            }
            let expires = spec
                .expires
                .map(|t| hypermesh_api::time::to_system_time(&t))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if SystemTime::now() >= expires {
                return Err(status(
                    Reason::TokenExpired,
                    format!(
                        "join token {name:?} expired at {}; ask an admin for a new one (hmctl token create --ttl 1h)",
                        hypermesh_api::time::rfc3339(expires, false)
                    ),
                ));
            }
            let status_ = stored.status.get_or_insert_with(Default::default);
            if spec.uses != 0 && status_.used >= spec.uses {
                return Err(status(
                    Reason::TokenUsedUp,
                    format!(
                        "join token {name:?} was for {} join(s) and has been used up; ask an admin for a new one (hmctl token create)",
                        spec.uses
                    ),
                ));
            }
            status_.used += 1;
            status_.last_used = Some(hypermesh_api::time::now());
            if !status_.nodes.iter().any(|n| n == node) && status_.nodes.len() < 1000 {
                status_.nodes.push(node.to_string());
            }
            match self.tokens.update_status(&apiserver, stored).await {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == Code::Aborted => continue,
                Err(s) => return Err(s),
            }
        }
        Err(status(
            Reason::Conflict,
            "join token kept changing; try again",
        ))
    }

    /// Refuses a key other than the one bound to `node`, and binds it when the Node
    /// does not exist yet (by creating it).
    async fn bind_key(&self, node: &str, public_key: &[u8], kem_key: &[u8]) -> Result<(), Status> {
        let apiserver = Caller::apiserver();
        match self.nodes.read("", node).await {
            Ok(existing) => {
                let bound = crate::admission::node_identity::public_key(&existing);
                if !bound.is_empty() && bound != public_key {
                    return Err(status(
                        Reason::NodeKeyMismatch,
                        format!(
                            "node {node:?} is bound to another key (NodeId {}); an admin must rekey it (hmctl node rekey) or delete the node before it can join with this one",
                            hypermesh_trust::node_id_of(bound)
                        ),
                    ));
                }
                Ok(())
            }
            Err(s) if s.code() == Code::NotFound => {
                // The Node object binds the key now; the agent's registration fills in the rest.
                let key_binding = v1::Node {
                    metadata: Some(v1::ObjectMeta {
                        name: node.to_string(),
                        ..Default::default()
                    }),
                    spec: Some(v1::NodeSpec {
                        identity: Some(v1::NodeIdentity {
                            node_id: hypermesh_trust::node_id_of(public_key),
                            public_key: public_key.to_vec(),
                            algorithm: hypermesh_trust::ALGORITHM.to_string(),
                            kem_public_key: kem_key.to_vec(),
                        }),
                        ..Default::default()
                    }),
                    status: None,
                };
                match self.nodes.create(&apiserver, key_binding).await {
                    Ok(_) => Ok(()),
                    // Created meanwhile: check the key it was created with.
                    Err(s) if s.code() == Code::AlreadyExists => {
                        Box::pin(self.bind_key(node, public_key, kem_key)).await
                    }
                    Err(s) => Err(s),
                }
            }
            Err(s) => Err(s),
        }
    }

    async fn join(&self, request: JoinRequest) -> Result<JoinResponse, Status> {
        let pki = self.certificates.pki().ok_or_else(no_tls)?.clone();
        let node = request.node_name.clone();
        if let Some(problem) = hypermesh_api::validation::dns_subdomain_problem(&node) {
            return Err(status(Reason::NameInvalid, format!("node_name: {problem}")));
        }
        if request.falcon_public_key.is_empty() || request.falcon_public_key.len() > MAX_FALCON_KEY
        {
            return Err(status(
                Reason::FieldInvalid,
                format!("falcon_public_key: must be 1 to {MAX_FALCON_KEY} bytes"),
            ));
        }
        if request.falcon_signature.len() > MAX_FALCON_SIGNATURE {
            return Err(status(
                Reason::FieldInvalid,
                format!("falcon_signature: at most {MAX_FALCON_SIGNATURE} bytes"),
            ));
        }
        let kem_len = request.kem_public_key.len();
        if kem_len != 0 && kem_len != KEM_PUBLIC_KEY_BYTES {
            return Err(status(
                Reason::FieldInvalid,
                format!(
                    "kem_public_key: {kem_len} bytes is not an ML-KEM-1024 public key ({KEM_PUBLIC_KEY_BYTES} bytes)"
                ),
            ));
        }
        let (token_name, _) = parse_token(&request.token)?;
        let message = hypermesh_trust::pki::join_message(
            token_name,
            &node,
            &request.csr_pem,
            &request.kem_public_key,
        );
        if !hypermesh_trust::verify_signature(
            &request.falcon_public_key,
            &message,
            &request.falcon_signature,
        ) {
            return Err(status(
                Reason::FieldInvalid,
                "falcon_signature: does not verify with falcon_public_key over the join request",
            ));
        }
        // Check the CSR before spending a use of the token.
        csr_public_key(&request.csr_pem)
            .map_err(|e| status(Reason::FieldInvalid, format!("csr_pem: {e}")))?;
        self.consume(&request.token, &node).await?;
        self.bind_key(&node, &request.falcon_public_key, &request.kem_public_key)
            .await?;
        let node_id = hypermesh_trust::node_id_of(&request.falcon_public_key);
        let spec = node_spec(&node, &node_id, pki.node_validity);
        let response = issue_and_record(&self.certificates, &pki, &spec, &request.csr_pem).await?;
        tracing::info!(node = %node, node_id = %node_id, serial = %response.serial, "node joined");
        Ok(response)
    }

    async fn renew(&self, caller: &Caller, request: RenewRequest) -> Result<JoinResponse, Status> {
        let pki = self.certificates.pki().ok_or_else(no_tls)?.clone();
        let (Some(node), Some(node_id)) = (caller.node_name(), caller.node_id.as_deref()) else {
            return Err(status(
                Reason::Forbidden,
                format!(
                    "{} cannot renew a node certificate: only nodes renew theirs (users ask an admin: hmctl user create)",
                    caller.describe()
                ),
            ));
        };
        let spec = node_spec(node, node_id, pki.node_validity);
        issue_and_record(&self.certificates, &pki, &spec, &request.csr_pem).await
    }
}

#[tonic::async_trait]
impl v1::join_service_server::JoinService for JoinService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        // No identity yet: the token is the credential.
        let (call, _) = Call::start(&self.tokens, "Join", &request);
        let result = JoinService::join(self, request.into_inner()).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e.message(), "join refused");
        }
        call.finish(result)
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<JoinResponse>, Status> {
        crate::call!(&self.tokens, "Renew", request, |caller, r| {
            JoinService::renew(self, &caller, r)
        })
    }
}

/// Issues a certificate with a fresh key for one of the apiserver's own identities
/// (admin, scheduler, controllers), records it, and returns certificate and key PEM.
pub async fn issue_local(
    certificates: &Registry<v1::Certificate>,
    pki: &Arc<Pki>,
    identity: &str,
    groups: &[&str],
) -> Result<(String, String), Status> {
    let spec = CertificateSpec {
        identity: identity.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        node_id: None,
        validity: pki.user_validity,
        server: false,
        client: true,
    };
    let (issued, key_pem) = pki
        .ca
        .issue_with_new_key(&spec)
        .map_err(|e| status(Reason::InternalError, e.to_string()))?;
    record(certificates, &issued, &spec).await?;
    Ok((issued.pem, key_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_strictly() {
        assert_eq!(
            parse_token("abcdef.0123456789abcdef").unwrap(),
            ("abcdef", "0123456789abcdef")
        );
        for bad in [
            "",
            "abcdef",
            "abcde.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde!",
        ] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }
}
