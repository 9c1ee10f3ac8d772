//! Registering simulated hardware the way an agent does: a Node with an identity, and
//! each Asset answering a fresh `AssetService.Challenge` with a proof (no proof, no
//! Asset). Shared by the scheduler and trust benchmarks.

use anyhow::{Context, Result};
use hypermesh_api::Api;
use hypermesh_api::quantity::Quantity;
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
    let committed = match commitment {
        Some(c) => c.committed_bytes(),
        None => committed_amount(spec)?,
    };
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

/// What a simulated device commits, in the proof's units (docs of
/// [`hypermesh_trust::proof`]): bytes for MEMORY, STORAGE and GPU memory, millicores
/// for CPU, Instances for CONTAINER, and 1 for anything measured otherwise. The
/// apiserver refuses a claim above the committed amount, so it is exactly the claim.
pub fn committed_amount(spec: &AssetSpec) -> Result<u64> {
    if let Some((_, bytes)) =
        hypermesh_trust::proof::space::claimed_bytes(spec).map_err(|e| anyhow::anyhow!("{e}"))?
    {
        return Ok(bytes.max(1));
    }
    let (key, millis) = match AssetType::try_from(spec.r#type) {
        Ok(AssetType::Cpu) => ("cpu", true),
        Ok(AssetType::Container) => ("instances", false),
        _ => return Ok(1),
    };
    let Some(text) = spec.capacity.get(key) else {
        return Ok(1);
    };
    let q: Quantity = text
        .parse()
        .with_context(|| format!("spec.capacity.{key}: {text:?}"))?;
    let amount = if millis {
        u64::try_from(q.millis()).unwrap_or(u64::MAX)
    } else {
        u64::try_from(q.units_ceil()).unwrap_or(u64::MAX)
    };
    Ok(amount.max(1))
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
