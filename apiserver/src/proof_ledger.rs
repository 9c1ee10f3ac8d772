//! The apiserver's persisted proof state, one record per node under
//! `/proofledgers/<node>` (a [`v1::ProofLedger`], written through the [`Store`] trait
//! so every backend and every apiserver shares it): the challenges issued and not yet
//! answered, and the time of the node's last accepted proof. `AssetService.Challenge`
//! adds a challenge; an accepted proof spends its challenge and moves the time forward,
//! both in one compare-and-swap, so an answer is accepted once across restarts and
//! apiservers.

use std::time::{Duration, SystemTime};

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1;
use prost::Message;
use tonic::Status;

use crate::object::store_status;
use crate::store::{KeyValue, Store, StoreError};

/// Key prefix of the ledgers (not an API kind: never listed or watched by clients).
pub const PREFIX: &str = "/proofledgers/";
/// Most challenges one node may have outstanding; the oldest go first.
pub const MAX_CHALLENGES: usize = 256;
/// Compare-and-swap attempts before giving up on a contended ledger.
const ATTEMPTS: usize = 16;

/// The cluster's proof settings (`hm-apiserver --proof-work-difficulty …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofSettings {
    /// Leading zero bits a work answer must have (≈ 2^difficulty BLAKE3 hashes).
    pub work_difficulty: u32,
    /// Leaves of a storage commitment each proof opens.
    pub space_samples: u32,
    /// How long a challenge may be answered.
    pub challenge_ttl: Duration,
    /// How far a proof's timestamp may be from the server clock.
    pub skew: Duration,
}

impl Default for ProofSettings {
    fn default() -> Self {
        ProofSettings {
            work_difficulty: 14,
            space_samples: 8,
            challenge_ttl: Duration::from_secs(120),
            skew: Duration::from_secs(300),
        }
    }
}

fn key(node: &str) -> String {
    format!("{PREFIX}{node}")
}

/// A node's ledger as stored (default when there is none) and the revision to swap at.
pub async fn load(store: &dyn Store, node: &str) -> Result<(v1::ProofLedger, Option<u64>), Status> {
    let key = key(node);
    let kv: Option<KeyValue> = store.get(&key).await.map_err(|e| store_status(e, &key))?;
    match kv {
        None => Ok((
            v1::ProofLedger {
                node_name: node.to_string(),
                ..Default::default()
            },
            None,
        )),
        Some(kv) => {
            let ledger = v1::ProofLedger::decode(kv.value.as_slice()).map_err(|e| {
                status(
                    Reason::InternalError,
                    format!("stored {key} does not decode: {e}"),
                )
            })?;
            Ok((ledger, Some(kv.mod_revision)))
        }
    }
}

async fn save(
    store: &dyn Store,
    node: &str,
    ledger: &v1::ProofLedger,
    revision: Option<u64>,
) -> Result<bool, Status> {
    let key = key(node);
    let value = ledger.encode_to_vec();
    let result = match revision {
        None => store.create(&key, value).await,
        Some(rev) => store.update(&key, value, rev).await,
    };
    match result {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(store_status(e, &key)),
    }
}

fn expired(c: &v1::ProofChallenge, now: SystemTime) -> bool {
    c.expires
        .as_ref()
        .map(hypermesh_api::time::to_system_time)
        .is_none_or(|t| t <= now)
}

/// Issues a fresh challenge for `asset` of `node` (replacing one outstanding for the
/// same asset) and persists it.
pub async fn issue(
    store: &dyn Store,
    node: &str,
    asset: &str,
    settings: &ProofSettings,
) -> Result<v1::ProofChallenge, Status> {
    let now = SystemTime::now();
    let challenge = v1::ProofChallenge {
        nonce: rand::random::<[u8; 32]>().to_vec(),
        node_name: node.to_string(),
        asset_name: asset.to_string(),
        expires: Some(hypermesh_api::time::from_system_time(
            now + settings.challenge_ttl,
        )),
        work_difficulty: settings.work_difficulty,
        space_samples: settings.space_samples,
    };
    for _ in 0..ATTEMPTS {
        let (mut ledger, revision) = load(store, node).await?;
        ledger
            .challenges
            .retain(|c| c.asset_name != asset && !expired(c, now));
        while ledger.challenges.len() >= MAX_CHALLENGES {
            ledger.challenges.remove(0);
        }
        ledger.challenges.push(challenge.clone());
        if save(store, node, &ledger, revision).await? {
            return Ok(challenge);
        }
    }
    Err(contended(node))
}

fn contended(node: &str) -> Status {
    status(
        Reason::Conflict,
        format!("the proof ledger of node {node:?} is contended; try again"),
    )
}

/// Spends the challenge with `nonce` and records `at` as the node's last accepted
/// proof. Fails with `ProofChallengeInvalid` when the challenge is no longer
/// outstanding (used concurrently) and `ProofReplayed` when a later proof was accepted
/// in the meantime.
pub async fn accept(
    store: &dyn Store,
    node: &str,
    nonce: &[u8],
    at: SystemTime,
) -> Result<(), Status> {
    let ts = hypermesh_api::time::from_system_time(at);
    for _ in 0..ATTEMPTS {
        let (mut ledger, revision) = load(store, node).await?;
        let before = ledger.challenges.len();
        ledger.challenges.retain(|c| c.nonce != nonce);
        if ledger.challenges.len() == before {
            return Err(status(
                Reason::ProofChallengeInvalid,
                "spec.proof.work.challenge: the challenge was used by another request; ask for a new one",
            ));
        }
        if let Some(last) = ledger.last_proof.as_ref()
            && hypermesh_api::time::to_system_time(last) >= at
        {
            return Err(status(
                Reason::ProofReplayed,
                "spec.proof.time: a later proof of this node was accepted in the meantime",
            ));
        }
        ledger.last_proof = Some(ts);
        if save(store, node, &ledger, revision).await? {
            return Ok(());
        }
    }
    Err(contended(node))
}

/// Deletes a node's ledger (when the Node is deleted).
pub async fn remove(store: &dyn Store, node: &str) -> Result<(), Status> {
    let key = key(node);
    match store.delete(&key, None).await {
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(store_status(e, &key)),
    }
}
