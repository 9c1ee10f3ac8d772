//! Stake: the proof cites the stake record an admin issued to its Node
//! (`hmctl node stake NAME --amount N`, kept in the Node's `spec.stake`, which only an
//! admin may write). A node without stake, or a proof citing none, may offer its Asset
//! only at the UNTRUSTED privacy level; a proof citing a record the node does not hold
//! (revoked, or another node's) is refused.

use hypermesh_api::v1::{AssetSpec, NodeStake, PrivacyLevel, StakeProof};

use super::ProofError;

/// Checks the cited stake record against the node's and the asset's privacy level.
pub fn check(
    spec: &AssetSpec,
    stake: &StakeProof,
    held: Option<&NodeStake>,
) -> Result<(), ProofError> {
    let held = held.filter(|s| s.amount > 0 && !s.record_id.is_empty());
    match (stake.stake_record.as_str(), held) {
        ("", _) => {
            if spec.privacy == PrivacyLevel::Untrusted as i32 {
                Ok(())
            } else {
                Err(ProofError::Unstaked)
            }
        }
        (cited, Some(h)) if cited == h.record_id => Ok(()),
        (cited, held) => Err(ProofError::StakeInvalid {
            cited: cited.to_string(),
            held: held.map(|h| h.record_id.clone()).unwrap_or_default(),
        }),
    }
}
