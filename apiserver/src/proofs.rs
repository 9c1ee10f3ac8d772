//! Asset proofs at admission and Byzantine detection: every Asset of a node with an
//! identity must carry a valid ConsensusProof (stake, time, space, work); a node whose
//! proof fails, or whose key changes, is marked Suspect (condition, `NoSchedule`
//! taint, Event) until an admin trusts it again (`hmctl node trust`).
//!
//! Policy, in order:
//! - a Node's `spec.identity.nodeId` must be the BLAKE3 of its `publicKey` (filled in
//!   when empty); a changed key is accepted but makes the node Suspect;
//! - an Asset whose Node has a public key must carry a proof, checked by the shared
//!   [`ProofVerifier`]; any failure but a missing proof marks the node Suspect (a
//!   missing proof says nothing about the node: anyone can send one);
//! - an Asset with a proof needs its Node to exist and have a public key;
//! - an Asset without a proof whose Node is missing or has no identity (a simulated or
//!   hand-made node) is admitted unverified, as before proofs existed;
//! - an Asset update that leaves the spec as it was is not verified again (its proof
//!   was checked when it was written);
//! - the Suspect condition and taint survive the agent's own writes: an UpdateStatus
//!   without a Suspect condition keeps the current one, an Update without the taint
//!   keeps it while Suspect=True. Clearing both is the admin's `hmctl node trust`.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use hypermesh_api::Resource;
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::{self, Condition, Taint, TaintEffect};
use hypermesh_trust::proof::{ProofError, ProofVerifier, VerifierConfig};
use prost::Message;
use tonic::{Code, Status};

use crate::admission::Admission;
use crate::registry::{Registry, RegistryOptions};
use crate::store::Store;

/// The node condition Byzantine detection sets.
pub const SUSPECT_CONDITION: &str = "Suspect";
/// The taint a Suspect node carries (effect `NoSchedule`).
pub const SUSPECT_TAINT: &str = "hypermesh.io/suspect";
/// Condition reason when a node's public key changed.
pub const KEY_CHANGED: &str = "NodeKeyChanged";
/// Where Events about (cluster-scoped) Nodes are recorded.
pub const EVENT_NAMESPACE: &str = "default";

/// The verifier shared by every registry in this process (replay cache and ledger).
pub fn verifier() -> &'static ProofVerifier {
    static VERIFIER: OnceLock<ProofVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| ProofVerifier::new(VerifierConfig::default()))
}

/// Why a node becomes Suspect: the condition reason and message.
#[derive(Debug, Clone)]
pub struct Suspicion {
    /// The Node.
    pub node: String,
    /// CamelCase reason, e.g. `ProofForged`.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// The stable API reason for a failed proof.
pub fn reason_for(error: &ProofError) -> Reason {
    match error {
        ProofError::ProofMissing => Reason::ProofMissing,
        ProofError::ProofMalformed(_) => Reason::ProofMalformed,
        ProofError::StakeForged { .. } => Reason::ProofForged,
        ProofError::StakeWrongNode { .. } => Reason::ProofWrongNode,
        ProofError::TimeStale { .. } => Reason::ProofStale,
        ProofError::TimeReplayed { .. } => Reason::ProofReplayed,
        ProofError::SpaceMismatch(_) => Reason::ProofSpaceMismatch,
        ProofError::SpaceOverclaimed { .. } => Reason::ProofOverclaimed,
        ProofError::WorkMissing => Reason::ProofWorkMissing,
        ProofError::WorkInsufficient(_) => Reason::ProofWorkInsufficient,
    }
}

fn public_key(node: &v1::Node) -> &[u8] {
    node.spec
        .as_ref()
        .and_then(|s| s.identity.as_ref())
        .map(|i| i.public_key.as_slice())
        .unwrap_or_default()
}

fn is_suspect(node: &v1::Node) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == SUSPECT_CONDITION && c.status == "True")
    })
}

fn has_taint(node: &v1::Node) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.taints.iter().any(|t| t.key == SUSPECT_TAINT))
}

fn suspect_taint() -> Taint {
    Taint {
        key: SUSPECT_TAINT.to_string(),
        value: String::new(),
        effect: TaintEffect::NoSchedule as i32,
        time_added: Some(hypermesh_api::time::now()),
    }
}

/// Checks a Node's identity (filling in `nodeId` when empty), keeps the Suspect taint
/// across updates while Suspect=True, and reports a key change.
fn admit_node(
    node: &mut v1::Node,
    current: Option<&v1::Node>,
) -> Result<Option<Suspicion>, Status> {
    let name = node.meta().name.clone();
    if let Some(identity) = node.spec.as_mut().and_then(|s| s.identity.as_mut())
        && !identity.public_key.is_empty()
    {
        let expected = hypermesh_trust::node_id_of(&identity.public_key);
        if identity.node_id.is_empty() {
            identity.node_id = expected;
        } else if identity.node_id != expected {
            return Err(status(
                Reason::NodeIdentityInvalid,
                format!(
                    "spec.identity.nodeId: {:?} is not the BLAKE3 of spec.identity.publicKey ({expected})",
                    identity.node_id
                ),
            ));
        }
        if identity.algorithm.is_empty() {
            identity.algorithm = hypermesh_trust::ALGORITHM.to_string();
        }
    }
    let Some(current) = current else {
        return Ok(None);
    };
    if is_suspect(current) && has_taint(current) && !has_taint(node) {
        node.spec
            .get_or_insert_with(Default::default)
            .taints
            .push(suspect_taint());
    }
    let (old, new) = (public_key(current), public_key(node));
    if !old.is_empty() && old != new {
        return Ok(Some(Suspicion {
            node: name,
            reason: KEY_CHANGED.to_string(),
            message: format!(
                "the node's public key changed from NodeId {} to {}",
                hypermesh_trust::node_id_of(old),
                if new.is_empty() {
                    "none".to_string()
                } else {
                    hypermesh_trust::node_id_of(new)
                }
            ),
        }));
    }
    Ok(None)
}

/// Verifies an Asset's proof against its Node. `Err((status, suspicion))`: reject
/// with `status`, and mark the node Suspect when `suspicion` is set.
async fn admit_asset(
    store: &Arc<dyn Store>,
    options: &Arc<RegistryOptions>,
    asset: &v1::Asset,
    current: Option<&v1::Asset>,
) -> Result<(), (Status, Option<Suspicion>)> {
    if let Some(current) = current
        && current.spec_bytes() == asset.spec_bytes()
    {
        return Ok(());
    }
    let Some(spec) = asset.spec.as_ref() else {
        return Ok(());
    };
    let name = asset.meta().name.clone();
    let nodes: Registry<v1::Node> = Registry::new(store.clone(), options.clone());
    let node = match nodes.get("", &spec.node_name).await {
        Ok(node) => Some(node),
        Err(s) if s.code() == Code::NotFound => None,
        Err(s) => return Err((s, None)),
    };
    let key = node.as_ref().map(public_key).unwrap_or_default();
    if spec.proof.is_none() && key.is_empty() {
        return Ok(());
    }
    let Some(node) = node.as_ref() else {
        let message = format!(
            "spec.nodeName: node {:?} not found; register the node (with its identity) before its assets",
            spec.node_name
        );
        return Err((status(Reason::NodeNotFound, message), None));
    };
    if key.is_empty() {
        let message = format!(
            "spec.proof: node {:?} has no spec.identity.publicKey to check the proof with",
            spec.node_name
        );
        return Err((status(Reason::NodeIdentityMissing, message), None));
    }
    let verifier = verifier();
    let node_id = hypermesh_trust::node_id_of(key);
    if !verifier.knows_node(&node_id) {
        seed(store, verifier, &node_id, &spec.node_name).await;
    }
    match verifier.verify(&name, spec, key, SystemTime::now()) {
        Ok(_) => Ok(()),
        Err(error) => {
            let reason = reason_for(&error);
            let message = format!("spec.proof: asset {name:?} rejected: {error}");
            let suspicion = (error != ProofError::ProofMissing).then(|| Suspicion {
                node: node.meta().name.clone(),
                reason: reason.as_str().to_string(),
                message: message.clone(),
            });
            Err((status(reason, message), suspicion))
        }
    }
}

/// Loads a node's already-admitted claims into the ledger (after a restart).
async fn seed(store: &Arc<dyn Store>, verifier: &ProofVerifier, node_id: &str, node_name: &str) {
    let assets: Vec<v1::Asset> = match store.list("/assets/", None, 0, 0).await {
        Ok(page) => page
            .items
            .iter()
            .filter_map(|kv| v1::Asset::decode(kv.value.as_slice()).ok())
            .filter(|a| a.spec.as_ref().is_some_and(|s| s.node_name == node_name))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, node = node_name, "cannot read assets to seed the proof ledger");
            return;
        }
    };
    verifier.seed(
        node_id,
        assets
            .iter()
            .filter_map(|a| Some((a.meta().name.as_str(), a.spec.as_ref()?))),
    );
}

/// Admission of `obj` (a new object when `current` is None). Returns a suspicion to
/// act on after the write ([`after_write`]); on a rejected proof marks the node
/// Suspect before returning the error.
pub(crate) async fn admit<K: Resource + Admission>(
    store: &Arc<dyn Store>,
    options: &Arc<RegistryOptions>,
    obj: &mut K,
    current: Option<&K>,
) -> Result<Option<Suspicion>, Status> {
    if let Some(node) = obj.as_node_mut() {
        return admit_node(node, current.and_then(|c| c.as_node()));
    }
    if let Some(asset) = obj.as_asset()
        && let Err((status, suspicion)) =
            admit_asset(store, options, asset, current.and_then(|c| c.as_asset())).await
    {
        if let Some(suspicion) = suspicion {
            mark_suspect(store, options, &suspicion).await;
        }
        return Err(status);
    }
    Ok(None)
}

/// Acts on a suspicion raised while admitting a write that was accepted.
pub(crate) async fn after_write(
    store: &Arc<dyn Store>,
    options: &Arc<RegistryOptions>,
    suspicion: Option<Suspicion>,
) {
    if let Some(suspicion) = suspicion {
        mark_suspect(store, options, &suspicion).await;
    }
}

/// Keeps a Node's current Suspect condition when a status write does not mention it.
pub(crate) fn keep_suspect_condition<K: Admission>(obj: &mut K, current: &K) {
    let (Some(next), Some(current)) = (obj.as_node_mut(), current.as_node()) else {
        return;
    };
    let Some(kept) = current.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.r#type == SUSPECT_CONDITION && c.status == "True")
    }) else {
        return;
    };
    let status = next.status.get_or_insert_with(Default::default);
    if !status
        .conditions
        .iter()
        .any(|c| c.r#type == SUSPECT_CONDITION)
    {
        status.conditions.push(kept.clone());
    }
}

/// Releases a deleted Asset's space claim.
pub(crate) fn forget<K: Admission>(obj: &K) {
    let Some(asset) = obj.as_asset() else { return };
    let node_id = asset
        .spec
        .as_ref()
        .and_then(|s| s.proof.as_ref())
        .and_then(|p| p.space.as_ref())
        .map(|s| s.node_id.as_str());
    if let Some(node_id) = node_id {
        verifier().forget(node_id, &asset.meta().name);
    }
}

/// Marks a node Suspect: condition Suspect=True, the `NoSchedule` taint and a Warning
/// Event. Failures are logged: the rejection stands either way. Boxed, because these
/// writes go through admission again, which may call back here.
pub fn mark_suspect<'a>(
    store: &'a Arc<dyn Store>,
    options: &'a Arc<RegistryOptions>,
    suspicion: &'a Suspicion,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(async move {
        tracing::warn!(node = %suspicion.node, reason = %suspicion.reason, "{}", suspicion.message);
        let nodes: Registry<v1::Node> = Registry::new(store.clone(), options.clone());
        if let Err(e) = set_suspect(&nodes, suspicion).await {
            tracing::warn!(node = %suspicion.node, error = %e, "cannot mark the node Suspect");
        }
        let events: Registry<v1::Event> = Registry::new(store.clone(), options.clone());
        if let Err(e) = record_event(&nodes, &events, suspicion).await {
            tracing::warn!(node = %suspicion.node, error = %e, "cannot record the Suspect event");
        }
    })
}

async fn set_suspect(nodes: &Registry<v1::Node>, suspicion: &Suspicion) -> Result<(), Status> {
    for _ in 0..10 {
        let mut node = nodes.get("", &suspicion.node).await?;
        let status = node.status.get_or_insert_with(Default::default);
        let now = hypermesh_api::time::now();
        match status
            .conditions
            .iter_mut()
            .find(|c| c.r#type == SUSPECT_CONDITION)
        {
            Some(c) => {
                if c.status != "True" {
                    c.last_transition_time = Some(now);
                }
                c.status = "True".into();
                c.reason = suspicion.reason.clone();
                c.message = suspicion.message.clone();
            }
            None => status.conditions.push(Condition {
                r#type: SUSPECT_CONDITION.into(),
                status: "True".into(),
                reason: suspicion.reason.clone(),
                message: suspicion.message.clone(),
                last_transition_time: Some(now),
            }),
        }
        match nodes.update_status(node).await {
            Ok(_) => break,
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(s),
        }
    }
    for _ in 0..10 {
        let mut node = nodes.get("", &suspicion.node).await?;
        if has_taint(&node) {
            return Ok(());
        }
        node.spec
            .get_or_insert_with(Default::default)
            .taints
            .push(suspect_taint());
        match nodes.update(node).await {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(s),
        }
    }
    Err(status(
        Reason::Conflict,
        format!("node {:?} kept changing", suspicion.node),
    ))
}

async fn record_event(
    nodes: &Registry<v1::Node>,
    events: &Registry<v1::Event>,
    suspicion: &Suspicion,
) -> Result<(), Status> {
    let node = nodes.get("", &suspicion.node).await?;
    let suffix: u64 = rand::random();
    let now = hypermesh_api::time::now();
    let event = v1::Event {
        metadata: Some(v1::ObjectMeta {
            name: format!("{}.suspect.{suffix:016x}", suspicion.node),
            namespace: EVENT_NAMESPACE.into(),
            ..Default::default()
        }),
        spec: Some(v1::EventSpec {
            involved_object: Some(v1::ObjectReference {
                kind: "Node".into(),
                namespace: String::new(),
                name: suspicion.node.clone(),
                uid: node.meta().uid.clone(),
            }),
            reason: suspicion.reason.clone(),
            message: suspicion.message.clone(),
            r#type: "Warning".into(),
            source: "hm-apiserver".into(),
            count: 1,
            first_timestamp: Some(now),
            last_timestamp: Some(now),
        }),
        status: None,
    };
    events.create(event).await.map(|_| ())
}
