//! Images: what an OCI/Docker manifest and config say, recording an image whose blobs
//! are in the content store (config and manifest with their gc labels, layers unpacked
//! into snapshots, the image record), and looking images up. Archive imports
//! ([`import_archive`]) and registry pulls ([`crate::pull`]) bring the parts in and record them
//! with the same `record`; containerd 1.6 has no Transfer service to do it.
//!
//! Garbage collection: everything is written under a short lease; the image record then
//! keeps the manifest alive, the manifest's `containerd.io/gc.ref.content.*` labels keep
//! its config and layers, and the config's `containerd.io/gc.ref.snapshot.overlayfs`
//! label keeps the unpacked snapshot chain.

mod archive;
mod import;
mod unpack;

#[cfg(test)]
mod fuzz_tests;

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_client::services::v1::{
    GetImageRequest, ListImagesRequest, images_client::ImagesClient,
};
use containerd_client::types::Descriptor;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::content::{hex, read_blob, write_blob};
use crate::{ContainerdClient, Error, SNAPSHOTTER};

pub use archive::{MAX_ARCHIVE_BYTES, MAX_DOCUMENT_BYTES, MAX_ENTRIES};
pub use import::import_archive;
pub use unpack::MAX_UNPACKED_BYTES;
use unpack::{put_image, unpack};

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
    /// Digest of the image's config blob (whose gc labels keep its snapshots).
    pub config_digest: String,
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

/// The image record label saying where an image came from: [`FROM_ARCHIVE`] (an OCI
/// archive imported on this node) or [`FROM_REGISTRY`] (pulled).
pub const SOURCE_LABEL: &str = "hypermesh.io/image-source";
/// [`SOURCE_LABEL`] of an image imported from an OCI archive.
pub const FROM_ARCHIVE: &str = "archive";
/// [`SOURCE_LABEL`] of an image pulled from a registry.
pub const FROM_REGISTRY: &str = "registry";

/// The names of the images imported from OCI archives, sorted.
pub async fn archive_images(client: &ContainerdClient) -> Result<Vec<String>, Error> {
    let listed = ImagesClient::new(client.channel())
        .list(client.request(ListImagesRequest {
            filters: vec![format!("labels.\"{SOURCE_LABEL}\"=={FROM_ARCHIVE}")],
        }))
        .await
        .map_err(Error::call("images.list"))?
        .into_inner();
    let mut names: Vec<String> = listed.images.into_iter().map(|i| i.name).collect();
    names.sort();
    Ok(names)
}

/// Records an image whose layers are already in the content store under `lease`:
/// writes its config and manifest (with the gc labels that keep layers and snapshots),
/// unpacks the layers and points the image record `name` (labelled with its `source`,
/// [`SOURCE_LABEL`]) at the manifest. The record comes last, so a failure before it leaves no image that could be used.
pub(crate) async fn record(
    client: &ContainerdClient,
    lease: &str,
    name: &str,
    parts: ImageParts,
    source: &str,
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
    put_image(client, lease, name, manifest_desc.clone(), source).await?;
    Ok(ImportedImage {
        name: name.to_string(),
        manifest: manifest_desc.digest,
        config_digest: manifest.config.digest.clone(),
        chain_id: top,
        config: defaults(config.config.unwrap_or_default()),
    })
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
/// Looks up an image already in containerd (imported or pulled before): its manifest,
/// config defaults and top snapshot. Fails with [`Error::ImageNotFound`] if
/// unknown. Assumes the image was unpacked (as `record` does).
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
        config_digest: manifest.config.digest.clone(),
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
