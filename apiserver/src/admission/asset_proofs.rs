//! Asset proofs: every Asset carries a valid ConsensusProof (stake, time, space, work)
//! answering a challenge this cluster issued, checked by [`ProofVerifier`] with the
//! node's persisted proof ledger ([`crate::proof_ledger`]).
//!
//! Policy, in order:
//! - no proof, no Asset: an Asset whose Node is missing or has no identity (public
//!   key) is refused, and so is one without a proof;
//! - the proof must answer an outstanding challenge for this node and asset, be dated
//!   after the node's last accepted proof, cite the node's stake record (or offer the
//!   Asset at UNTRUSTED only), and cover its capacity with committed space;
//! - on acceptance the challenge is spent and the node's last proof time moves forward
//!   in one compare-and-swap on the ledger (the one write a plugin makes: the ledger is
//!   the verifier's own state, not an API object);
//! - a failure that shows the node lied ([`ProofError::is_evidence`]) is a [`Finding`]
//!   against the node (it becomes Suspect) when the write came from that node or an
//!   admin: nobody else can write the node's Assets (node restriction);
//! - an Asset update that leaves the spec as it was is not verified again.

use std::time::SystemTime;

use hypermesh_api::Resource;
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1;
use hypermesh_trust::proof::{ProofContext, ProofError, ProofVerifier, VerifierConfig};
use prost::Message;
use tonic::Status;

use super::node_identity::public_key;
use super::{AdmissionRequest, Admit, Finding, Findings, ObjectRef, Operation};
use crate::object::store_status;
use crate::proof_ledger::ProofSettings;
use crate::store::Store;

/// The plugin, with the verifier's state for this apiserver.
#[derive(Debug)]
pub struct AssetProofs {
    verifier: ProofVerifier,
}

impl Default for AssetProofs {
    fn default() -> Self {
        AssetProofs::new(&ProofSettings::default())
    }
}

impl AssetProofs {
    /// The plugin with the cluster's proof settings.
    pub fn new(settings: &ProofSettings) -> Self {
        AssetProofs {
            verifier: ProofVerifier::new(VerifierConfig {
                skew: settings.skew,
            }),
        }
    }
}

/// The stable API reason for a failed proof.
pub fn reason_for(error: &ProofError) -> Reason {
    match error {
        ProofError::ProofMissing => Reason::ProofMissing,
        ProofError::ProofMalformed(_) => Reason::ProofMalformed,
        ProofError::StakeForged { .. } => Reason::ProofForged,
        ProofError::StakeWrongNode { .. } => Reason::ProofWrongNode,
        ProofError::StakeInvalid { .. } => Reason::ProofStakeInvalid,
        ProofError::Unstaked => Reason::ProofUnstaked,
        ProofError::TimeStale { .. } => Reason::ProofStale,
        ProofError::TimeReplayed { .. } => Reason::ProofReplayed,
        ProofError::ChallengeInvalid(_) => Reason::ProofChallengeInvalid,
        ProofError::SpaceMismatch(_) => Reason::ProofSpaceMismatch,
        ProofError::SpaceOverclaimed(_) => Reason::ProofOverclaimed,
        ProofError::SpaceInvalid(_) => Reason::ProofSpaceInvalid,
        ProofError::WorkMissing => Reason::ProofWorkMissing,
        ProofError::WorkInsufficient(_) => Reason::ProofWorkInsufficient,
    }
}

async fn node_of(store: &dyn Store, name: &str) -> Result<Option<v1::Node>, Status> {
    let key = format!("/nodes/{name}");
    let Some(kv) = store.get(&key).await.map_err(|e| store_status(e, &key))? else {
        return Ok(None);
    };
    v1::Node::decode(kv.value.as_slice())
        .map(Some)
        .map_err(|e| {
            status(
                Reason::InternalError,
                format!("stored {key} does not decode: {e}"),
            )
        })
}

/// Whether any of the node's Assets may have been admitted: every admitted Asset had
/// its proof accepted, which set the ledger's `last_proof` (ledgers are never deleted).
/// When this is false there is nothing to seed.
fn may_have_admitted_assets(ledger: &v1::ProofLedger) -> bool {
    ledger.last_proof.is_some()
}

impl AssetProofs {
    /// Loads a node's already-admitted claims into the ledger (after a restart).
    async fn seed(&self, store: &dyn Store, node_id: &str, node_name: &str) {
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
        self.verifier.seed(
            node_id,
            assets
                .iter()
                .filter_map(|a| Some((a.meta().name.as_str(), a.spec.as_ref()?))),
        );
    }

    async fn check(
        &self,
        request: &AdmissionRequest<'_>,
        asset: &v1::Asset,
        findings: &mut Findings,
    ) -> Result<(), Status> {
        let Some(spec) = asset.spec.as_ref() else {
            return Err(status(
                Reason::ProofMissing,
                "spec: an Asset needs a spec with its node and proof",
            ));
        };
        let name = asset.meta().name.clone();
        let Some(node) = node_of(request.store, &spec.node_name).await? else {
            return Err(status(
                Reason::NodeNotFound,
                format!(
                    "spec.nodeName: node {:?} not found; register the node (with its identity) before its assets",
                    spec.node_name
                ),
            ));
        };
        let key = public_key(&node);
        if key.is_empty() {
            return Err(status(
                Reason::NodeIdentityMissing,
                format!(
                    "spec.nodeName: node {:?} has no spec.identity.publicKey; assets of nodes without an identity are refused (no proof, no Asset)",
                    spec.node_name
                ),
            ));
        }
        let node_id = hypermesh_trust::node_id_of(key);
        let (ledger, _) = crate::proof_ledger::load(request.store, &spec.node_name).await?;
        if !self.verifier.knows_node(&node_id) {
            if may_have_admitted_assets(&ledger) {
                self.seed(request.store, &node_id, &spec.node_name).await;
            } else {
                // A node that never had a proof accepted has no admitted Asset whose
                // claims could be missing: skip reading every Asset in the store (a
                // scan per new node made registering N nodes cost O(N²)).
                self.verifier.seed(&node_id, std::iter::empty());
            }
        }
        let cited = spec
            .proof
            .as_ref()
            .and_then(|p| p.work.as_ref())
            .map(|w| w.challenge.as_slice())
            .unwrap_or_default();
        let challenge = ledger.challenges.iter().find(|c| c.nonce == cited);
        let ctx = ProofContext {
            public_key: key,
            challenge,
            last_accepted: ledger
                .last_proof
                .as_ref()
                .map(hypermesh_api::time::to_system_time),
            stake: node.spec.as_ref().and_then(|s| s.stake.as_ref()),
            now: SystemTime::now(),
        };
        let error = match self.verifier.verify(&name, spec, &ctx) {
            Ok(verified) => {
                let spent = crate::proof_ledger::accept(
                    request.store,
                    &spec.node_name,
                    cited,
                    verified.timestamp,
                )
                .await;
                if spent.is_err() {
                    self.verifier.forget_node(&node_id);
                }
                return spent;
            }
            Err(error) => error,
        };
        let reason = reason_for(&error);
        let message = format!("spec.proof: asset {name:?} rejected: {error}");
        let caller = request.access.caller;
        let from_the_node = caller.node_name() == Some(spec.node_name.as_str());
        if error.is_evidence() && (from_the_node || caller.is_admin()) {
            findings.push(Finding {
                node: spec.node_name.clone(),
                reason: reason.as_str().to_string(),
                message: message.clone(),
            });
        }
        Err(status(reason, message))
    }
}

#[tonic::async_trait]
impl Admit for AssetProofs {
    fn name(&self) -> &'static str {
        "AssetProofs"
    }

    async fn validate(
        &self,
        request: &AdmissionRequest<'_>,
        new: Option<ObjectRef<'_>>,
        findings: &mut Findings,
    ) -> Result<(), Status> {
        match (request.access.operation, new, request.old) {
            (Operation::Create | Operation::Update, Some(ObjectRef::Asset(asset)), old) => {
                if let Some(ObjectRef::Asset(old)) = old
                    && old.spec_bytes() == asset.spec_bytes()
                {
                    return Ok(());
                }
                self.check(request, asset, findings).await
            }
            (Operation::Delete, None, Some(ObjectRef::Asset(old))) => {
                let node_id = old
                    .spec
                    .as_ref()
                    .and_then(|s| s.proof.as_ref())
                    .and_then(|p| p.space.as_ref())
                    .map(|s| s.node_id.as_str());
                if let Some(node_id) = node_id {
                    self.verifier.forget_node(node_id);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
