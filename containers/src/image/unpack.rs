//! Unpacking an image's layers into snapshots through containerd's diff and snapshot
//! services, and the image record that makes it usable. Before containerd sees a layer,
//! it is read back from the content store and decompressed here with a cap on the
//! unpacked bytes ([`MAX_UNPACKED_BYTES`] per image), and its uncompressed digest is
//! checked against the config's `diff_id`: a decompression bomb or a lying config fails
//! before anything is written to the snapshotter.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, Image, UpdateImageRequest,
    diff_client::DiffClient,
    images_client::ImagesClient,
    snapshots::{
        CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
        snapshots_client::SnapshotsClient,
    },
};
use containerd_client::types::Descriptor;
use sha2::{Digest, Sha256};

use super::chain_ids;
use crate::content::{self, hex, unique_suffix};
use crate::{ContainerdClient, Error, SNAPSHOTTER};

/// The most bytes the layers of one image may unpack to.
pub const MAX_UNPACKED_BYTES: u64 = 64 << 30;

/// Applies each layer on top of the previous one and commits it under its chain ID,
/// skipping layers already unpacked.
pub(super) async fn unpack(
    client: &ContainerdClient,
    lease: &str,
    layers: &[Descriptor],
    diff_ids: &[String],
) -> Result<(), Error> {
    let mut snapshots = SnapshotsClient::new(client.channel());
    let mut diff = DiffClient::new(client.channel());
    let chains = chain_ids(diff_ids);
    let mut parent = String::new();
    let mut budget = MAX_UNPACKED_BYTES;
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
        let unpacked = check_layer(client, layer, diff_id, budget).await?;
        budget = budget.saturating_sub(unpacked);
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
pub(super) async fn put_image(
    client: &ContainerdClient,
    lease: &str,
    name: &str,
    target: Descriptor,
    source: &str,
) -> Result<(), Error> {
    let mut images = ImagesClient::new(client.channel());
    let image = Image {
        name: name.to_string(),
        labels: HashMap::from([(super::SOURCE_LABEL.to_string(), source.to_string())]),
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

/// How a layer's blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

fn compression(media_type: &str) -> Result<Compression, String> {
    if media_type.ends_with(".tar") {
        Ok(Compression::None)
    } else if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        Ok(Compression::Gzip)
    } else {
        Err(format!(
            "unsupported layer media type {media_type:?} (uncompressed and gzip tar layers \
             are supported)"
        ))
    }
}

/// Reads layer `layer` back from the content store, decompressing it with at most
/// `budget` unpacked bytes, and checks its uncompressed digest against `diff_id`.
/// Returns the unpacked size.
async fn check_layer(
    client: &ContainerdClient,
    layer: &Descriptor,
    diff_id: &str,
    budget: u64,
) -> Result<u64, Error> {
    let invalid = |detail: String| Error::InvalidImage {
        path: PathBuf::from(&layer.digest),
        detail,
    };
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    match compression(&layer.media_type).map_err(invalid)? {
        Compression::None => {
            // The blob is the tar: its digest was checked when it was written.
            if layer.digest != diff_id {
                return Err(invalid(format!(
                    "uncompressed layer {} but the config says diff_id {diff_id}",
                    layer.digest
                )));
            }
            if size > budget {
                return Err(invalid(format!(
                    "the image unpacks to more than {MAX_UNPACKED_BYTES} bytes"
                )));
            }
            Ok(size)
        }
        Compression::Gzip => {
            let mut decoder = flate2::write::MultiGzDecoder::new(Unpacked::new(budget));
            let mut stream = content::read_stream(client, &layer.digest).await?;
            let bomb = |e: std::io::Error| {
                invalid(format!(
                    "gzip layer does not decompress within the limit of {MAX_UNPACKED_BYTES} \
                     unpacked bytes per image: {e}"
                ))
            };
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(Error::call("content.read"))?
            {
                decoder.write_all(&chunk.data).map_err(bomb)?;
            }
            let sink = decoder.finish().map_err(bomb)?;
            let actual = format!("sha256:{}", hex(&sink.hasher.finalize()));
            if actual != diff_id {
                return Err(invalid(format!(
                    "layer unpacks to {actual}, the config says {diff_id}"
                )));
            }
            Ok(sink.written)
        }
    }
}

/// Where a layer is decompressed to: hashed and counted, refused past its budget.
struct Unpacked {
    hasher: Sha256,
    written: u64,
    budget: u64,
}

impl Unpacked {
    fn new(budget: u64) -> Unpacked {
        Unpacked {
            hasher: Sha256::new(),
            written: 0,
            budget,
        }
    }
}

impl Write for Unpacked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let after = self.written.saturating_add(buf.len() as u64);
        if after > self.budget {
            return Err(std::io::Error::other(format!(
                "more than {} bytes unpacked",
                self.budget
            )));
        }
        self.hasher.update(buf);
        self.written = after;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types_map_to_their_compression() {
        for t in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.docker.image.rootfs.diff.tar",
        ] {
            assert_eq!(compression(t), Ok(Compression::None), "{t}");
        }
        for t in [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        ] {
            assert_eq!(compression(t), Ok(Compression::Gzip), "{t}");
        }
        assert!(compression("application/vnd.oci.image.layer.v1.tar+zstd").is_err());
        assert!(compression("text/plain").is_err());
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_budget() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 8 << 20]).expect("compress");
        let bomb = gz.finish().expect("finish");
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let mut decoder = flate2::write::MultiGzDecoder::new(Unpacked::new(1 << 20));
        let error = decoder.write_all(&bomb).and_then(|()| decoder.try_finish());
        let error = error.expect_err("over budget");
        assert!(
            error.to_string().contains("more than 1048576 bytes"),
            "{error}"
        );

        let mut decoder = flate2::write::MultiGzDecoder::new(Unpacked::new(16 << 20));
        decoder.write_all(&bomb).expect("within budget");
        let sink = decoder.finish().expect("finish");
        assert_eq!(sink.written, 8 << 20);
        assert_eq!(
            format!("sha256:{}", hex(&sink.hasher.finalize())),
            content::sha256_digest(&vec![0u8; 8 << 20])
        );
    }
}
