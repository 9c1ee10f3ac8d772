//! Registration: creates or updates this host's Node (identity, labels, capacity,
//! allocatable, addresses, node info) and keeps exactly one Asset per detected device,
//! each with a fresh consensus proof. Assets of devices that disappeared are deleted.
//!
//! Each proof answers a challenge the apiserver issues (`AssetService.Challenge`) and
//! cites the Node's stake record; without one, Assets are offered at UNTRUSTED only.
//! A storage device is offered up to `storage_commit_bytes`, backed by a file of random
//! bytes of exactly that size in `<state_dir>/space` whose sampled leaves answer the
//! space challenge ([`SpaceCommitment`]).
//!
//! Assets carry the label [`NODE_LABEL`] and an owner reference to the Node, so a
//! restarted agent finds its own Assets (and updates them in place) and deleting the
//! Node garbage-collects them.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use hypermesh_api::quantity::Quantity;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hypermesh_api::v1::{
    Asset, AssetSpec, AssetStatus, AssetType, DeleteRequest, ListRequest, Node, NodeAddress,
    NodeInfo, NodeSpec, NodeStatus, ObjectMeta, OwnerReference, PrivacyLevel,
    ProofChallengeRequest,
};
use hypermesh_api::{Api, Resource};
use hypermesh_trust::NodeIdentity;
use hypermesh_trust::proof::{ProofInput, SpaceCommitment};
use tonic::{Code, Status};

use crate::config::Config;
use crate::detect::{DeviceAsset, Inventory, bytes_quantity};

/// Label naming the Node an Asset belongs to.
pub const NODE_LABEL: &str = "hypermesh.io/node";

/// The ULA prefix of global addresses, `fd48:4d00::/32`.
pub const GLOBAL_PREFIX: [u8; 4] = hypermesh_api::address::GLOBAL_PREFIX;

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The apiserver refused or could not be reached.
    #[error("{action}: {status}")]
    Api {
        action: String,
        #[source]
        status: Status,
    },
    /// The storage commitment file could not be written or read.
    #[error("space commitment for {device}: {source}")]
    Commitment {
        device: String,
        #[source]
        source: hypermesh_trust::proof::CommitmentError,
    },
}

fn api_err(action: impl Into<String>) -> impl FnOnce(Status) -> RegisterError {
    let action = action.into();
    move |status| RegisterError::Api { action, status }
}

/// The global IPv6 address of `name` owned by `node_id`: `fd48:4d00::/32` followed by
/// the first 96 bits of BLAKE3(node_id ‖ 0 ‖ name).
pub fn global_address(node_id: &str, name: &str) -> Ipv6Addr {
    hypermesh_api::address::global_address(node_id, name)
}

/// `{node}-{type}-{device}`, lowercased, every character outside `[a-z0-9.-]` turned
/// into `-`; a name that is still not a valid DNS subdomain falls back to a hash of
/// the device.
pub fn asset_name(node: &str, kind: AssetType, device: &str) -> String {
    let kind = kind.as_str_name().to_lowercase();
    let clean = |s: &str| {
        let mapped: String = s
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        mapped.trim_matches(|c| c == '-' || c == '.').to_string()
    };
    let name = format!("{}-{kind}-{}", clean(node), clean(device));
    if hypermesh_api::validation::dns_subdomain_problem(&name).is_none()
        && !name.split('.').any(|l| l.len() > 63)
    {
        return name;
    }
    let hash = blake3::hash(device.as_bytes()).to_hex();
    format!("{}-{kind}-{}", clean(node), &hash[..12])
}

/// Capacity and allocatable (= capacity − reserved) of the Node.
pub fn node_resources(
    inv: &Inventory,
    reserved: &BTreeMap<String, Quantity>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut capacity: BTreeMap<String, Quantity> = BTreeMap::new();
    capacity.insert("cpu".into(), Quantity::from_units(inv.cpu.threads().into()));
    capacity.insert(
        "memory".into(),
        Quantity::from_units(inv.memory.total_bytes),
    );
    if let Some(root) = inv.storage.root() {
        capacity.insert("storage".into(), Quantity::from_units(root.total_bytes));
    }
    capacity.insert(
        "gpu".into(),
        Quantity::from_units(inv.gpu.gpus().len() as u64),
    );
    capacity.insert(
        "instances".into(),
        Quantity::from_units(inv.containers.max_instances.into()),
    );
    let allocatable = capacity
        .iter()
        .map(|(k, v)| {
            let r = reserved.get(k).copied().unwrap_or(Quantity::ZERO);
            (k.clone(), v.saturating_sub(r))
        })
        .collect::<BTreeMap<_, _>>();
    let text = |m: BTreeMap<String, Quantity>| {
        m.into_iter()
            .map(|(k, q)| (k.clone(), quantity_text(&k, q)))
            .collect()
    };
    (text(capacity), text(allocatable))
}

fn quantity_text(resource: &str, q: Quantity) -> String {
    if !q.is_whole() {
        return format!("{}m", q.millis());
    }
    let units = u64::try_from(q.millis() / 1000).unwrap_or(u64::MAX);
    match resource {
        "memory" | "storage" => bytes_quantity(units),
        _ => units.to_string(),
    }
}

/// The Node's addresses: every global address of an up, non-loopback interface
/// (`InternalIP`), the hostname, and the derived `GlobalIPv6`.
pub fn node_addresses(inv: &Inventory, node_id: &str, node_name: &str) -> Vec<NodeAddress> {
    let mut out = Vec::new();
    let mut v6 = Vec::new();
    for i in inv
        .network
        .iter()
        .filter(|i| !i.loopback && i.state != "down")
    {
        for a in &i.addresses {
            let ip = a.split('/').next().unwrap_or_default();
            match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(v4)) if !v4.is_loopback() && !v4.is_link_local() => {
                    out.push(ip.to_string());
                }
                Ok(std::net::IpAddr::V6(a6))
                    if !a6.is_loopback() && !a6.is_unicast_link_local() =>
                {
                    v6.push(ip.to_string());
                }
                _ => {}
            }
        }
    }
    out.extend(v6);
    let mut addresses: Vec<NodeAddress> = out
        .into_iter()
        .map(|address| NodeAddress {
            r#type: "InternalIP".into(),
            address,
        })
        .collect();
    if !inv.host.hostname.is_empty() {
        addresses.push(NodeAddress {
            r#type: "Hostname".into(),
            address: inv.host.hostname.clone(),
        });
    }
    addresses.push(NodeAddress {
        r#type: "GlobalIPv6".into(),
        address: global_address(node_id, node_name).to_string(),
    });
    addresses
}

/// Talks to the apiserver on the node's behalf.
pub struct Registrar {
    pub nodes: Api<Node>,
    pub assets: Api<Asset>,
    pub config: Config,
    pub identity: std::sync::Arc<NodeIdentity>,
    /// Storage commitments by location, opened once.
    pub commitments: Mutex<HashMap<String, Arc<SpaceCommitment>>>,
}

/// The Node's stake record id (empty: none).
fn stake_record(node: &Node) -> String {
    node.spec
        .as_ref()
        .and_then(|s| s.stake.as_ref())
        .filter(|s| s.amount > 0)
        .map(|s| s.record_id.clone())
        .unwrap_or_default()
}

impl Registrar {
    /// Creates or updates the Node's spec and labels, then its status (keeping the
    /// conditions already there). Returns the stored Node.
    pub async fn register_node(&self, inv: &Inventory) -> Result<Node, RegisterError> {
        let name = &self.config.node_name;
        let identity = self.identity.to_node_identity();
        let node = match self.nodes.get("", name).await {
            Ok(mut node) => {
                let meta = node.meta_mut();
                let labels_ok = self
                    .config
                    .labels
                    .iter()
                    .all(|(k, v)| meta.labels.get(k) == Some(v));
                let spec = node.spec.get_or_insert_with(Default::default);
                if labels_ok && spec.identity.as_ref() == Some(&identity) {
                    node
                } else {
                    spec.identity = Some(identity);
                    let meta = node.meta_mut();
                    meta.labels.extend(self.config.labels.clone());
                    self.nodes
                        .update(&node)
                        .await
                        .map_err(api_err(format!("updating Node {name}")))?
                }
            }
            Err(s) if s.code() == Code::NotFound => {
                let node = Node {
                    metadata: Some(ObjectMeta {
                        name: name.clone(),
                        labels: self.config.labels.clone().into_iter().collect(),
                        ..Default::default()
                    }),
                    spec: Some(NodeSpec {
                        identity: Some(identity),
                        ..Default::default()
                    }),
                    status: None,
                };
                self.nodes
                    .create(&node)
                    .await
                    .map_err(api_err(format!("creating Node {name}")))?
            }
            Err(s) => return Err(api_err(format!("reading Node {name}"))(s)),
        };
        self.update_node_status(node, inv).await
    }

    /// Writes capacity, allocatable, addresses and node info into the Node's status.
    async fn update_node_status(
        &self,
        mut node: Node,
        inv: &Inventory,
    ) -> Result<Node, RegisterError> {
        let (capacity, allocatable) = node_resources(inv, &self.config.reserved);
        let status = node.status.get_or_insert_with(NodeStatus::default);
        status.capacity = capacity.into_iter().collect();
        status.allocatable = allocatable.into_iter().collect();
        status.addresses = node_addresses(inv, self.identity.node_id(), &self.config.node_name);
        status.node_info = Some(NodeInfo {
            hostname: inv.host.hostname.clone(),
            os_image: inv.host.os_image.clone(),
            kernel_version: inv.host.kernel_version.clone(),
            architecture: inv.host.architecture.clone(),
            agent_version: format!("hm-agent/{}", env!("CARGO_PKG_VERSION")),
            container_runtime_version: String::new(),
            boot_id: inv.host.boot_id.clone(),
        });
        self.nodes
            .update_status(&node)
            .await
            .map_err(api_err(format!(
                "updating Node {} status",
                self.config.node_name
            )))
    }

    /// The Assets this node registered earlier.
    pub async fn own_assets(&self) -> Result<Vec<Asset>, RegisterError> {
        let (items, _) = self
            .assets
            .list_all(ListRequest {
                label_selector: format!("{NODE_LABEL}={}", self.config.node_name),
                ..Default::default()
            })
            .await
            .map_err(api_err("listing this node's Assets"))?;
        Ok(items)
    }

    /// Makes the stored Assets match `inv`: creates new ones, updates changed ones
    /// (with a fresh proof), leaves unchanged ones alone, deletes vanished ones.
    /// Returns the names of the Assets that now exist.
    pub async fn sync_assets(
        &self,
        node: &Node,
        inv: &Inventory,
    ) -> Result<Vec<String>, RegisterError> {
        let existing: BTreeMap<String, Asset> = self
            .own_assets()
            .await?
            .into_iter()
            .map(|a| (a.meta().name.clone(), a))
            .collect();
        let mut names = Vec::new();
        let stake = stake_record(node);
        for mut device in inv.device_assets() {
            let name = asset_name(&self.config.node_name, device.kind, &device.device);
            let commitment = if device.kind == AssetType::Storage {
                let Some(c) = self.commitment(&device).await? else {
                    continue;
                };
                device.committed_bytes = c.committed_bytes();
                device
                    .capacity
                    .insert("storage".into(), bytes_quantity(c.committed_bytes()));
                Some(c)
            } else {
                None
            };
            let spec = self.spec_for(&device, !stake.is_empty());
            let address = global_address(self.identity.node_id(), &name).to_string();
            let stored = match existing.get(&name) {
                Some(old) if unchanged(old, &spec, &stake) => old.clone(),
                Some(old) => {
                    let mut asset = old.clone();
                    asset.spec = Some(
                        self.prove(&name, spec, &device, &stake, commitment.as_deref())
                            .await?,
                    );
                    let meta = asset.meta_mut();
                    meta.labels
                        .insert(NODE_LABEL.into(), self.config.node_name.clone());
                    self.assets
                        .update(&asset)
                        .await
                        .map_err(api_err(format!("updating Asset {name}")))?
                }
                None => {
                    let asset = Asset {
                        metadata: Some(ObjectMeta {
                            name: name.clone(),
                            labels: [(NODE_LABEL.to_string(), self.config.node_name.clone())]
                                .into_iter()
                                .collect(),
                            owner_references: vec![owner_ref(node)],
                            ..Default::default()
                        }),
                        spec: Some(
                            self.prove(&name, spec, &device, &stake, commitment.as_deref())
                                .await?,
                        ),
                        status: None,
                    };
                    self.assets
                        .create(&asset)
                        .await
                        .map_err(api_err(format!("creating Asset {name}")))?
                }
            };
            if stored.status.as_ref().map(|s| s.address.as_str()) != Some(address.as_str()) {
                let mut asset = stored;
                asset
                    .status
                    .get_or_insert_with(AssetStatus::default)
                    .address = address;
                self.assets
                    .update_status(&asset)
                    .await
                    .map_err(api_err(format!("setting Asset {name} address")))?;
            }
            names.push(name);
        }
        for (name, _) in existing.iter().filter(|(n, _)| !names.contains(n)) {
            match self
                .assets
                .delete(DeleteRequest {
                    name: name.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(_) => tracing::info!(asset = %name, "device gone: Asset deleted"),
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(api_err(format!("deleting Asset {name}"))(s)),
            }
        }
        Ok(names)
    }

    fn spec_for(&self, device: &DeviceAsset, staked: bool) -> AssetSpec {
        let privacy = if staked {
            self.config.privacy
        } else {
            PrivacyLevel::Untrusted
        };
        AssetSpec {
            node_name: self.config.node_name.clone(),
            r#type: device.kind as i32,
            capacity: device.capacity.clone().into_iter().collect(),
            attributes: device.attributes.clone().into_iter().collect(),
            privacy: privacy as i32,
            sharing: None,
            proof: None,
        }
    }

    /// The storage commitment for `device`: up to `storage_commit_bytes` of it, in
    /// whole KiB (`None` for a device smaller than 1 KiB).
    async fn commitment(
        &self,
        device: &DeviceAsset,
    ) -> Result<Option<Arc<SpaceCommitment>>, RegisterError> {
        let bytes = device.committed_bytes.min(self.config.storage_commit_bytes) / 1024 * 1024;
        if bytes == 0 {
            return Ok(None);
        }
        let existing = self
            .commitments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&device.location)
            .cloned();
        if let Some(c) = existing.filter(|c| c.committed_bytes() == bytes) {
            return Ok(Some(c));
        }
        let hash = blake3::hash(device.location.as_bytes()).to_hex();
        let path = self
            .config
            .state_dir
            .join("space")
            .join(format!("{}.commit", &hash[..24]));
        let c = tokio::task::spawn_blocking(move || SpaceCommitment::open_or_create(&path, bytes))
            .await
            .map_err(|e| RegisterError::Commitment {
                device: device.device.clone(),
                source: hypermesh_trust::proof::CommitmentError::Io {
                    path: self.config.state_dir.join("space"),
                    source: std::io::Error::other(e.to_string()),
                },
            })?
            .map_err(|source| RegisterError::Commitment {
                device: device.device.clone(),
                source,
            })?;
        let c = Arc::new(c);
        self.commitments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(device.location.clone(), c.clone());
        Ok(Some(c))
    }

    /// Asks for a challenge and answers it with a proof for `spec`.
    async fn prove(
        &self,
        name: &str,
        mut spec: AssetSpec,
        device: &DeviceAsset,
        stake: &str,
        commitment: Option<&SpaceCommitment>,
    ) -> Result<AssetSpec, RegisterError> {
        let challenge = self
            .assets
            .challenge(ProofChallengeRequest {
                asset_name: name.to_string(),
                node_name: self.config.node_name.clone(),
            })
            .await
            .map_err(api_err(format!(
                "asking a proof challenge for Asset {name}"
            )))?;
        let proof = hypermesh_trust::proof::prove_asset(
            &self.identity,
            ProofInput {
                asset_name: name,
                spec: &spec,
                location: &device.location,
                committed_bytes: device.committed_bytes,
                challenge: &challenge,
                stake_record: stake,
                commitment,
            },
        )
        .map_err(|source| RegisterError::Commitment {
            device: device.device.clone(),
            source,
        })?;
        spec.proof = Some(proof);
        Ok(spec)
    }
}

/// Whether the stored Asset already says what `spec` says (the proof aside) and cites
/// the node's current stake record.
fn unchanged(old: &Asset, spec: &AssetSpec, stake: &str) -> bool {
    let Some(old) = &old.spec else { return false };
    let cited = old
        .proof
        .as_ref()
        .and_then(|p| p.stake.as_ref())
        .map(|s| s.stake_record.as_str());
    cited == Some(stake)
        && AssetSpec {
            proof: None,
            ..old.clone()
        } == *spec
}

fn owner_ref(node: &Node) -> OwnerReference {
    OwnerReference {
        kind: Node::KIND.to_string(),
        name: node.meta().name.clone(),
        uid: node.meta().uid.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_safe() {
        assert_eq!(
            asset_name("host-1", AssetType::Storage, "nvme0n1"),
            "host-1-storage-nvme0n1"
        );
        assert_eq!(
            asset_name("Host_1", AssetType::Network, "eth0@if5"),
            "host-1-network-eth0-if5"
        );
        let long = "x".repeat(100);
        let n = asset_name("h", AssetType::Network, &long);
        assert!(
            hypermesh_api::validation::dns_subdomain_problem(&n).is_none(),
            "{n}"
        );
    }

    #[test]
    fn addresses_are_in_the_ula_prefix_and_stable() {
        let a = global_address("abc", "n-cpu-socket0");
        assert_eq!(a, global_address("abc", "n-cpu-socket0"));
        assert_ne!(a, global_address("abd", "n-cpu-socket0"));
        assert_eq!(&a.octets()[..4], &GLOBAL_PREFIX);
    }
}
