//! Per node and location space claims: a location is one device; the first asset that
//! claims it proves its size, and the node's assets together never claim more of it
//! than that (so a device cannot be sold twice under two asset names). The prover may
//! re-prove its location (a resize); deleting an asset releases its claim. Kept in
//! memory and rebuilt from the stored Assets (the store is the record).

use std::collections::{BTreeMap, HashMap};

use super::ProofError;

/// Claims at one location of one node.
#[derive(Debug, Default)]
struct LocationClaims {
    /// The asset that proved the location's size.
    prover: String,
    /// The proved size.
    proved: u64,
    /// Asset name → committed amount.
    claims: BTreeMap<String, u64>,
}

/// One node's claims.
#[derive(Debug, Default)]
pub struct NodeLedger {
    /// Location → its claims.
    locations: HashMap<String, LocationClaims>,
    /// Asset name → its location.
    assets: HashMap<String, String>,
}

impl NodeLedger {
    /// Checks a claim of `committed` at `location` by `asset`, without recording it.
    pub fn check(&self, asset: &str, location: &str, committed: u64) -> Result<(), ProofError> {
        let Some(loc) = self.locations.get(location) else {
            return Ok(());
        };
        let others: u64 = loc
            .claims
            .iter()
            .filter(|(name, _)| name.as_str() != asset)
            .map(|(_, c)| *c)
            .sum();
        let proved = if loc.prover == asset {
            committed
        } else {
            loc.proved
        };
        let claimed = others.saturating_add(committed);
        if claimed > proved {
            let other = loc
                .claims
                .keys()
                .find(|n| n.as_str() != asset)
                .cloned()
                .unwrap_or_default();
            return Err(ProofError::SpaceOverclaimed(format!(
                "location {location:?} was proved with {proved} but the node's assets would claim {claimed} there (asset {other:?} already claims it)"
            )));
        }
        Ok(())
    }

    /// Records a claim (replacing the asset's earlier one).
    pub fn record(&mut self, asset: &str, location: &str, committed: u64) {
        self.release(asset);
        let loc = self
            .locations
            .entry(location.to_string())
            .or_insert_with(|| LocationClaims {
                prover: asset.to_string(),
                proved: committed,
                claims: BTreeMap::new(),
            });
        if loc.prover == asset {
            loc.proved = committed;
        }
        loc.claims.insert(asset.to_string(), committed);
        self.assets.insert(asset.to_string(), location.to_string());
    }

    /// Releases an asset's claim.
    pub fn release(&mut self, asset: &str) {
        let Some(location) = self.assets.remove(asset) else {
            return;
        };
        if let Some(loc) = self.locations.get_mut(&location) {
            loc.claims.remove(asset);
            if loc.claims.is_empty() {
                self.locations.remove(&location);
            }
        }
    }
}
