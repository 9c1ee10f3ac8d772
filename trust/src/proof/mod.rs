//! The four proofs of an Asset registration: building them on the node
//! ([`prove_asset`]) and checking them at the apiserver ([`ProofVerifier`]).
//!
//! A registration is a conversation: the node asks the apiserver for a one-time
//! [`ProofChallenge`](hypermesh_api::v1::ProofChallenge) (nonce, expiry, work
//! difficulty, number of space samples), bound to the node and the asset; it then builds
//! a record (asset name, spec, location, committed amount, space commitment root,
//! timestamp, challenge nonce, cited stake record), hashes it, does the work over that
//! hash, opens the sampled leaves of its space commitment, and signs it all with its
//! FALCON-1024 key. The apiserver checks each part (`docs/trust.md` holds the threat
//! model of each):
//!
//! - [`work`]: the hash of the record (which includes the challenge nonce) with the
//!   work nonce has at least the challenge's difficulty of leading zero bits. The
//!   verifier recomputes the record hash itself; the challenge is spent on acceptance.
//! - [`space`]: for STORAGE the claimed capacity is at most the committed bytes, and
//!   the sampled leaves (chosen by the challenge nonce) verify against the committed
//!   Merkle root; per node and location, claims never exceed what was proved.
//! - [`time`]: the timestamp is within the skew window of the verifier's clock and
//!   strictly after the node's last accepted proof (kept by the caller, persisted).
//! - [`stake`]: the proof cites the admin-issued stake record of its Node; without one
//!   the asset must be offered at the UNTRUSTED privacy level only.
//!
//! Units of the committed amount: bytes for MEMORY, STORAGE and GPU (device memory);
//! millicores for CPU; bits per second for NETWORK; Instances for CONTAINER.
//!
//! # Layout
//! - [`record`]: the canonical signed record and its digest.
//! - One check per proof: [`work`], [`space`], [`time`] and [`stake`].
//! - [`commitment`]: the node's side of the space proof (the file and its Merkle tree).
//! - [`ledger`]: per node and location space claims, in memory, seeded from the store.
//! - [`build`]: builds proofs ([`prove_asset`]).
//! - [`verify`]: checks them ([`ProofVerifier`]).

pub mod build;
pub mod commitment;
pub mod ledger;
pub mod record;
pub mod space;
pub mod stake;
pub mod time;
pub mod verify;
pub mod work;

pub use build::{ProofInput, prove_asset, prove_asset_at};
pub use commitment::{CommitmentError, SpaceCommitment};
pub use verify::{ProofContext, ProofVerifier, Verified, VerifierConfig};

/// Longest nonce accepted, in bytes.
pub const MAX_NONCE_BYTES: usize = 64;
/// Highest work difficulty a challenge may ask (2^40 hashes would take hours).
pub const MAX_WORK_DIFFICULTY: u32 = 40;
/// Most space samples a challenge may ask.
pub const MAX_SPACE_SAMPLES: u32 = 64;

/// Why a proof was rejected: one variant per failing check. [`ProofError::reason`]
/// gives the stable name the apiserver reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The asset carries no `spec.proof` at all.
    #[error("the asset carries no proof (spec.proof is empty)")]
    ProofMissing,
    /// A part of the proof is absent or ill-formed.
    #[error("the proof is malformed: {0}")]
    ProofMalformed(String),
    /// The signature does not verify with the node's public key over the record.
    #[error("stake: the signature does not verify with the public key of node {node_id}")]
    StakeForged {
        /// The node whose key was tried.
        node_id: String,
    },
    /// `stake.nodeId` names another node than the one owning the asset.
    #[error("stake: signed as node {claimed} but the asset's node has NodeId {expected}")]
    StakeWrongNode {
        /// The NodeId in the proof.
        claimed: String,
        /// The NodeId of the owning node's key.
        expected: String,
    },
    /// The proof cites a stake record the node does not hold.
    #[error("stake: the proof cites stake record {cited:?} but the node holds {held:?}")]
    StakeInvalid {
        /// The cited record id.
        cited: String,
        /// The node's record id (empty: none).
        held: String,
    },
    /// The proof cites no stake record (or the node has none) and the asset is offered
    /// above the UNTRUSTED privacy level.
    #[error(
        "stake: node has no stake record cited by the proof, so the asset may only be offered at privacy UNTRUSTED (an admin issues stake with `hmctl node stake`)"
    )]
    Unstaked,
    /// The timestamp is outside the skew window.
    #[error(
        "time: the record is {offset_secs}s away from the server clock; at most {skew_secs}s is accepted"
    )]
    TimeStale {
        /// Seconds between the record's timestamp and now (either way).
        offset_secs: u64,
        /// The skew window in seconds.
        skew_secs: u64,
    },
    /// The timestamp is not after the node's last accepted proof (a replayed record).
    #[error(
        "time: the record is dated {at}, not after the node's last accepted proof at {last} (replayed record)"
    )]
    TimeReplayed {
        /// The record's timestamp (RFC 3339).
        at: String,
        /// The last accepted proof's timestamp (RFC 3339).
        last: String,
    },
    /// The proof answers no outstanding challenge for this node and asset.
    #[error("work: {0}")]
    ChallengeInvalid(String),
    /// The asset is not bound to the node, location or capacity the proof commits to.
    #[error("space: {0}")]
    SpaceMismatch(String),
    /// The claimed capacity exceeds the commitment, or the node's assets claim more of
    /// a location than was proved for it.
    #[error("space: {0}")]
    SpaceOverclaimed(String),
    /// The space commitment's openings do not verify, or are missing or ill-formed.
    #[error("space: {0}")]
    SpaceInvalid(String),
    /// The proof has no work part.
    #[error("work: the proof has no work part")]
    WorkMissing,
    /// The work does not meet the challenge's difficulty.
    #[error("work: {0}")]
    WorkInsufficient(String),
}

impl ProofError {
    /// The stable name of the failed check, e.g. `StakeForged`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProofError::ProofMissing => "ProofMissing",
            ProofError::ProofMalformed(_) => "ProofMalformed",
            ProofError::StakeForged { .. } => "StakeForged",
            ProofError::StakeWrongNode { .. } => "StakeWrongNode",
            ProofError::StakeInvalid { .. } => "StakeInvalid",
            ProofError::Unstaked => "Unstaked",
            ProofError::TimeStale { .. } => "TimeStale",
            ProofError::TimeReplayed { .. } => "TimeReplayed",
            ProofError::ChallengeInvalid(_) => "ChallengeInvalid",
            ProofError::SpaceMismatch(_) => "SpaceMismatch",
            ProofError::SpaceOverclaimed(_) => "SpaceOverclaimed",
            ProofError::SpaceInvalid(_) => "SpaceInvalid",
            ProofError::WorkMissing => "WorkMissing",
            ProofError::WorkInsufficient(_) => "WorkInsufficient",
        }
    }

    /// Whether the failure is evidence that the node lied (so it becomes Suspect), as
    /// opposed to a stale or missing piece an honest node can hit (an expired challenge,
    /// a clock out of the window, a node not yet staked).
    pub fn is_evidence(&self) -> bool {
        !matches!(
            self,
            ProofError::ProofMissing
                | ProofError::ChallengeInvalid(_)
                | ProofError::TimeStale { .. }
                | ProofError::Unstaked
                | ProofError::StakeInvalid { .. }
        )
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
