//! Registering proven Assets the way an agent does, for tests that build nodes by
//! hand: ask `AssetService.Challenge`, answer it with [`prove_asset`] (a storage
//! commitment file in a temporary directory for STORAGE assets), create the Asset.
//! The location is the `path` attribute, else `test/<asset name>`.

use hypermesh_api::v1::{Asset, AssetType, Node, NodeStake, ProofChallengeRequest};
use hypermesh_api::{Api, Resource};
use hypermesh_trust::NodeIdentity;
use hypermesh_trust::proof::{ProofInput, SpaceCommitment, prove_asset, space::claimed_bytes};
use tonic::Status;

/// A stake record for `node` (what `hmctl node stake` writes).
pub fn stake(node: &str, amount: u64) -> NodeStake {
    NodeStake {
        amount,
        record_id: format!("stake-{node}-{}", rand::random::<u32>()),
        issued: Some(hypermesh_api::time::now()),
    }
}

/// The stake record id of `node` (empty when it has none).
pub fn stake_record(node: &Node) -> String {
    node.spec
        .as_ref()
        .and_then(|s| s.stake.as_ref())
        .map(|s| s.record_id.clone())
        .unwrap_or_default()
}

/// Gives `asset.spec.proof` a proof by `identity` answering a fresh challenge, citing
/// `stake_record`, then creates it (`update`: replaces the stored one instead).
pub async fn prove(
    assets: &Api<Asset>,
    identity: &NodeIdentity,
    stake_record: &str,
    asset: &mut Asset,
) -> Result<(), Status> {
    let name = asset.meta().name.clone();
    let spec = asset.spec.get_or_insert_with(Default::default);
    let challenge = assets
        .challenge(ProofChallengeRequest {
            asset_name: name.clone(),
            node_name: spec.node_name.clone(),
        })
        .await?;
    let claimed = claimed_bytes(spec)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .map_or(1, |(_, b)| b);
    let dir = tempfile::tempdir().map_err(|e| Status::internal(e.to_string()))?;
    let commitment = if spec.r#type == AssetType::Storage as i32 {
        let bytes = claimed.div_ceil(1024).max(1) * 1024;
        Some(
            SpaceCommitment::open_or_create(&dir.path().join("space"), bytes)
                .map_err(|e| Status::internal(e.to_string()))?,
        )
    } else {
        None
    };
    spec.proof = None;
    let proof = prove_asset(
        identity,
        ProofInput {
            asset_name: &name,
            spec,
            location: &spec
                .attributes
                .get("path")
                .cloned()
                .unwrap_or_else(|| format!("test/{name}")),
            committed_bytes: claimed,
            challenge: &challenge,
            stake_record,
            commitment: commitment.as_ref(),
        },
    )
    .map_err(|e| Status::internal(e.to_string()))?;
    spec.proof = Some(proof);
    Ok(())
}

/// [`prove`] then create.
pub async fn create_proven(
    assets: &Api<Asset>,
    identity: &NodeIdentity,
    stake_record: &str,
    mut asset: Asset,
) -> Result<Asset, Status> {
    prove(assets, identity, stake_record, &mut asset).await?;
    assets.create(&asset).await
}

/// Creates a simulated `node` the way an agent would register it: a fresh identity, a
/// stake record (the caller must be an admin), and what its status offers (cpu,
/// memory, storage, instances; 110 instances when unsaid) as proven Assets named
/// `<node>-offer-<resource>` — the scheduler takes capacity from admitted Assets only.
/// Returns the identity and the stake record id.
pub async fn create_offering_node(
    nodes: &Api<Node>,
    assets: &Api<Asset>,
    mut node: Node,
) -> Result<(std::sync::Arc<NodeIdentity>, String), Status> {
    use hypermesh_api::v1::{AssetSpec, ObjectMeta};
    let name = node.meta().name.clone();
    let identity = std::sync::Arc::new(NodeIdentity::generate());
    let stake = stake(&name, 1);
    let record = stake.record_id.clone();
    let spec = node.spec.get_or_insert_with(Default::default);
    spec.identity = Some(identity.to_node_identity());
    spec.stake = Some(stake);
    nodes.create(&node).await?;
    let status = node.status.clone().unwrap_or_default();
    let offered = if status.allocatable.is_empty() {
        status.capacity
    } else {
        status.allocatable
    };
    let instances = offered
        .get("instances")
        .cloned()
        .unwrap_or_else(|| "110".into());
    let kinds = [
        (AssetType::Cpu, "cpu", offered.get("cpu").cloned()),
        (AssetType::Memory, "memory", offered.get("memory").cloned()),
        (
            AssetType::Storage,
            "storage",
            offered.get("storage").cloned(),
        ),
        (AssetType::Container, "instances", Some(instances)),
    ];
    for (kind, key, quantity) in kinds {
        let Some(quantity) = quantity else { continue };
        let asset = Asset {
            metadata: Some(ObjectMeta {
                name: format!("{name}-offer-{key}"),
                ..Default::default()
            }),
            spec: Some(AssetSpec {
                node_name: name.clone(),
                r#type: kind as i32,
                capacity: [(key.to_string(), quantity)].into(),
                ..Default::default()
            }),
            status: None,
        };
        // A node registered again (same name, new identity) replaces what the old
        // registration left, as a re-joined agent's registration does.
        match assets
            .delete(hypermesh_api::v1::DeleteRequest {
                name: asset.meta().name.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::NotFound => {}
            Err(e) => return Err(e),
        }
        create_proven(assets, &identity, &record, asset).await?;
    }
    Ok((identity, record))
}

/// Creates Node `name` carrying `identity`'s public keys (no stake, no status): what
/// a node's first registration writes.
pub async fn create_node_with_identity(
    nodes: &Api<Node>,
    name: &str,
    identity: &NodeIdentity,
) -> Result<Node, Status> {
    use hypermesh_api::v1::{NodeSpec, ObjectMeta};
    nodes
        .create(&Node {
            metadata: Some(ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                identity: Some(identity.to_node_identity()),
                ..Default::default()
            }),
            status: None,
        })
        .await
}

/// A 64 KiB STORAGE Asset `name` of `node` at device `location`, proven by
/// `identity` (not yet created): the same device under two names is a double claim.
pub async fn proved_disk(
    assets: &Api<Asset>,
    identity: &NodeIdentity,
    node: &str,
    name: &str,
    location: &str,
) -> Result<Asset, Status> {
    use hypermesh_api::v1::{AssetSpec, ObjectMeta, PrivacyLevel};
    let mut asset = Asset {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(AssetSpec {
            node_name: node.into(),
            r#type: AssetType::Storage as i32,
            capacity: [("storage".to_string(), "64Ki".to_string())].into(),
            attributes: [("path".to_string(), location.to_string())].into(),
            privacy: PrivacyLevel::Untrusted as i32,
            ..Default::default()
        }),
        status: None,
    };
    prove(assets, identity, "", &mut asset).await?;
    Ok(asset)
}
