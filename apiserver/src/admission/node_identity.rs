//! Node identity and the Suspect guard.
//!
//! - A Node's `spec.identity.nodeId` must be the BLAKE3 of its `publicKey` (filled in
//!   when empty, with the algorithm).
//! - The key is fixed once set: only an admin may change it (`hmctl node rekey`);
//!   anyone else's attempt is refused and reported as a [`Finding`] against the node
//!   (reason `NodeKeyChanged`), which makes it Suspect. The same holds for the ML-KEM
//!   key Secrets are sealed to (`spec.identity.kemPublicKey`).
//! - The stake record (`spec.stake`) is the admin's: anyone else's write keeps it as
//!   stored (and a new Node created by anyone else starts without one).
//! - The Suspect condition and the `hypermesh.io/suspect` taint belong to the cluster:
//!   a non-admin write keeps them exactly as stored; an admin's write that does not
//!   mention them keeps them too, and only an admin clears them (`hmctl node trust`).

use hypermesh_api::Resource;
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::{self, Taint, TaintEffect};
use tonic::Status;

use super::{AdmissionRequest, Admit, Finding, Findings, ObjectMut, ObjectRef, Operation};

/// The node condition Byzantine detection sets.
pub const SUSPECT_CONDITION: &str = "Suspect";
/// The taint a Suspect node carries (effect `NoSchedule`).
pub const SUSPECT_TAINT: &str = "hypermesh.io/suspect";
/// Finding reason when a node's public key changed.
pub const KEY_CHANGED: &str = "NodeKeyChanged";

/// The plugin.
#[derive(Debug)]
pub struct NodeIdentityGuard;

/// The node's FALCON public key (empty when it has none).
pub fn public_key(node: &v1::Node) -> &[u8] {
    node.spec
        .as_ref()
        .and_then(|s| s.identity.as_ref())
        .map(|i| i.public_key.as_slice())
        .unwrap_or_default()
}

/// True when the node's Suspect condition is `True`.
pub fn is_suspect(node: &v1::Node) -> bool {
    suspect_condition(node).is_some_and(|c| c.status == "True")
}

fn suspect_condition(node: &v1::Node) -> Option<&v1::Condition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == SUSPECT_CONDITION)
}

/// True when the node carries the Suspect taint.
pub fn has_suspect_taint(node: &v1::Node) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.taints.iter().any(|t| t.key == SUSPECT_TAINT))
}

/// The taint a Suspect node carries.
pub fn suspect_taint() -> Taint {
    Taint {
        key: SUSPECT_TAINT.to_string(),
        value: String::new(),
        effect: TaintEffect::NoSchedule as i32,
        time_added: Some(hypermesh_api::time::now()),
    }
}

fn fill_identity(node: &mut v1::Node) {
    if let Some(identity) = node.spec.as_mut().and_then(|s| s.identity.as_mut())
        && !identity.public_key.is_empty()
    {
        if identity.node_id.is_empty() {
            identity.node_id = hypermesh_trust::node_id_of(&identity.public_key);
        }
        if identity.algorithm.is_empty() {
            identity.algorithm = hypermesh_trust::ALGORITHM.to_string();
        }
    }
}

/// Keeps the stored Suspect taint on a spec write that drops it.
fn keep_taint(node: &mut v1::Node, current: &v1::Node, admin: bool) {
    let keep = if admin {
        // An admin removes the taint only after clearing the condition.
        is_suspect(current)
    } else {
        true
    };
    if keep && has_suspect_taint(current) && !has_suspect_taint(node) {
        let taint = current
            .spec
            .as_ref()
            .and_then(|s| s.taints.iter().find(|t| t.key == SUSPECT_TAINT))
            .cloned()
            .unwrap_or_else(suspect_taint);
        node.spec
            .get_or_insert_with(Default::default)
            .taints
            .push(taint);
    }
    if !admin && !has_suspect_taint(current) {
        // Nobody but an admin (or the cluster's own controllers) adds it either.
        if let Some(spec) = node.spec.as_mut() {
            spec.taints.retain(|t| t.key != SUSPECT_TAINT);
        }
    }
}

/// Keeps the stored Suspect condition on a status write: always for non-admins, and
/// when the write does not mention it for admins.
fn keep_condition(node: &mut v1::Node, current: &v1::Node, admin: bool) {
    let sent = suspect_condition(node).is_some();
    if admin && sent {
        return;
    }
    let stored = suspect_condition(current).cloned();
    let status = node.status.get_or_insert_with(Default::default);
    status.conditions.retain(|c| c.r#type != SUSPECT_CONDITION);
    if let Some(stored) = stored {
        status.conditions.push(stored);
    }
}

#[tonic::async_trait]
impl Admit for NodeIdentityGuard {
    fn name(&self) -> &'static str {
        "NodeIdentity"
    }

    async fn mutate(
        &self,
        request: &AdmissionRequest<'_>,
        new: ObjectMut<'_>,
        _findings: &mut Findings,
    ) -> Result<(), Status> {
        let ObjectMut::Node(node) = new else {
            return Ok(());
        };
        let admin = request.access.caller.is_admin();
        fill_identity(node);
        if !admin && let Some(spec) = node.spec.as_mut() {
            spec.stake = match request.old {
                Some(ObjectRef::Node(current)) => {
                    current.spec.as_ref().and_then(|s| s.stake.clone())
                }
                _ => None,
            };
        }
        let Some(ObjectRef::Node(current)) = request.old else {
            if !admin {
                // A new node starts trusted; only the cluster marks it Suspect.
                if let Some(status) = node.status.as_mut() {
                    status.conditions.retain(|c| c.r#type != SUSPECT_CONDITION);
                }
                if let Some(spec) = node.spec.as_mut() {
                    spec.taints.retain(|t| t.key != SUSPECT_TAINT);
                }
            }
            return Ok(());
        };
        match request.access.operation {
            Operation::Update => keep_taint(node, current, admin),
            Operation::UpdateStatus => keep_condition(node, current, admin),
            _ => {}
        }
        Ok(())
    }

    async fn validate(
        &self,
        request: &AdmissionRequest<'_>,
        new: Option<ObjectRef<'_>>,
        findings: &mut Findings,
    ) -> Result<(), Status> {
        let Some(ObjectRef::Node(node)) = new else {
            return Ok(());
        };
        if let Some(identity) = node.spec.as_ref().and_then(|s| s.identity.as_ref())
            && !identity.public_key.is_empty()
        {
            let expected = hypermesh_trust::node_id_of(&identity.public_key);
            if identity.node_id != expected {
                return Err(status(
                    Reason::NodeIdentityInvalid,
                    format!(
                        "spec.identity.nodeId: {:?} is not the BLAKE3 of spec.identity.publicKey ({expected})",
                        identity.node_id
                    ),
                ));
            }
        }
        let Some(ObjectRef::Node(current)) = request.old else {
            return Ok(());
        };
        let kem = |n: &v1::Node| {
            n.spec
                .as_ref()
                .and_then(|s| s.identity.as_ref())
                .map(|i| i.kem_public_key.clone())
                .unwrap_or_default()
        };
        let (old_kem, new_kem) = (kem(current), kem(node));
        let kem_changed = !old_kem.is_empty() && old_kem != new_kem;
        let (old, new) = (public_key(current), public_key(node));
        if (old.is_empty() || old == new) && !kem_changed {
            return Ok(());
        }
        let message = format!(
            "spec.identity.publicKey: the node's key is fixed at join and changed from NodeId {} to {}; \
             only an admin can change it (hmctl node rekey)",
            hypermesh_trust::node_id_of(old),
            if new.is_empty() {
                "none".to_string()
            } else {
                hypermesh_trust::node_id_of(new)
            }
        );
        if request.access.caller.is_admin() {
            return Ok(());
        }
        findings.push(Finding {
            node: node.meta().name.clone(),
            reason: KEY_CHANGED.to_string(),
            message: message.clone(),
        });
        Err(status(Reason::NodeKeyMismatch, message))
    }
}
