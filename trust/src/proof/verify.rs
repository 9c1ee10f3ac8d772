//! Checking an Asset's proof at the apiserver: [`ProofVerifier::verify`] runs the
//! cheap checks first (shape, challenge, work, time, stake, space) and the FALCON
//! signature last, then the per-node space ledger.
//!
//! What must outlive the process (the outstanding challenge, the node's last accepted
//! proof time, the node's stake record) is the caller's to look up and pass in a
//! [`ProofContext`], and to persist after acceptance: the apiserver keeps them in the
//! store, so a restart or another apiserver refuses a replay all the same.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use hypermesh_api::v1::{AssetSpec, NodeStake, ProofChallenge};

use super::ledger::NodeLedger;
use super::record::{Parts, digest, signed_message};
use super::{MAX_NONCE_BYTES, MAX_SPACE_SAMPLES, ProofError, hex, space, stake, time, work};
use crate::identity::{node_id_of, verify_signature};

/// How proofs are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// How far a record's timestamp may be from the verifier's clock, either way.
    pub skew: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            skew: Duration::from_secs(300),
        }
    }
}

/// What the verifier needs beyond the Asset: the node's key, the outstanding challenge
/// the proof cites (looked up by the caller for this node and asset), the node's last
/// accepted proof time and its stake record.
#[derive(Debug, Clone, Copy)]
pub struct ProofContext<'a> {
    /// The node's FALCON-1024 public key.
    pub public_key: &'a [u8],
    /// The outstanding challenge with the nonce the proof cites, if there is one.
    pub challenge: Option<&'a ProofChallenge>,
    /// When the node's last accepted proof was dated.
    pub last_accepted: Option<SystemTime>,
    /// The node's stake record.
    pub stake: Option<&'a NodeStake>,
    /// The verifier's clock.
    pub now: SystemTime,
}

/// What a verified proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The owning node.
    pub node_id: String,
    /// The device path or ID.
    pub location: String,
    /// The amount committed.
    pub committed_bytes: u64,
    /// The record digest (hex).
    pub digest: String,
    /// The record's timestamp: the node's new last accepted proof time.
    pub timestamp: SystemTime,
}

/// Checks Asset proofs; holds each node's space ledger. Share one per apiserver.
#[derive(Debug)]
pub struct ProofVerifier {
    config: VerifierConfig,
    ledgers: Mutex<HashMap<String, NodeLedger>>,
}

impl ProofVerifier {
    /// A verifier with an empty ledger.
    pub fn new(config: VerifierConfig) -> Self {
        ProofVerifier {
            config,
            ledgers: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeLedger>> {
        self.ledgers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks `spec.proof` of the Asset `asset_name`; on success records its space claim.
    pub fn verify(
        &self,
        asset_name: &str,
        spec: &AssetSpec,
        ctx: &ProofContext<'_>,
    ) -> Result<Verified, ProofError> {
        let proof = spec.proof.as_ref().ok_or(ProofError::ProofMissing)?;
        let parts = Parts::of(proof)?;
        let node_id = node_id_of(ctx.public_key);
        if parts.stake.node_id != node_id {
            return Err(ProofError::StakeWrongNode {
                claimed: parts.stake.node_id.clone(),
                expected: node_id,
            });
        }
        if parts.space.node_id != node_id {
            return Err(ProofError::SpaceMismatch(format!(
                "the asset is bound to node {} but is owned by node {node_id}",
                parts.space.node_id
            )));
        }
        if parts.space.location.is_empty() {
            return Err(ProofError::SpaceMismatch(
                "the asset is bound to no location (space.location is empty)".into(),
            ));
        }
        if parts.space.openings.len() > MAX_SPACE_SAMPLES as usize {
            return Err(ProofError::ProofMalformed(format!(
                "space.openings: at most {MAX_SPACE_SAMPLES}"
            )));
        }
        if parts.work.challenge.is_empty() || parts.work.challenge.len() > MAX_NONCE_BYTES {
            return Err(ProofError::ChallengeInvalid(format!(
                "work.challenge must hold the 1 to {MAX_NONCE_BYTES} byte nonce of a challenge from AssetService.Challenge"
            )));
        }
        let challenge = ctx
            .challenge
            .filter(|c| c.nonce == parts.work.challenge && c.asset_name == asset_name)
            .ok_or_else(|| {
                ProofError::ChallengeInvalid(format!(
                    "challenge {} was not issued for asset {asset_name:?} of this node, or was already used",
                    hex(&parts.work.challenge)
                ))
            })?;
        let expires = challenge
            .expires
            .as_ref()
            .map(hypermesh_api::time::to_system_time)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if expires <= ctx.now {
            return Err(ProofError::ChallengeInvalid(format!(
                "challenge {} expired",
                hex(&challenge.nonce)
            )));
        }

        let digest = digest(asset_name, spec, parts);
        work::check(parts.work, challenge, &digest)?;
        let at = time::check(parts.time, ctx.now, self.config.skew, ctx.last_accepted)?;
        stake::check(spec, parts.stake, ctx.stake)?;
        space::check(spec, parts.space, challenge)?;
        if !verify_signature(
            ctx.public_key,
            &signed_message(&digest, parts.work.nonce),
            &parts.stake.signature,
        ) {
            return Err(ProofError::StakeForged { node_id });
        }

        let mut ledgers = self.lock();
        let ledger = ledgers.entry(node_id.clone()).or_default();
        ledger.check(
            asset_name,
            &parts.space.location,
            parts.space.committed_bytes,
        )?;
        ledger.record(
            asset_name,
            &parts.space.location,
            parts.space.committed_bytes,
        );
        Ok(Verified {
            node_id,
            location: parts.space.location.clone(),
            committed_bytes: parts.space.committed_bytes,
            digest: hex(&digest),
            timestamp: at,
        })
    }

    /// Whether the ledger has seen `node_id` (its claims recorded or seeded).
    pub fn knows_node(&self, node_id: &str) -> bool {
        self.lock().contains_key(node_id)
    }

    /// Records the claims of already-admitted assets (read back from the store) without
    /// checking them again. Assets without a space proof are skipped. Marks the node
    /// as known even when nothing is recorded.
    pub fn seed<'a>(
        &self,
        node_id: &str,
        assets: impl IntoIterator<Item = (&'a str, &'a AssetSpec)>,
    ) {
        let mut ledgers = self.lock();
        let ledger = ledgers.entry(node_id.to_string()).or_default();
        for (name, spec) in assets {
            if let Some(space) = spec.proof.as_ref().and_then(|p| p.space.as_ref())
                && space.node_id == node_id
            {
                ledger.record(name, &space.location, space.committed_bytes);
            }
        }
    }

    /// Releases the claim of a deleted asset.
    pub fn forget(&self, node_id: &str, asset_name: &str) {
        if let Some(ledger) = self.lock().get_mut(node_id) {
            ledger.release(asset_name);
        }
    }

    /// Forgets the node's claims, so the next verification seeds them again from what
    /// is stored (used when a write's outcome is uncertain).
    pub fn forget_node(&self, node_id: &str) {
        self.lock().remove(node_id);
    }
}
