//! Images: importing OCI image archives (`oci-layout`, `index.json`, `blobs/sha256/…`)
//! through the content and images services, and unpacking their layers into snapshots
//! through the diff and snapshot services — what `ctr images import` does client-side,
//! since containerd 1.6 has no Transfer service.
//!
//! Garbage collection: everything is written under a short lease; the image record then
//! keeps the manifest alive, the manifest's `containerd.io/gc.ref.content.*` labels keep
//! its config and layers, and the config's `containerd.io/gc.ref.snapshot.overlayfs`
//! label keeps the unpacked snapshot chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, InfoRequest, ReadContentRequest,
    UpdateImageRequest, WriteAction, WriteContentRequest,
    content_client::ContentClient,
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

use super::{RuntimeClient, RuntimeError, SNAPSHOTTER};

const MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
const MANIFEST_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";
const INDEX_OCI: &str = "application/vnd.oci.image.index.v1+json";
const INDEX_DOCKER: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Blobs are sent in chunks well below gRPC's default 4 MiB message limit.
const CHUNK: usize = 1 << 20;
/// How long an import's lease pins content if the agent dies mid-import.
const IMPORT_LEASE_TTL: Duration = Duration::from_secs(3600);

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

#[derive(Deserialize)]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<DescriptorJson>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Clone, Deserialize)]
struct PlatformJson {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct ManifestJson {
    config: DescriptorJson,
    layers: Vec<DescriptorJson>,
}

#[derive(Deserialize)]
struct ConfigJson {
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

/// The containerd platform name of this host's architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Imports every image in the OCI archive at `path` and unpacks it; returns the images
/// in index order. Each image is named by its `io.containerd.image.name` annotation, or
/// its `org.opencontainers.image.ref.name` when that is a full reference.
pub async fn import_archive(
    client: &RuntimeClient,
    path: &Path,
) -> Result<Vec<ImportedImage>, RuntimeError> {
    let archive_path = path.to_path_buf();
    let files = tokio::task::spawn_blocking(move || read_archive(&archive_path)).await??;
    let invalid = |detail: String| RuntimeError::InvalidImage {
        path: path.to_path_buf(),
        detail,
    };
    let index_bytes = files
        .get("index.json")
        .ok_or_else(|| invalid("no index.json".into()))?;
    let index: IndexJson =
        serde_json::from_slice(index_bytes).map_err(|e| invalid(format!("index.json: {e}")))?;

    let lease = format!("hypermesh-import-{}", unique_suffix());
    client.create_lease(&lease, IMPORT_LEASE_TTL).await?;
    let result = import_index(client, path, &files, &index, &lease).await;
    let released = client.delete_lease(&lease).await;
    let images = result?;
    released?;
    Ok(images)
}

async fn import_index(
    client: &RuntimeClient,
    path: &Path,
    files: &HashMap<String, Vec<u8>>,
    index: &IndexJson,
    lease: &str,
) -> Result<Vec<ImportedImage>, RuntimeError> {
    let invalid = |detail: String| RuntimeError::InvalidImage {
        path: path.to_path_buf(),
        detail,
    };
    let blob = |digest: &str| -> Result<&Vec<u8>, RuntimeError> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| invalid(format!("unsupported digest {digest}")))?;
        files
            .get(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| invalid(format!("blob {digest} missing from the archive")))
    };
    if index.manifests.is_empty() {
        return Err(invalid("index.json lists no manifests".into()));
    }
    let mut images = Vec::new();
    for entry in &index.manifests {
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
        let manifest_desc = match entry.media_type.as_str() {
            MANIFEST_OCI | MANIFEST_DOCKER => entry.clone(),
            INDEX_OCI | INDEX_DOCKER => {
                let nested: IndexJson = serde_json::from_slice(blob(&entry.digest)?)
                    .map_err(|e| invalid(format!("index {}: {e}", entry.digest)))?;
                nested
                    .manifests
                    .into_iter()
                    .find(|m| {
                        m.platform
                            .as_ref()
                            .is_none_or(|p| p.os == "linux" && p.architecture == host_arch())
                    })
                    .ok_or_else(|| {
                        invalid(format!("{name}: no manifest for linux/{}", host_arch()))
                    })?
            }
            other => return Err(invalid(format!("unsupported media type {other}"))),
        };
        let manifest_bytes = blob(&manifest_desc.digest)?;
        let manifest: ManifestJson = serde_json::from_slice(manifest_bytes)
            .map_err(|e| invalid(format!("manifest {}: {e}", manifest_desc.digest)))?;
        let config_bytes = blob(&manifest.config.digest)?;
        let config: ConfigJson = serde_json::from_slice(config_bytes)
            .map_err(|e| invalid(format!("config {}: {e}", manifest.config.digest)))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(invalid(format!(
                "config lists {} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        let top = chains
            .last()
            .cloned()
            .ok_or_else(|| invalid(format!("{name}: image has no layers")))?;

        for layer in &manifest.layers {
            write_blob(
                client,
                lease,
                &layer.digest,
                blob(&layer.digest)?,
                HashMap::new(),
            )
            .await?;
        }
        let mut config_labels = HashMap::new();
        config_labels.insert(
            format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
            top.clone(),
        );
        write_blob(
            client,
            lease,
            &manifest.config.digest,
            config_bytes,
            config_labels,
        )
        .await?;
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            manifest.config.digest.clone(),
        );
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
            manifest_bytes,
            manifest_labels,
        )
        .await?;

        let layers: Vec<Descriptor> = manifest.layers.iter().map(Descriptor::from).collect();
        unpack(client, lease, &layers, &config.rootfs.diff_ids).await?;
        put_image(client, lease, &name, Descriptor::from(&manifest_desc)).await?;
        images.push(ImportedImage {
            name,
            manifest: manifest_desc.digest.clone(),
            chain_id: top,
            config: defaults(config.config.unwrap_or_default()),
        });
    }
    Ok(images)
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
fn read_archive(path: &Path) -> Result<HashMap<String, Vec<u8>>, RuntimeError> {
    let io = |source| RuntimeError::Io {
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

/// Writes `data` as the blob `digest` unless the content store already has it;
/// containerd verifies the digest on commit.
async fn write_blob(
    client: &RuntimeClient,
    lease: &str,
    digest: &str,
    data: &[u8],
    labels: HashMap<String, String>,
) -> Result<(), RuntimeError> {
    let mut content = ContentClient::new(client.channel());
    let exists = content
        .info(client.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await;
    match exists {
        Ok(_) => return Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => {}
        Err(status) => return Err(RuntimeError::call("content.info")(status)),
    }
    let reference = format!("hypermesh-{}-{digest}", unique_suffix());
    let total = i64::try_from(data.len()).unwrap_or(i64::MAX);
    let mut requests = Vec::new();
    let mut offset = 0usize;
    for chunk in data.chunks(CHUNK) {
        requests.push(WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.clone(),
            total,
            expected: digest.to_string(),
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            data: chunk.to_vec(),
            labels: HashMap::new(),
        });
        offset += chunk.len();
    }
    requests.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference,
        total,
        expected: digest.to_string(),
        offset: total,
        data: Vec::new(),
        labels,
    });
    let mut responses = content
        .write(client.leased_request(tokio_stream::iter(requests), lease))
        .await
        .map_err(RuntimeError::call("content.write"))?
        .into_inner();
    loop {
        match responses.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(status) if status.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(status) => return Err(RuntimeError::call("content.write")(status)),
        }
    }
}

/// Applies each layer on top of the previous one and commits it under its chain ID,
/// skipping layers already unpacked.
async fn unpack(
    client: &RuntimeClient,
    lease: &str,
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<(), RuntimeError> {
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
            Err(status) => return Err(RuntimeError::call("snapshots.stat")(status)),
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
            .map_err(RuntimeError::call("snapshots.prepare"))?
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
                .map_err(RuntimeError::call("diff.apply"))?
                .into_inner()
                .applied
                .map(|d| d.digest)
                .unwrap_or_default();
            if &applied != diff_id {
                return Err(RuntimeError::InvalidImage {
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
                Err(status) => Err(RuntimeError::call("snapshots.commit")(status)),
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
    client: &RuntimeClient,
    lease: &str,
    name: &str,
    target: Descriptor,
) -> Result<(), RuntimeError> {
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
                .map_err(RuntimeError::call("images.update"))?;
            Ok(())
        }
        Err(status) => Err(RuntimeError::call("images.create")(status)),
    }
}

/// Looks up an image already in containerd (imported before): its manifest, config
/// defaults and top snapshot. Fails with [`RuntimeError::ImageNotFound`] if unknown.
/// Assumes the image was unpacked (as [`import_archive`] does).
pub async fn resolve(client: &RuntimeClient, name: &str) -> Result<ImportedImage, RuntimeError> {
    let found = ImagesClient::new(client.channel())
        .get(client.request(GetImageRequest {
            name: name.to_string(),
        }))
        .await;
    let image = match found {
        Ok(response) => response.into_inner().image,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return Err(RuntimeError::call("images.get")(status)),
    };
    let target = image
        .and_then(|i| i.target)
        .ok_or_else(|| RuntimeError::ImageNotFound(name.to_string()))?;
    let invalid = |detail: String| RuntimeError::InvalidImage {
        path: PathBuf::from(name),
        detail,
    };
    let manifest_desc = match target.media_type.as_str() {
        MANIFEST_OCI | MANIFEST_DOCKER => target,
        INDEX_OCI | INDEX_DOCKER => {
            let index: IndexJson = serde_json::from_slice(&read_blob(client, &target).await?)
                .map_err(|e| invalid(format!("index: {e}")))?;
            let chosen = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_none_or(|p| p.os == "linux" && p.architecture == host_arch())
                })
                .ok_or_else(|| invalid(format!("no manifest for linux/{}", host_arch())))?;
            Descriptor::from(chosen)
        }
        other => return Err(invalid(format!("unsupported media type {other}"))),
    };
    let manifest: ManifestJson = serde_json::from_slice(&read_blob(client, &manifest_desc).await?)
        .map_err(|e| invalid(format!("manifest: {e}")))?;
    let config: ConfigJson =
        serde_json::from_slice(&read_blob(client, &Descriptor::from(&manifest.config)).await?)
            .map_err(|e| invalid(format!("config: {e}")))?;
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

/// Reads a whole (small) blob from the content store.
async fn read_blob(client: &RuntimeClient, desc: &Descriptor) -> Result<Vec<u8>, RuntimeError> {
    let mut stream = ContentClient::new(client.channel())
        .read(client.request(ReadContentRequest {
            digest: desc.digest.clone(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(RuntimeError::call("content.read"))?
        .into_inner();
    let mut out = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(RuntimeError::call("content.read"))?
    {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// A suffix that makes temporary keys unique per call.
pub(crate) fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
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
}
