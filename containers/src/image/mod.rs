//! Images: what an OCI/Docker manifest and config say, recording an image whose blobs
//! are in the content store (config and manifest with their gc labels, layers unpacked
//! into snapshots through the diff and snapshot services, the image record), looking
//! images up, and importing OCI image archives (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) — what `ctr images import` does client-side, since containerd 1.6
//! has no Transfer service. Registry pulls ([`crate::pull`]) fetch the same parts
//! over HTTP and record them with the same [`record`].
//!
//! Garbage collection: everything is written under a short lease; the image record then
//! keeps the manifest alive, the manifest's `containerd.io/gc.ref.content.*` labels keep
//! its config and layers, and the config's `containerd.io/gc.ref.snapshot.overlayfs`
//! label keeps the unpacked snapshot chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
    diff_client::DiffClient,
    images_client::ImagesClient,
    snapshots::{
        CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
        snapshots_client::SnapshotsClient,
    },
};
use containerd_client::types::Descriptor;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::content::{self, hex, read_blob, unique_suffix, with_lease, write_blob};
use crate::{ContainerdClient, Error, SNAPSHOTTER};

pub(crate) const MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MANIFEST_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const INDEX_OCI: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const INDEX_DOCKER: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An image known to containerd and unpacked for [`SNAPSHOTTER`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedImage {
    /// The image reference, e.g. `hypermesh.local/busybox:latest`.
    pub name: String,
    /// Digest of the image's manifest (the image record's target).
    pub manifest: String,
    /// The snapshot name (chain ID) of the top layer: the parent of container rootfs.
    pub chain_id: String,
    /// The image config's defaults for containers.
    pub config: ImageDefaults,
}

/// What an image config says about how to run it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// An OCI index or Docker manifest list.
#[derive(Deserialize)]
pub(crate) struct IndexJson {
    #[serde(default)]
    pub manifests: Vec<DescriptorJson>,
}

/// A content descriptor as manifests and indexes write it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescriptorJson {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
}

#[derive(Clone, Debug, Deserialize)]
pub(crate) struct PlatformJson {
    pub architecture: String,
    pub os: String,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Deserialize)]
pub(crate) struct ManifestJson {
    pub config: DescriptorJson,
    pub layers: Vec<DescriptorJson>,
}

#[derive(Deserialize)]
pub(crate) struct ConfigJson {
    #[serde(default)]
    config: Option<RunConfigJson>,
    rootfs: RootfsJson,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfigJson {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct RootfsJson {
    diff_ids: Vec<String>,
}

impl From<&DescriptorJson> for Descriptor {
    fn from(d: &DescriptorJson) -> Self {
        Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: HashMap::new(),
        }
    }
}

/// Whether `media_type` is a single-platform image manifest.
pub(crate) fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, MANIFEST_OCI | MANIFEST_DOCKER)
}

/// Whether `media_type` is a multi-platform index.
pub(crate) fn is_index(media_type: &str) -> bool {
    matches!(media_type, INDEX_OCI | INDEX_DOCKER)
}

/// The containerd platform name of this host's architecture.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The entry of an index for this host (`linux/<host arch>`, or one without a platform).
pub(crate) fn pick_platform(index: &[u8]) -> Result<DescriptorJson, String> {
    let index: IndexJson = serde_json::from_slice(index).map_err(|e| format!("index: {e}"))?;
    index
        .manifests
        .into_iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_none_or(|p| p.os == "linux" && p.architecture == host_arch())
        })
        .ok_or_else(|| format!("no manifest for linux/{}", host_arch()))
}

/// The chain IDs of a layer stack: `chain(0) = diff(0)`,
/// `chain(n) = sha256(chain(n-1) + " " + diff(n))` (OCI image spec).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => {
                let hash = Sha256::digest(format!("{parent} {diff}").as_bytes());
                format!("sha256:{}", hex(&hash))
            }
        };
        out.push(next);
    }
    out
}

/// A single-platform image read from its source (archive or registry) with its manifest
/// and config bytes digest-checked, ready for [`record`].
pub(crate) struct ImageParts {
    /// The manifest's descriptor: the image record's target.
    pub manifest_desc: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub manifest: ManifestJson,
    pub config_bytes: Vec<u8>,
    pub config: ConfigJson,
}

/// Parses a manifest; `Err` is a detail for the caller's error.
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<ManifestJson, String> {
    let manifest: ManifestJson =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest: {e}"))?;
    if manifest.layers.is_empty() {
        return Err("manifest lists no layers".into());
    }
    Ok(manifest)
}

/// Parses a config and checks it against its manifest; `Err` is a detail for the
/// caller's error.
pub(crate) fn parse_config(bytes: &[u8], manifest: &ManifestJson) -> Result<ConfigJson, String> {
    let config: ConfigJson = serde_json::from_slice(bytes).map_err(|e| format!("config: {e}"))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(format!(
            "config lists {} diff_ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        ));
    }
    Ok(config)
}

/// Records an image whose layers are already in the content store under `lease`:
/// writes its config and manifest (with the gc labels that keep layers and snapshots),
/// unpacks the layers and points the image record `name` at the manifest. The record
/// comes last, so a failure before it leaves no image that could be used.
pub(crate) async fn record(
    client: &ContainerdClient,
    lease: &str,
    name: &str,
    parts: ImageParts,
) -> Result<ImportedImage, Error> {
    let ImageParts {
        manifest_desc,
        manifest_bytes,
        manifest,
        config_bytes,
        config,
    } = parts;
    let top = chain_ids(&config.rootfs.diff_ids)
        .pop()
        .ok_or_else(|| Error::InvalidImage {
            path: PathBuf::from(name),
            detail: "image has no layers".into(),
        })?;
    let config_labels = HashMap::from([(
        format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
        top.clone(),
    )]);
    write_blob(
        client,
        lease,
        &manifest.config.digest,
        &config_bytes,
        config_labels,
    )
    .await?;
    let mut manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        manifest.config.digest.clone(),
    )]);
    for (i, layer) in manifest.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    write_blob(
        client,
        lease,
        &manifest_desc.digest,
        &manifest_bytes,
        manifest_labels,
    )
    .await?;
    let layers: Vec<Descriptor> = manifest.layers.iter().map(Descriptor::from).collect();
    unpack(client, lease, &layers, &config.rootfs.diff_ids).await?;
    put_image(client, lease, name, manifest_desc.clone()).await?;
    Ok(ImportedImage {
        name: name.to_string(),
        manifest: manifest_desc.digest,
        chain_id: top,
        config: defaults(config.config.unwrap_or_default()),
    })
}

/// Imports every image in the OCI archive at `path` and unpacks it; returns the images
/// in index order. Each image is named by its `io.containerd.image.name` annotation, or
/// its `org.opencontainers.image.ref.name` when that is a full reference.
pub async fn import_archive(
    client: &ContainerdClient,
    path: &Path,
) -> Result<Vec<ImportedImage>, Error> {
    let archive_path = path.to_path_buf();
    let files = tokio::task::spawn_blocking(move || read_archive(&archive_path)).await??;
    let invalid = |detail: String| Error::InvalidImage {
        path: path.to_path_buf(),
        detail,
    };
    let index_bytes = files
        .get("index.json")
        .ok_or_else(|| invalid("no index.json".into()))?;
    let index: IndexJson =
        serde_json::from_slice(index_bytes).map_err(|e| invalid(format!("index.json: {e}")))?;
    if index.manifests.is_empty() {
        return Err(invalid("index.json lists no manifests".into()));
    }
    with_lease(client, async |lease| {
        let mut images = Vec::new();
        for entry in &index.manifests {
            images.push(import_entry(client, path, &files, entry, lease).await?);
        }
        Ok(images)
    })
    .await
}

/// Imports the image one `index.json` entry names.
async fn import_entry(
    client: &ContainerdClient,
    path: &Path,
    files: &HashMap<String, Vec<u8>>,
    entry: &DescriptorJson,
    lease: &str,
) -> Result<ImportedImage, Error> {
    let invalid = |detail: String| Error::InvalidImage {
        path: path.to_path_buf(),
        detail,
    };
    // A file of the archive by its digest.
    let file = |digest: &str| -> Result<&Vec<u8>, Error> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| invalid(format!("unsupported digest {digest}")))?;
        files
            .get(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| invalid(format!("blob {digest} missing from the archive")))
    };
    // A small blob read before it is written (index, manifest, config): checked here.
    let blob = |digest: &str| -> Result<&Vec<u8>, Error> {
        let data = file(digest)?;
        let actual = content::sha256_digest(data);
        if actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    };
    let name = entry
        .annotations
        .get("io.containerd.image.name")
        .or_else(|| {
            entry
                .annotations
                .get("org.opencontainers.image.ref.name")
                .filter(|r| r.contains('/') || r.contains(':'))
        })
        .cloned()
        .ok_or_else(|| {
            invalid(format!(
                "manifest {} has no io.containerd.image.name annotation",
                entry.digest
            ))
        })?;
    // A multi-platform index: pick this host's platform.
    let manifest_desc = if is_manifest(&entry.media_type) {
        entry.clone()
    } else if is_index(&entry.media_type) {
        pick_platform(blob(&entry.digest)?).map_err(|e| invalid(format!("{name}: {e}")))?
    } else {
        return Err(invalid(format!(
            "unsupported media type {}",
            entry.media_type
        )));
    };
    let manifest_bytes = blob(&manifest_desc.digest)?;
    let manifest = parse_manifest(manifest_bytes)
        .map_err(|e| invalid(format!("{}: {e}", manifest_desc.digest)))?;
    let config_bytes = blob(&manifest.config.digest)?;
    let config = parse_config(config_bytes, &manifest)
        .map_err(|e| invalid(format!("{}: {e}", manifest.config.digest)))?;
    for layer in &manifest.layers {
        // The writer hashes each layer as it streams it.
        write_blob(
            client,
            lease,
            &layer.digest,
            file(&layer.digest)?,
            HashMap::new(),
        )
        .await?;
    }
    let parts = ImageParts {
        manifest_desc: Descriptor::from(&manifest_desc),
        manifest_bytes: manifest_bytes.clone(),
        manifest,
        config_bytes: config_bytes.clone(),
        config,
    };
    record(client, lease, &name, parts).await
}

fn defaults(run: RunConfigJson) -> ImageDefaults {
    ImageDefaults {
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir.unwrap_or_default(),
        user: run.user.unwrap_or_default(),
    }
}

/// Reads every regular file of a (small) archive into memory, keyed by its path without
/// a leading `./`.
fn read_archive(path: &Path) -> Result<HashMap<String, Vec<u8>>, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut files = HashMap::new();
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(io)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        std::io::Read::read_to_end(&mut entry, &mut data).map_err(io)?;
        files.insert(name, data);
    }
    Ok(files)
}

/// Applies each layer on top of the previous one and commits it under its chain ID,
/// skipping layers already unpacked.
async fn unpack(
    client: &ContainerdClient,
    lease: &str,
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<(), Error> {
    let mut snapshots = SnapshotsClient::new(client.channel());
    let mut diff = DiffClient::new(client.channel());
    let chains = chain_ids(diff_ids);
    let mut parent = String::new();
    for ((layer, diff_id), chain) in layers.iter().zip(diff_ids).zip(&chains) {
        let present = snapshots
            .stat(client.request(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: chain.clone(),
            }))
            .await;
        match present {
            Ok(_) => {
                parent = chain.clone();
                continue;
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(Error::call("snapshots.stat")(status)),
        }
        let key = format!("hypermesh-extract-{}-{chain}", unique_suffix());
        let mounts = snapshots
            .prepare(client.leased_request(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.clone(),
                    parent: parent.clone(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(Error::call("snapshots.prepare"))?
            .into_inner()
            .mounts;
        let applied = async {
            let applied = diff
                .apply(client.leased_request(
                    ApplyRequest {
                        diff: Some(layer.clone()),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                ))
                .await
                .map_err(Error::call("diff.apply"))?
                .into_inner()
                .applied
                .map(|d| d.digest)
                .unwrap_or_default();
            if &applied != diff_id {
                return Err(Error::InvalidImage {
                    path: PathBuf::from(&layer.digest),
                    detail: format!("layer unpacked to {applied}, config says {diff_id}"),
                });
            }
            let committed = snapshots
                .clone()
                .commit(client.leased_request(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.to_string(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await;
            match committed {
                Ok(_) => Ok(true),
                // Another import unpacked the same layer meanwhile.
                Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(false),
                Err(status) => Err(Error::call("snapshots.commit")(status)),
            }
        }
        .await;
        if !matches!(applied, Ok(true)) {
            let _ = snapshots
                .remove(client.request(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key,
                }))
                .await;
        }
        applied?;
        parent = chain.clone();
    }
    Ok(())
}

/// Creates the image record, or points an existing one at `target`.
async fn put_image(
    client: &ContainerdClient,
    lease: &str,
    name: &str,
    target: Descriptor,
) -> Result<(), Error> {
    let mut images = ImagesClient::new(client.channel());
    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(target),
        created_at: None,
        updated_at: None,
    };
    let created = images
        .create(client.leased_request(
            CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            },
            lease,
        ))
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            images
                .update(client.leased_request(
                    UpdateImageRequest {
                        image: Some(image),
                        update_mask: None,
                        source_date_epoch: None,
                    },
                    lease,
                ))
                .await
                .map_err(Error::call("images.update"))?;
            Ok(())
        }
        Err(status) => Err(Error::call("images.create")(status)),
    }
}

/// Looks up an image already in containerd (imported or pulled before): its manifest,
/// config defaults and top snapshot. Fails with [`Error::ImageNotFound`] if
/// unknown. Assumes the image was unpacked (as [`record`] does).
pub async fn resolve(client: &ContainerdClient, name: &str) -> Result<ImportedImage, Error> {
    let found = ImagesClient::new(client.channel())
        .get(client.request(GetImageRequest {
            name: name.to_string(),
        }))
        .await;
    let image = match found {
        Ok(response) => response.into_inner().image,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return Err(Error::call("images.get")(status)),
    };
    let target = image
        .and_then(|i| i.target)
        .ok_or_else(|| Error::ImageNotFound(name.to_string()))?;
    let invalid = |detail: String| Error::InvalidImage {
        path: PathBuf::from(name),
        detail,
    };
    let manifest_desc = if is_manifest(&target.media_type) {
        target
    } else if is_index(&target.media_type) {
        let chosen = pick_platform(&read_blob(client, &target).await?).map_err(invalid)?;
        Descriptor::from(&chosen)
    } else {
        return Err(invalid(format!(
            "unsupported media type {}",
            target.media_type
        )));
    };
    let manifest = parse_manifest(&read_blob(client, &manifest_desc).await?).map_err(invalid)?;
    let config_bytes = read_blob(client, &Descriptor::from(&manifest.config)).await?;
    let config = parse_config(&config_bytes, &manifest).map_err(invalid)?;
    let chain_id = chain_ids(&config.rootfs.diff_ids)
        .pop()
        .ok_or_else(|| invalid("image has no layers".into()))?;
    Ok(ImportedImage {
        name: name.to_string(),
        manifest: manifest_desc.digest,
        chain_id,
        config: defaults(config.config.unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_of_one_layer_is_its_diff_id() {
        let ids = vec!["sha256:aa".to_string()];
        assert_eq!(chain_ids(&ids), ids);
    }

    #[test]
    fn chain_of_two_layers_hashes_parent_and_diff() {
        let ids = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let chains = chain_ids(&ids);
        let expected = format!("sha256:{}", hex(&Sha256::digest(b"sha256:aa sha256:bb")));
        assert_eq!(chains[1], expected);
    }

    #[test]
    fn the_host_platform_is_picked_from_an_index() {
        let index = format!(
            r#"{{"manifests":[
                {{"mediaType":"{MANIFEST_OCI}","digest":"sha256:aa","size":1,"platform":{{"architecture":"s390x","os":"linux"}}}},
                {{"mediaType":"{MANIFEST_OCI}","digest":"sha256:bb","size":2,"platform":{{"architecture":"{}","os":"linux"}}}}
            ]}}"#,
            host_arch()
        );
        let picked = pick_platform(index.as_bytes()).expect("host platform");
        assert_eq!(picked.digest, "sha256:bb");
        let other = format!(
            r#"{{"manifests":[{{"mediaType":"{MANIFEST_OCI}","digest":"sha256:aa","size":1,"platform":{{"architecture":"s390x","os":"windows"}}}}]}}"#
        );
        assert!(pick_platform(other.as_bytes()).is_err());
    }
}
