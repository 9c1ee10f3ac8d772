//! Registering simulated hardware the way an agent does: a Node with an identity, and
//! each Asset answering a fresh `AssetService.Challenge` with a proof (no proof, no
//! Asset). Shared by the scheduler and trust benchmarks.

use anyhow::{Context, Result};
use hypermesh_api::Api;
use hypermesh_api::v1::{
    Asset, AssetSpec, AssetType, ObjectMeta, PrivacyLevel, ProofChallengeRequest,
};
use hypermesh_trust::NodeIdentity;
use hypermesh_trust::proof::{ProofInput, SpaceCommitment, prove_asset};

/// Asks a challenge for `asset`, proves it with `identity` (and `commitment` for
/// STORAGE), and creates it.
pub async fn create(
    api: &Api<Asset>,
    identity: &NodeIdentity,
    commitment: Option<&SpaceCommitment>,
    mut asset: Asset,
) -> Result<Asset> {
    let name = asset
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let spec = asset.spec.get_or_insert_with(Default::default);
    let challenge = api
        .challenge(ProofChallengeRequest {
            asset_name: name.clone(),
            node_name: spec.node_name.clone(),
        })
        .await
        .with_context(|| format!("challenge for asset {name}"))?;
    let location = format!("{}/{name}", spec.node_name);
    let committed = commitment.map_or(1, SpaceCommitment::committed_bytes);
    spec.proof = Some(prove_asset(
        identity,
        ProofInput {
            asset_name: &name,
            spec,
            location: &location,
            committed_bytes: committed,
            challenge: &challenge,
            stake_record: "",
            commitment,
        },
    )?);
    api.create(&asset)
        .await
        .with_context(|| format!("creating asset {name}"))
}

/// The CPU, memory and instance slots a simulated node offers, as Assets to prove.
pub fn offers(node: &str, cpu: &str, memory: &str, instances: &str) -> Vec<Asset> {
    [
        (AssetType::Cpu, "cpu", cpu),
        (AssetType::Memory, "memory", memory),
        (AssetType::Container, "instances", instances),
    ]
    .into_iter()
    .map(|(kind, key, q)| Asset {
        metadata: Some(ObjectMeta {
            name: format!("{node}-{key}"),
            ..Default::default()
        }),
        spec: Some(AssetSpec {
            node_name: node.to_string(),
            r#type: kind as i32,
            capacity: [(key.to_string(), q.to_string())].into(),
            privacy: PrivacyLevel::Untrusted as i32,
            ..Default::default()
        }),
        status: None,
    })
    .collect()
}
