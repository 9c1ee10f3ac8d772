//! The four proofs of an Asset registration: building them (`prove_asset`) on the
//! node and checking them (`ProofVerifier`) at the apiserver.
//!
//! **The signed record.** Everything that matters is in one canonical byte string:
//! the asset name, the prost encoding of `AssetSpec` with `proof` cleared (node name,
//! type, capacity, attributes, privacy, sharing; maps are `BTreeMap`, so the encoding
//! is deterministic), the NodeId, the location, the committed amount, the timestamp,
//! the nonce and the work difficulty. Its BLAKE3 hash is the record digest
//! (`work.digest`). The node signs `digest ‖ work nonce` with its FALCON-1024 key, so
//! changing any field (say, the capacity) breaks the signature.
//!
//! - **Stake**: `stake.signature` verifies with the public key of the Node named in
//!   `spec.nodeName`, and `stake.nodeId` is that key's NodeId.
//! - **Time**: `time.timestamp` is within the skew window of the verifier's clock,
//!   and `time.nonce` was not seen before for that node (the replay cache keeps
//!   nonces for one skew window; older records are stale anyway).
//! - **Space**: the asset is bound to `space.nodeId` (the node's own id), a
//!   `space.location` (device path or ID) and `space.committedBytes`. A location is one
//!   device: the first asset that claims it proves its size. The sum of the committed
//!   amounts of all the node's assets at one location must not exceed that proved size
//!   (so a device cannot be sold twice under two asset names); the asset that proved a
//!   location may re-prove it (e.g. after a resize). Deleting an asset releases its claim.
//! - **Work**: `BLAKE3(digest ‖ work.nonce as u64 little-endian)` has at least
//!   `work.difficulty` leading zero bits, and the difficulty is at least the verifier's
//!   minimum. Work is checked before the (more expensive) signature.
//!
//! Units of the committed amount: bytes for MEMORY, STORAGE and GPU (device memory);
//! millicores for CPU; bits per second for NETWORK; Instances for CONTAINER.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use hypermesh_api::v1::{AssetSpec, ConsensusProof, SpaceProof, StakeProof, TimeProof, WorkProof};
use prost::Message;

use crate::identity::{NodeIdentity, node_id_of, verify_signature};

const RECORD_DOMAIN: &[u8] = b"hypermesh/asset-proof/v1\n";
const SIGNATURE_DOMAIN: &[u8] = b"hypermesh/asset-proof-signature/v1\n";
/// Longest nonce accepted, in bytes.
pub const MAX_NONCE_BYTES: usize = 64;
/// Highest difficulty `prove_asset` accepts (2^40 hashes would take hours).
pub const MAX_WORK_DIFFICULTY: u32 = 40;

/// How proofs are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofParams {
    /// Leading zero bits the work hash must have (14 bits ≈ 16k BLAKE3 hashes, a few ms).
    pub work_difficulty: u32,
}

impl Default for ProofParams {
    fn default() -> Self {
        ProofParams {
            work_difficulty: 14,
        }
    }
}

/// How proofs are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// How far a record's timestamp may be from the verifier's clock, either way.
    pub skew: Duration,
    /// Lowest work difficulty accepted.
    pub min_work_difficulty: u32,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            skew: Duration::from_secs(300),
            min_work_difficulty: 12,
        }
    }
}

/// Why a proof was rejected: one variant per failing check. [`ProofError::reason`]
/// gives the stable name the apiserver reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The asset carries no `spec.proof` at all.
    #[error("the asset carries no proof (spec.proof is empty)")]
    ProofMissing,
    /// A part of the proof is absent or ill-formed (no stake, time or space part, no
    /// timestamp, an empty or oversized nonce).
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
    /// The nonce was already used by this node within the window.
    #[error("time: nonce {nonce} was already used by this node (replayed record)")]
    TimeReplayed {
        /// The nonce, hex.
        nonce: String,
    },
    /// The asset is not bound to the node, location or capacity the proof commits to:
    /// the space part names another node, has no location, or the asset's record
    /// (capacity, attributes, ...) differs from the one that was signed.
    #[error("space: {0}")]
    SpaceMismatch(String),
    /// The node's assets claim more of a location than was proved for it.
    #[error(
        "space: location {location:?} was proved with {proved} but the node's assets would claim {claimed} there (asset {other:?} already claims it)"
    )]
    SpaceOverclaimed {
        /// The device path or ID.
        location: String,
        /// What the location was proved with.
        proved: u64,
        /// What the node's assets would claim in total.
        claimed: u64,
        /// Another asset already holding a claim there.
        other: String,
    },
    /// The proof has no work part (or difficulty 0).
    #[error("work: the proof has no work part")]
    WorkMissing,
    /// The work does not meet the difficulty, or the difficulty is below the minimum.
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
            ProofError::TimeStale { .. } => "TimeStale",
            ProofError::TimeReplayed { .. } => "TimeReplayed",
            ProofError::SpaceMismatch(_) => "SpaceMismatch",
            ProofError::SpaceOverclaimed { .. } => "SpaceOverclaimed",
            ProofError::WorkMissing => "WorkMissing",
            ProofError::WorkInsufficient(_) => "WorkInsufficient",
        }
    }
}

/// What a verified proof established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The owning node.
    pub node_id: String,
    /// The device path or ID.
    pub location: String,
    /// The amount committed (see the module docs for units).
    pub committed_bytes: u64,
    /// The record digest (hex).
    pub digest: String,
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn timestamp_of(t: SystemTime) -> pbjson_types::Timestamp {
    hypermesh_api::time::from_system_time(t)
}

/// The canonical record digest a proof commits to.
fn record_digest(
    asset_name: &str,
    spec: &AssetSpec,
    space: &SpaceProof,
    time: &TimeProof,
    difficulty: u32,
) -> [u8; 32] {
    let mut bare = spec.clone();
    bare.proof = None;
    let ts = time.timestamp.unwrap_or_default();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(RECORD_DOMAIN);
    put(&mut out, asset_name.as_bytes());
    put(&mut out, &bare.encode_to_vec());
    put(&mut out, space.node_id.as_bytes());
    put(&mut out, space.location.as_bytes());
    out.extend_from_slice(&space.committed_bytes.to_be_bytes());
    out.extend_from_slice(&ts.seconds.to_be_bytes());
    out.extend_from_slice(&ts.nanos.to_be_bytes());
    put(&mut out, &time.nonce);
    out.extend_from_slice(&difficulty.to_be_bytes());
    *blake3::hash(&out).as_bytes()
}

fn signed_message(digest: &[u8], work_nonce: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 40);
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(digest);
    m.extend_from_slice(&work_nonce.to_be_bytes());
    m
}

/// Leading zero bits of `BLAKE3(digest ‖ nonce)`.
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

fn solve_work(digest: &[u8], difficulty: u32) -> u64 {
    let mut nonce: u64 = rand::random::<u32>().into();
    while work_bits(digest, nonce) < difficulty {
        nonce = nonce.wrapping_add(1);
    }
    nonce
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds `spec.proof` for the Asset `asset_name` owned by `identity`'s node, dated now.
/// `location` is the device path or ID; `committed_bytes` the amount claimed (bytes
/// for memory, storage and GPU memory, millicores for CPU, bits/s for network,
/// Instances for container capacity). `spec.proof` itself is ignored.
pub fn prove_asset(
    identity: &NodeIdentity,
    asset_name: &str,
    spec: &AssetSpec,
    location: &str,
    committed_bytes: u64,
    params: &ProofParams,
) -> ConsensusProof {
    prove_asset_at(
        identity,
        asset_name,
        spec,
        location,
        committed_bytes,
        params,
        SystemTime::now(),
    )
}

/// [`prove_asset`] with an explicit timestamp (for tests and clock-skew checks).
pub fn prove_asset_at(
    identity: &NodeIdentity,
    asset_name: &str,
    spec: &AssetSpec,
    location: &str,
    committed_bytes: u64,
    params: &ProofParams,
    at: SystemTime,
) -> ConsensusProof {
    let difficulty = params.work_difficulty.min(MAX_WORK_DIFFICULTY);
    let space = SpaceProof {
        node_id: identity.node_id().to_string(),
        location: location.to_string(),
        committed_bytes,
    };
    let time = TimeProof {
        timestamp: Some(timestamp_of(at)),
        nonce: rand::random::<[u8; 16]>().to_vec(),
    };
    let digest = record_digest(asset_name, spec, &space, &time, difficulty);
    let work_nonce = solve_work(&digest, difficulty);
    let signature = identity.sign(&signed_message(&digest, work_nonce));
    ConsensusProof {
        stake: Some(StakeProof {
            node_id: identity.node_id().to_string(),
            signature,
        }),
        time: Some(time),
        space: Some(space),
        work: Some(WorkProof {
            difficulty,
            nonce: work_nonce,
            digest: digest.to_vec(),
        }),
    }
}

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

#[derive(Debug, Default)]
struct NodeLedger {
    /// Location → its claims.
    locations: HashMap<String, LocationClaims>,
    /// Asset name → its location.
    assets: HashMap<String, String>,
}

impl NodeLedger {
    /// Checks a claim of `committed` at `location` by `asset`, without recording it.
    fn check(&self, asset: &str, location: &str, committed: u64) -> Result<(), ProofError> {
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
            return Err(ProofError::SpaceOverclaimed {
                location: location.to_string(),
                proved,
                claimed,
                other,
            });
        }
        Ok(())
    }

    fn record(&mut self, asset: &str, location: &str, committed: u64) {
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

    fn release(&mut self, asset: &str) {
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

#[derive(Debug, Default)]
struct VerifierState {
    /// (node id, nonce) pairs seen, with when they expire.
    seen: HashSet<(String, Vec<u8>)>,
    expiry: VecDeque<(SystemTime, (String, Vec<u8>))>,
    ledgers: HashMap<String, NodeLedger>,
}

impl VerifierState {
    fn prune(&mut self, now: SystemTime) {
        while let Some((expires, _)) = self.expiry.front() {
            if *expires > now {
                break;
            }
            if let Some((_, key)) = self.expiry.pop_front() {
                self.seen.remove(&key);
            }
        }
    }
}

/// Checks Asset proofs. Holds the replay cache (nonces seen within the skew window)
/// and each node's space ledger; share one instance per apiserver.
#[derive(Debug)]
pub struct ProofVerifier {
    config: VerifierConfig,
    state: Mutex<VerifierState>,
}

impl ProofVerifier {
    /// A verifier with an empty replay cache and ledger.
    pub fn new(config: VerifierConfig) -> Self {
        ProofVerifier {
            config,
            state: Mutex::new(VerifierState::default()),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VerifierState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks the four proofs of `spec.proof` for Asset `asset_name`, owned by the node
    /// with `node_public_key`, at time `now`. On success the nonce is remembered and
    /// the claim recorded in the node's ledger (replacing the asset's earlier claim).
    pub fn verify(
        &self,
        asset_name: &str,
        spec: &AssetSpec,
        node_public_key: &[u8],
        now: SystemTime,
    ) -> Result<Verified, ProofError> {
        let proof = spec.proof.as_ref().ok_or(ProofError::ProofMissing)?;
        let stake = proof
            .stake
            .as_ref()
            .ok_or_else(|| ProofError::ProofMalformed("no stake part (signature)".into()))?;
        let time = proof
            .time
            .as_ref()
            .ok_or_else(|| ProofError::ProofMalformed("no time part".into()))?;
        let space = proof
            .space
            .as_ref()
            .ok_or_else(|| ProofError::ProofMalformed("no space part".into()))?;
        let work = proof
            .work
            .as_ref()
            .filter(|w| w.difficulty > 0)
            .ok_or(ProofError::WorkMissing)?;
        let timestamp = time
            .timestamp
            .as_ref()
            .ok_or_else(|| ProofError::ProofMalformed("time.timestamp is missing".into()))?;
        if time.nonce.is_empty() || time.nonce.len() > MAX_NONCE_BYTES {
            return Err(ProofError::ProofMalformed(format!(
                "time.nonce must be 1 to {MAX_NONCE_BYTES} bytes, not {}",
                time.nonce.len()
            )));
        }
        let node_id = node_id_of(node_public_key);
        if stake.node_id != node_id {
            return Err(ProofError::StakeWrongNode {
                claimed: stake.node_id.clone(),
                expected: node_id,
            });
        }
        if space.node_id != node_id {
            return Err(ProofError::SpaceMismatch(format!(
                "the asset is bound to node {} but is owned by node {node_id}",
                space.node_id
            )));
        }
        if space.location.is_empty() {
            return Err(ProofError::SpaceMismatch(
                "the asset is bound to no location (space.location is empty)".into(),
            ));
        }

        // Work first: it is cheap to check and makes flooding cost the sender.
        if work.difficulty < self.config.min_work_difficulty {
            return Err(ProofError::WorkInsufficient(format!(
                "difficulty {} is below the required {}",
                work.difficulty, self.config.min_work_difficulty
            )));
        }
        let bits = work_bits(&work.digest, work.nonce);
        if bits < work.difficulty {
            return Err(ProofError::WorkInsufficient(format!(
                "the work nonce gives {bits} leading zero bits; {} are claimed",
                work.difficulty
            )));
        }

        let digest = record_digest(asset_name, spec, space, time, work.difficulty);
        if !verify_signature(
            node_public_key,
            &signed_message(&digest, work.nonce),
            &stake.signature,
        ) {
            if work.digest.as_slice() != digest.as_slice() {
                return Err(ProofError::SpaceMismatch(format!(
                    "the asset record (name, capacity, attributes, location or committed amount) is not the one the proof was made for: record digest {} but the proof commits to {}",
                    hex(&digest),
                    hex(&work.digest)
                )));
            }
            return Err(ProofError::StakeForged { node_id });
        }

        let at = hypermesh_api::time::to_system_time(timestamp);
        let offset = match now.duration_since(at) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if offset > self.config.skew {
            return Err(ProofError::TimeStale {
                offset_secs: offset.as_secs(),
                skew_secs: self.config.skew.as_secs(),
            });
        }

        let mut state = self.lock();
        state.prune(now);
        let key = (node_id.clone(), time.nonce.clone());
        if state.seen.contains(&key) {
            return Err(ProofError::TimeReplayed {
                nonce: hex(&time.nonce),
            });
        }
        let ledger = state.ledgers.entry(node_id.clone()).or_default();
        let result = ledger.check(asset_name, &space.location, space.committed_bytes);
        if result.is_ok() {
            ledger.record(asset_name, &space.location, space.committed_bytes);
        }
        // A correctly signed, fresh nonce is spent even when the claim is refused.
        state.seen.insert(key.clone());
        let expires = at.max(now) + self.config.skew;
        state.expiry.push_back((expires, key));
        result?;
        Ok(Verified {
            node_id,
            location: space.location.clone(),
            committed_bytes: space.committed_bytes,
            digest: hex(&digest),
        })
    }

    /// Whether the ledger has seen `node_id` (its claims recorded or seeded).
    pub fn knows_node(&self, node_id: &str) -> bool {
        self.lock().ledgers.contains_key(node_id)
    }

    /// Records the claims of already-admitted assets (e.g. read back from the store
    /// after a restart) without checking them again, and their nonces while their
    /// timestamps are within the window (so a stored record cannot be replayed after a
    /// restart). Assets without a space proof are skipped. Marks the node as known even
    /// when nothing is recorded.
    pub fn seed<'a>(
        &self,
        node_id: &str,
        assets: impl IntoIterator<Item = (&'a str, &'a AssetSpec)>,
    ) {
        let now = SystemTime::now();
        let mut state = self.lock();
        state.ledgers.entry(node_id.to_string()).or_default();
        for (name, spec) in assets {
            let Some(proof) = spec.proof.as_ref() else {
                continue;
            };
            if let Some(space) = proof.space.as_ref()
                && space.node_id == node_id
                && let Some(ledger) = state.ledgers.get_mut(node_id)
            {
                ledger.record(name, &space.location, space.committed_bytes);
            }
            if let Some(time) = proof.time.as_ref()
                && let Some(ts) = time.timestamp.as_ref()
            {
                let expires = hypermesh_api::time::to_system_time(ts) + self.config.skew;
                let key = (node_id.to_string(), time.nonce.clone());
                if expires > now && state.seen.insert(key.clone()) {
                    state.expiry.push_back((expires, key));
                }
            }
        }
    }

    /// Releases the claim of a deleted asset.
    pub fn forget(&self, node_id: &str, asset_name: &str) {
        if let Some(ledger) = self.lock().ledgers.get_mut(node_id) {
            ledger.release(asset_name);
        }
    }

    /// Forgets everything the ledger knows of `node_id`'s claims, so the next
    /// verification seeds them again from what is stored (used when an Asset is being
    /// deleted: whether the deletion commits or not, the store tells).
    pub fn forget_node(&self, node_id: &str) {
        self.lock().ledgers.remove(node_id);
    }

    /// How many nonces the replay cache holds.
    pub fn cached_nonces(&self) -> usize {
        self.lock().seen.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hypermesh_api::v1::AssetType;

    fn spec(node: &str, capacity: &str) -> AssetSpec {
        AssetSpec {
            node_name: node.into(),
            r#type: AssetType::Storage as i32,
            capacity: [("storage".to_string(), capacity.to_string())].into(),
            attributes: [("path".to_string(), "/dev/sda".to_string())].into(),
            ..Default::default()
        }
    }

    fn params() -> ProofParams {
        ProofParams {
            work_difficulty: 12,
        }
    }

    fn proved(id: &NodeIdentity, name: &str, location: &str, committed: u64) -> AssetSpec {
        let mut s = spec("n1", "1Ti");
        s.proof = Some(prove_asset(id, name, &s, location, committed, &params()));
        s
    }

    #[test]
    fn a_valid_proof_verifies_once() {
        let id = NodeIdentity::generate();
        let v = ProofVerifier::new(VerifierConfig::default());
        let s = proved(&id, "disk", "/dev/sda", 1 << 40);
        let ok = v
            .verify("disk", &s, id.public_key(), SystemTime::now())
            .unwrap();
        assert_eq!(ok.node_id, id.node_id());
        assert_eq!(ok.committed_bytes, 1 << 40);
        let replay = v.verify("disk", &s, id.public_key(), SystemTime::now());
        assert_eq!(replay.unwrap_err().reason(), "TimeReplayed");
    }

    #[test]
    fn default_params_meet_the_default_minimum() {
        let id = NodeIdentity::generate();
        let v = ProofVerifier::new(VerifierConfig::default());
        let mut s = spec("n1", "1Ti");
        s.proof = Some(prove_asset(
            &id,
            "a",
            &s,
            "/dev/sda",
            1,
            &ProofParams::default(),
        ));
        v.verify("a", &s, id.public_key(), SystemTime::now())
            .unwrap();
    }

    #[test]
    fn a_signature_by_another_key_is_forged() {
        let id = NodeIdentity::generate();
        let thief = NodeIdentity::generate();
        let v = ProofVerifier::new(VerifierConfig::default());
        let mut s = proved(&thief, "disk", "/dev/sda", 1);
        // Claim to be `id`: node ids patched, signature still the thief's.
        let p = s.proof.as_mut().unwrap();
        p.stake.as_mut().unwrap().node_id = id.node_id().into();
        p.space.as_mut().unwrap().node_id = id.node_id().into();
        // Recompute the digest and the work so only the signature is wrong.
        let (space, time) = (p.space.clone().unwrap(), p.time.clone().unwrap());
        let digest = record_digest("disk", &s, &space, &time, 12);
        let nonce = solve_work(&digest, 12);
        let p = s.proof.as_mut().unwrap();
        p.work = Some(WorkProof {
            difficulty: 12,
            nonce,
            digest: digest.to_vec(),
        });
        let err = v
            .verify("disk", &s, id.public_key(), SystemTime::now())
            .unwrap_err();
        assert_eq!(err.reason(), "StakeForged", "{err}");
        let wrong = proved(&thief, "disk", "/dev/sda", 1);
        let err = v
            .verify("disk", &wrong, id.public_key(), SystemTime::now())
            .unwrap_err();
        assert_eq!(err.reason(), "StakeWrongNode", "{err}");
    }

    #[test]
    fn tampering_with_the_record_breaks_the_binding() {
        let id = NodeIdentity::generate();
        let v = ProofVerifier::new(VerifierConfig::default());
        let mut s = proved(&id, "disk", "/dev/sda", 1 << 40);
        s.capacity.insert("storage".into(), "100Ti".into());
        let err = v
            .verify("disk", &s, id.public_key(), SystemTime::now())
            .unwrap_err();
        assert_eq!(err.reason(), "SpaceMismatch", "{err}");
        let mut s = proved(&id, "disk", "/dev/sda", 1 << 40);
        s.proof
            .as_mut()
            .unwrap()
            .space
            .as_mut()
            .unwrap()
            .committed_bytes = 1 << 50;
        let err = v
            .verify("disk", &s, id.public_key(), SystemTime::now())
            .unwrap_err();
        assert_eq!(err.reason(), "SpaceMismatch", "{err}");
        let s = proved(&id, "disk", "/dev/sda", 1 << 40);
        let err = v
            .verify("other-name", &s, id.public_key(), SystemTime::now())
            .unwrap_err();
        assert_eq!(err.reason(), "SpaceMismatch", "{err}");
    }

    #[test]
    fn old_and_future_timestamps_are_stale() {
        let id = NodeIdentity::generate();
        let v = ProofVerifier::new(VerifierConfig::default());
        let now = SystemTime::now();
        for at in [
            now - Duration::from_secs(600),
            now + Duration::from_secs(600),
        ] {
            let mut s = spec("n1", "1Ti");
            s.proof = Some(prove_asset_at(&id, "d", &s, "/dev/sda", 1, &params(), at));
            let err = v.verify("d", &s, id.public_key(), now).unwrap_err();
            assert_eq!(err.reason(), "TimeStale", "{err}");
        }
        let mut s = spec("n1", "1Ti");
        let at = now - Duration::from_secs(60);
        s.proof = Some(prove_asset_at(&id, "d", &s, "/dev/sda", 1, &params(), at));
        v.verify("d", &s, id.public_key(), now).unwrap();
    }

    #[test]
    fn missing_or_weak_work_is_rejected() {
        let id = NodeIdentity::generate();
        let v = ProofVerifier::new(VerifierConfig::default());
        let mut s = proved(&id, "d", "/dev/sda", 1);
        s.proof.as_mut().unwrap().work = None;
        assert_eq!(
            v.verify("d", &s, id.public_key(), SystemTime::now())
                .unwrap_err(),
            ProofError::WorkMissing
        );
        let mut s = spec("n1", "1Ti");
        s.proof = Some(prove_asset(
            &id,
            "d",
            &s,
            "/dev/sda",
            1,
            &ProofParams { work_difficulty: 4 },
        ));
        let err = v
            .verify("d", &s, id.public_key(), SystemTime::now())
            .unwrap_err();
        assert_eq!(err.reason(), "WorkInsufficient", "{err}");
        let mut s = proved(&id, "d", "/dev/sda", 1);
        let w = s.proof.as_mut().unwrap().work.as_mut().unwrap();
        w.difficulty = 40;
        let err = v
            .verify("d", &s, id.public_key(), SystemTime::now())
            .unwrap_err();
        assert_eq!(err.reason(), "WorkInsufficient", "{err}");
        let mut s = spec("n1", "1Ti");
        s.proof = None;
        assert_eq!(
            v.verify("d", &s, id.public_key(), SystemTime::now())
                .unwrap_err(),
            ProofError::ProofMissing
        );
    }

    #[test]
    fn a_location_cannot_be_claimed_twice() {
        let id = NodeIdentity::generate();
        let v = ProofVerifier::new(VerifierConfig::default());
        let now = SystemTime::now();
        v.verify(
            "a",
            &proved(&id, "a", "/dev/sda", 1000),
            id.public_key(),
            now,
        )
        .unwrap();
        let err = v
            .verify(
                "b",
                &proved(&id, "b", "/dev/sda", 1000),
                id.public_key(),
                now,
            )
            .unwrap_err();
        assert_eq!(err.reason(), "SpaceOverclaimed", "{err}");
        // Another device is fine, and the prover may re-prove its own location.
        v.verify(
            "b",
            &proved(&id, "b", "/dev/sdb", 1000),
            id.public_key(),
            now,
        )
        .unwrap();
        v.verify(
            "a",
            &proved(&id, "a", "/dev/sda", 2000),
            id.public_key(),
            now,
        )
        .unwrap();
        // Another node's ledger is separate.
        let other = NodeIdentity::generate();
        v.verify(
            "c",
            &proved(&other, "c", "/dev/sda", 1000),
            other.public_key(),
            now,
        )
        .unwrap();
        // After deletion the location is free again.
        v.forget(id.node_id(), "a");
        v.verify("b", &proved(&id, "b", "/dev/sda", 10), id.public_key(), now)
            .unwrap();
        // Seeding restores claims after a restart.
        let fresh = ProofVerifier::new(VerifierConfig::default());
        let kept = proved(&id, "b", "/dev/sda", 10);
        fresh.seed(id.node_id(), [("b", &kept)]);
        assert!(fresh.knows_node(id.node_id()));
        let err = fresh.verify("b", &kept, id.public_key(), now).unwrap_err();
        assert_eq!(err.reason(), "TimeReplayed", "{err}");
        let err = fresh
            .verify("z", &proved(&id, "z", "/dev/sda", 11), id.public_key(), now)
            .unwrap_err();
        assert_eq!(err.reason(), "SpaceOverclaimed", "{err}");
    }

    #[test]
    fn the_replay_cache_forgets_after_the_window() {
        let id = NodeIdentity::generate();
        let v = ProofVerifier::new(VerifierConfig::default());
        let now = SystemTime::now();
        v.verify("a", &proved(&id, "a", "/dev/sda", 1), id.public_key(), now)
            .unwrap();
        assert_eq!(v.cached_nonces(), 1);
        let later = now + Duration::from_secs(601);
        let mut s = spec("n1", "1Ti");
        s.proof = Some(prove_asset_at(
            &id,
            "b",
            &s,
            "/dev/sdb",
            1,
            &params(),
            later,
        ));
        v.verify("b", &s, id.public_key(), later).unwrap();
        assert_eq!(v.cached_nonces(), 1);
    }
}
