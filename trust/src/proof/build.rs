//! Building an Asset's proof on the node: [`prove_asset`] answers a challenge.

use std::time::SystemTime;

use hypermesh_api::v1::{
    AssetSpec, ConsensusProof, ProofChallenge, SpaceProof, StakeProof, TimeProof, WorkProof,
};

use super::commitment::{CommitmentError, SpaceCommitment};
use super::record::{Parts, digest, signed_message};
use super::{MAX_SPACE_SAMPLES, work};
use crate::identity::NodeIdentity;

/// What a proof is built from.
#[derive(Debug, Clone, Copy)]
pub struct ProofInput<'a> {
    /// The Asset's name.
    pub asset_name: &'a str,
    /// Its spec (`proof` ignored).
    pub spec: &'a AssetSpec,
    /// Device path or ID.
    pub location: &'a str,
    /// The amount committed (see the module docs for units); for STORAGE with a
    /// commitment, the commitment's size is used instead.
    pub committed_bytes: u64,
    /// The challenge from `AssetService.Challenge`.
    pub challenge: &'a ProofChallenge,
    /// The Node's stake record id (empty: none, so the asset must be UNTRUSTED).
    pub stake_record: &'a str,
    /// The space commitment (STORAGE assets).
    pub commitment: Option<&'a SpaceCommitment>,
}

/// Builds `spec.proof` for `input`, dated now.
pub fn prove_asset(
    identity: &NodeIdentity,
    input: ProofInput<'_>,
) -> Result<ConsensusProof, CommitmentError> {
    prove_asset_at(identity, input, SystemTime::now())
}

/// [`prove_asset`] with an explicit timestamp (for tests and clock-skew checks).
pub fn prove_asset_at(
    identity: &NodeIdentity,
    input: ProofInput<'_>,
    at: SystemTime,
) -> Result<ConsensusProof, CommitmentError> {
    let challenge = input.challenge;
    let mut space = SpaceProof {
        node_id: identity.node_id().to_string(),
        location: input.location.to_string(),
        committed_bytes: input.committed_bytes,
        merkle_root: Vec::new(),
        openings: Vec::new(),
    };
    if let Some(c) = input.commitment {
        space.committed_bytes = c.committed_bytes();
        space.merkle_root = c.root().to_vec();
        space.openings = c.openings(
            &challenge.nonce,
            challenge.space_samples.min(MAX_SPACE_SAMPLES),
        )?;
    }
    let time = TimeProof {
        timestamp: Some(hypermesh_api::time::from_system_time(at)),
        nonce: rand::random::<[u8; 16]>().to_vec(),
    };
    let mut stake = StakeProof {
        node_id: identity.node_id().to_string(),
        signature: Vec::new(),
        stake_record: input.stake_record.to_string(),
    };
    let mut work = WorkProof {
        difficulty: challenge.work_difficulty,
        nonce: 0,
        digest: Vec::new(),
        challenge: challenge.nonce.clone(),
    };
    let d = digest(
        input.asset_name,
        input.spec,
        Parts {
            stake: &stake,
            time: &time,
            space: &space,
            work: &work,
        },
    );
    work.nonce = work::solve(&d, challenge.work_difficulty);
    work.digest = d.to_vec();
    stake.signature = identity.sign(&signed_message(&d, work.nonce));
    Ok(ConsensusProof {
        stake: Some(stake),
        time: Some(time),
        space: Some(space),
        work: Some(work),
    })
}
