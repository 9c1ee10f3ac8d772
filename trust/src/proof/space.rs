//! Space: what the asset claims is covered by what the node committed.
//!
//! For STORAGE assets the node keeps a file of random bytes (see [`super::commitment`])
//! and commits to it with a BLAKE3 Merkle tree over [`LEAF_SIZE`]-byte leaves. The
//! challenge nonce picks [`sample_indices`]; the node returns those leaves with their
//! paths and the verifier checks them against the committed root, reading nothing but
//! the proof. The claimed `storage` capacity must not exceed the committed bytes.
//! For MEMORY and GPU, the claimed byte amount must not exceed the committed amount
//! (a consistency check; no openings, see docs/trust.md).
//!
//! Tree shape: leaf hash `BLAKE3(0x00 ‖ leaf)`, inner `BLAKE3(0x01 ‖ left ‖ right)`;
//! at a level with an odd count the last node moves up unchanged (no sibling).

use hypermesh_api::quantity::Quantity;
use hypermesh_api::v1::{AssetSpec, AssetType, MerkleOpening, ProofChallenge, SpaceProof};

use super::ProofError;

/// Bytes per leaf of a space commitment.
pub const LEAF_SIZE: usize = 1024;
/// Deepest tree accepted (2^48 leaves of 1 KiB = 256 PiB).
pub const MAX_DEPTH: usize = 48;

/// Hash of one leaf.
pub fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(leaf);
    *h.finalize().as_bytes()
}

/// Hash of two children.
pub fn inner_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// The leaf indices a challenge samples from a commitment of `leaves` leaves.
pub fn sample_indices(challenge: &[u8], root: &[u8], leaves: u64, samples: u32) -> Vec<u64> {
    if leaves == 0 {
        return Vec::new();
    }
    (0..samples)
        .map(|i| {
            let mut h = blake3::Hasher::new();
            h.update(b"hypermesh/space-sample/v1\n");
            h.update(challenge);
            h.update(root);
            h.update(&i.to_le_bytes());
            let mut first = [0u8; 8];
            first.copy_from_slice(&h.finalize().as_bytes()[..8]);
            u64::from_le_bytes(first) % leaves
        })
        .collect()
}

/// Recomputes the root from one opening of a tree with `leaves` leaves.
pub fn root_of(opening: &MerkleOpening, leaves: u64) -> Result<[u8; 32], String> {
    if opening.leaf.len() != LEAF_SIZE {
        return Err(format!(
            "leaf {} holds {} bytes; leaves are {LEAF_SIZE}",
            opening.index,
            opening.leaf.len()
        ));
    }
    if opening.path.len() > MAX_DEPTH {
        return Err(format!(
            "leaf {}: path longer than {MAX_DEPTH}",
            opening.index
        ));
    }
    let mut hash = leaf_hash(&opening.leaf);
    let (mut index, mut count) = (opening.index, leaves);
    let mut path = opening.path.iter();
    while count > 1 {
        let sibling = index ^ 1;
        if sibling < count {
            let bytes = path
                .next()
                .ok_or_else(|| format!("leaf {}: the path is too short", opening.index))?;
            let sib: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| format!("leaf {}: a path element is not 32 bytes", opening.index))?;
            hash = if index & 1 == 0 {
                inner_hash(&hash, &sib)
            } else {
                inner_hash(&sib, &hash)
            };
        }
        index >>= 1;
        count = count.div_ceil(2);
    }
    if path.next().is_some() {
        return Err(format!("leaf {}: the path is too long", opening.index));
    }
    Ok(hash)
}

/// The byte amount an asset of this type claims (`None` for types measured otherwise).
pub fn claimed_bytes(spec: &AssetSpec) -> Result<Option<(&'static str, u64)>, ProofError> {
    let key = match AssetType::try_from(spec.r#type) {
        Ok(AssetType::Storage) => "storage",
        Ok(AssetType::Memory) => "memory",
        Ok(AssetType::Gpu) => "memory",
        _ => return Ok(None),
    };
    let Some(text) = spec.capacity.get(key) else {
        return Ok(None);
    };
    let q: Quantity = text
        .parse()
        .map_err(|e| ProofError::ProofMalformed(format!("spec.capacity.{key}: {text:?}: {e}")))?;
    Ok(Some((
        key,
        u64::try_from(q.units_ceil()).unwrap_or(u64::MAX),
    )))
}

/// Checks the space part: claim ≤ commitment, and for STORAGE the sampled openings.
pub fn check(
    spec: &AssetSpec,
    space: &SpaceProof,
    challenge: &ProofChallenge,
) -> Result<(), ProofError> {
    if let Some((key, claimed)) = claimed_bytes(spec)?
        && claimed > space.committed_bytes
    {
        return Err(ProofError::SpaceOverclaimed(format!(
            "spec.capacity.{key} claims {claimed} bytes but the proof commits only {}",
            space.committed_bytes
        )));
    }
    if spec.r#type != AssetType::Storage as i32 {
        return Ok(());
    }
    let invalid = |m: String| ProofError::SpaceInvalid(m);
    if space.committed_bytes == 0 || !space.committed_bytes.is_multiple_of(LEAF_SIZE as u64) {
        return Err(invalid(format!(
            "a storage commitment must be a positive multiple of {LEAF_SIZE} bytes, not {}",
            space.committed_bytes
        )));
    }
    if space.merkle_root.len() != 32 {
        return Err(invalid("merkleRoot must be 32 bytes".into()));
    }
    let leaves = space.committed_bytes / LEAF_SIZE as u64;
    let want = sample_indices(
        &challenge.nonce,
        &space.merkle_root,
        leaves,
        challenge.space_samples,
    );
    if space.openings.len() != want.len() {
        return Err(invalid(format!(
            "the challenge asks {} openings, the proof has {}",
            want.len(),
            space.openings.len()
        )));
    }
    for (opening, index) in space.openings.iter().zip(want) {
        if opening.index != index {
            return Err(invalid(format!(
                "opening of leaf {} where the challenge samples leaf {index}",
                opening.index
            )));
        }
        let root = root_of(opening, leaves).map_err(invalid)?;
        if root.as_slice() != space.merkle_root.as_slice() {
            return Err(invalid(format!(
                "leaf {index} does not verify against the committed Merkle root"
            )));
        }
    }
    Ok(())
}
