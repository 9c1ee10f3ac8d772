//! Work: a hashcash puzzle over the record digest, which includes the apiserver's
//! one-time challenge nonce, so no answer can be computed before the challenge exists
//! or reused after it is spent. The verifier checks it against the digest it computed
//! itself, never the one the sender supplies.

use hypermesh_api::v1::{ProofChallenge, WorkProof};

use super::{MAX_WORK_DIFFICULTY, ProofError, hex};

/// Leading zero bits of `BLAKE3(digest ‖ nonce as u64 little-endian)`.
pub fn work_bits(digest: &[u8], nonce: u64) -> u32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(digest);
    hasher.update(&nonce.to_le_bytes());
    let hash = hasher.finalize();
    let mut bits = 0;
    for byte in hash.as_bytes() {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// Finds a nonce giving `difficulty` (capped at [`MAX_WORK_DIFFICULTY`]) leading zero bits.
pub fn solve(digest: &[u8], difficulty: u32) -> u64 {
    let difficulty = difficulty.min(MAX_WORK_DIFFICULTY);
    let mut nonce: u64 = rand::random::<u32>().into();
    while work_bits(digest, nonce) < difficulty {
        nonce = nonce.wrapping_add(1);
    }
    nonce
}

/// Checks the work part against the challenge and the verifier's own `digest`.
pub fn check(
    work: &WorkProof,
    challenge: &ProofChallenge,
    digest: &[u8],
) -> Result<(), ProofError> {
    if work.difficulty != challenge.work_difficulty {
        return Err(ProofError::WorkInsufficient(format!(
            "the proof claims difficulty {} but the challenge asks {}",
            work.difficulty, challenge.work_difficulty
        )));
    }
    if !work.digest.is_empty() && work.digest.as_slice() != digest {
        return Err(ProofError::SpaceMismatch(format!(
            "the asset record (name, capacity, attributes, location, committed amount or stake) is not the one the proof was made for: record digest {} but the proof commits to {}",
            hex(digest),
            hex(&work.digest)
        )));
    }
    let bits = work_bits(digest, work.nonce);
    if bits < challenge.work_difficulty {
        return Err(ProofError::WorkInsufficient(format!(
            "the work nonce gives {bits} leading zero bits over the record; {} are required",
            challenge.work_difficulty
        )));
    }
    Ok(())
}
