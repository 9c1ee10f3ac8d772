//! Importing OCI image archives (`oci-layout`, `index.json`, `blobs/sha256/…`): what
//! `ctr images import` does client-side. The archive is walked and checked by
//! [`Archive`] first; the index, manifests and configs are read with their digests and
//! sizes checked, layers stream into the content store, and the image is recorded with
//! the same [`record`] as registry pulls.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use containerd_client::types::Descriptor;

use super::archive::Archive;
use super::{
    DescriptorJson, ImageParts, ImportedImage, IndexJson, is_index, is_manifest, parse_config,
    parse_manifest, pick_platform, record,
};
use crate::content::{self, BlobWriter, with_lease};
use crate::{ContainerdClient, Error};

/// Imports every image in the OCI archive at `path` and unpacks it; returns the images
/// in index order. Each image is named by its `io.containerd.image.name` annotation, or
/// its `org.opencontainers.image.ref.name` when that is a full reference. A malformed
/// or hostile archive fails with [`Error::InvalidImage`] naming the problem.
pub async fn import_archive(
    client: &ContainerdClient,
    path: &Path,
) -> Result<Vec<ImportedImage>, Error> {
    let archive_path = path.to_path_buf();
    let archive =
        Arc::new(tokio::task::spawn_blocking(move || Archive::open(&archive_path)).await??);
    let invalid = |detail: String| Error::InvalidImage {
        path: path.to_path_buf(),
        detail,
    };
    if !archive.contains("index.json") {
        return Err(invalid("no index.json".into()));
    }
    let index_bytes = document(&archive, "index.json").await?;
    let index: IndexJson =
        serde_json::from_slice(&index_bytes).map_err(|e| invalid(format!("index.json: {e}")))?;
    if index.manifests.is_empty() {
        return Err(invalid("index.json lists no manifests".into()));
    }
    with_lease(client, async |lease| {
        let mut images = Vec::new();
        for entry in &index.manifests {
            images.push(import_entry(client, path, &archive, entry, lease).await?);
        }
        Ok(images)
    })
    .await
}

/// A document of the archive by name, read on a blocking thread.
async fn document(archive: &Arc<Archive>, name: &str) -> Result<Vec<u8>, Error> {
    let archive = archive.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || archive.read_document(&name)).await?
}

/// A small blob (index, manifest, config) by its descriptor, its digest and size checked.
async fn checked_blob(archive: &Arc<Archive>, desc: &DescriptorJson) -> Result<Vec<u8>, Error> {
    let data = document(archive, &archive.blob_name(&desc.digest)?).await?;
    let actual = content::sha256_digest(&data);
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            expected: desc.digest.clone(),
            actual,
        });
    }
    if i64::try_from(data.len()).ok() != Some(desc.size) {
        return Err(Error::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: i64::try_from(data.len()).unwrap_or(i64::MAX),
        });
    }
    Ok(data)
}

/// Imports the image one `index.json` entry names.
async fn import_entry(
    client: &ContainerdClient,
    path: &Path,
    archive: &Arc<Archive>,
    entry: &DescriptorJson,
    lease: &str,
) -> Result<ImportedImage, Error> {
    let invalid = |detail: String| Error::InvalidImage {
        path: path.to_path_buf(),
        detail,
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
        pick_platform(&checked_blob(archive, entry).await?)
            .map_err(|e| invalid(format!("{name}: {e}")))?
    } else {
        return Err(invalid(format!(
            "unsupported media type {}",
            entry.media_type
        )));
    };
    let manifest_bytes = checked_blob(archive, &manifest_desc).await?;
    let manifest = parse_manifest(&manifest_bytes)
        .map_err(|e| invalid(format!("{}: {e}", manifest_desc.digest)))?;
    let config_bytes = checked_blob(archive, &manifest.config).await?;
    let config = parse_config(&config_bytes, &manifest)
        .map_err(|e| invalid(format!("{}: {e}", manifest.config.digest)))?;
    for layer in &manifest.layers {
        // The size the manifest claims must be the size the archive really holds.
        let held = archive.blob_size(&layer.digest)?;
        if u64::try_from(layer.size).ok() != Some(held) {
            return Err(Error::SizeMismatch {
                digest: layer.digest.clone(),
                expected: layer.size,
                actual: i64::try_from(held).unwrap_or(i64::MAX),
            });
        }
        let Some(mut writer) = BlobWriter::open(client, lease, &layer.digest, layer.size).await?
        else {
            continue;
        };
        // The writer hashes each layer as it streams it and commits only on a match.
        match archive.copy_blob(&layer.digest, &mut writer).await {
            Ok(()) => writer.commit(HashMap::new()).await?,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        }
    }
    let parts = ImageParts {
        manifest_desc: Descriptor::from(&manifest_desc),
        manifest_bytes,
        manifest,
        config_bytes,
        config,
    };
    record(client, lease, &name, parts, super::FROM_ARCHIVE).await
}
