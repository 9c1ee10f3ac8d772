//! The canonical record an Asset proof signs, and its digest.
//!
//! The record is one byte string: a domain tag, the asset name, the prost encoding of
//! `AssetSpec` with `proof` cleared (maps are `BTreeMap`, so the encoding is
//! deterministic), the NodeId, the location, the committed amount, the space
//! commitment's Merkle root, the timestamp, the time nonce, the work difficulty, the
//! challenge nonce and the cited stake record. Its BLAKE3 hash is the record digest.
//! The node signs `digest ‖ work nonce`, so changing any field breaks the signature.
//! The space openings are not in the record: they are checked against the root, which is.

use hypermesh_api::v1::{AssetSpec, ConsensusProof, SpaceProof, StakeProof, TimeProof, WorkProof};
use prost::Message;

use super::ProofError;

const RECORD_DOMAIN: &[u8] = b"hypermesh/asset-proof/v2\n";
const SIGNATURE_DOMAIN: &[u8] = b"hypermesh/asset-proof-signature/v2\n";

/// The parts of a proof, each present.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// Stake.
    pub stake: &'a StakeProof,
    /// Time.
    pub time: &'a TimeProof,
    /// Space.
    pub space: &'a SpaceProof,
    /// Work.
    pub work: &'a WorkProof,
}

impl<'a> Parts<'a> {
    /// Splits a proof into its parts, or says which is missing.
    pub fn of(proof: &'a ConsensusProof) -> Result<Self, ProofError> {
        let missing = |what: &str| ProofError::ProofMalformed(format!("no {what} part"));
        let work = proof.work.as_ref().ok_or(ProofError::WorkMissing)?;
        Ok(Parts {
            stake: proof.stake.as_ref().ok_or_else(|| missing("stake"))?,
            time: proof.time.as_ref().ok_or_else(|| missing("time"))?,
            space: proof.space.as_ref().ok_or_else(|| missing("space"))?,
            work,
        })
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The record digest of `asset_name` with `spec` (its `proof` ignored) and `parts`.
pub fn digest(asset_name: &str, spec: &AssetSpec, parts: Parts<'_>) -> [u8; 32] {
    let mut bare = spec.clone();
    bare.proof = None;
    let ts = parts.time.timestamp.unwrap_or_default();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(RECORD_DOMAIN);
    put(&mut out, asset_name.as_bytes());
    put(&mut out, &bare.encode_to_vec());
    put(&mut out, parts.space.node_id.as_bytes());
    put(&mut out, parts.space.location.as_bytes());
    out.extend_from_slice(&parts.space.committed_bytes.to_be_bytes());
    put(&mut out, &parts.space.merkle_root);
    out.extend_from_slice(&ts.seconds.to_be_bytes());
    out.extend_from_slice(&ts.nanos.to_be_bytes());
    put(&mut out, &parts.time.nonce);
    out.extend_from_slice(&parts.work.difficulty.to_be_bytes());
    put(&mut out, &parts.work.challenge);
    put(&mut out, parts.stake.stake_record.as_bytes());
    *blake3::hash(&out).as_bytes()
}

/// What the node signs: the digest and the work nonce.
pub fn signed_message(digest: &[u8], work_nonce: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 40);
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(digest);
    m.extend_from_slice(&work_nonce.to_be_bytes());
    m
}
