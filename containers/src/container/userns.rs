//! User namespaces: the id mapping containers run with (uid and gid 0‥65535 inside are
//! [`IdMapping::DEFAULT`]'s range on the host, far from the host's own users and the
//! usual subordinate-id ranges), and root file systems owned by that range.
//!
//! runc 1.1 cannot idmap a root file system, so, as containerd's `WithRemappedSnapshot`
//! does, the image's files are chowned once: a snapshot is prepared on the image's top
//! layer, mounted here, every file's owner shifted into the range (set-id bits kept), and
//! committed as `<chain id>/userns/<base>`; containers are then prepared on that snapshot.
//! Overlayfs copies each chowned file up, so this costs one copy of the image per
//! mapping, made once. The config blob's gc label keeps the snapshot as long as the image.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use containerd_client::services::v1::{
    Info as ContentInfo, UpdateRequest as UpdateContentRequest,
    content_client::ContentClient,
    snapshots::{
        CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
        snapshots_client::SnapshotsClient,
    },
};
use containerd_client::types::Mount;

use crate::content::{unique_suffix, with_lease};
use crate::image::ImportedImage;
use crate::{ContainerdClient, Error, SNAPSHOTTER};

/// Where remapped root file systems are mounted while they are chowned.
const MOUNT_ROOT: &str = "/run/hypermesh/userns";

/// A user namespace's mapping: container ids `0..size` are host ids `base..base+size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapping {
    /// The host uid container uid 0 is.
    pub uid_base: u32,
    /// The host gid container gid 0 is.
    pub gid_base: u32,
    /// How many ids are mapped.
    pub size: u32,
}

impl IdMapping {
    /// 65,536 ids from 2^30 on the host.
    pub const DEFAULT: IdMapping = IdMapping {
        uid_base: 1 << 30,
        gid_base: 1 << 30,
        size: 65_536,
    };

    /// The host uid of container uid `uid`, if it is mapped.
    pub fn host_uid(&self, uid: u32) -> Option<u32> {
        (uid < self.size).then(|| self.uid_base + uid)
    }

    /// The host gid of container gid `gid`, if it is mapped.
    pub fn host_gid(&self, gid: u32) -> Option<u32> {
        (gid < self.size).then(|| self.gid_base + gid)
    }
}

/// Whether this kernel lets processes create user namespaces
/// (`/proc/sys/user/max_user_namespaces` above 0). A kernel without them, or with them
/// switched off, runs containers in the host's user namespace.
pub fn user_namespaces_available() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// The snapshot name of `image`'s root file system owned by `mapping`'s range.
fn remapped_name(image: &ImportedImage, mapping: &IdMapping) -> String {
    format!(
        "{}/userns/{}-{}-{}",
        image.chain_id, mapping.uid_base, mapping.gid_base, mapping.size
    )
}

/// The snapshot to prepare containers of `image` on when they run with `mapping`:
/// made (once) by chowning the image's files into the range.
pub(crate) async fn remapped_parent(
    client: &ContainerdClient,
    image: &ImportedImage,
    mapping: &IdMapping,
) -> Result<String, Error> {
    let name = remapped_name(image, mapping);
    let mut snapshots = SnapshotsClient::new(client.channel());
    let present = snapshots
        .stat(client.request(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: name.clone(),
        }))
        .await;
    match present {
        Ok(_) => return Ok(name),
        Err(status) if status.code() == tonic::Code::NotFound => {}
        Err(status) => return Err(Error::call("snapshots.stat")(status)),
    }
    with_lease(client, async |lease| {
        let key = format!("hypermesh-remap-{}", unique_suffix());
        let mounts = snapshots
            .prepare(client.leased_request(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.clone(),
                    parent: image.chain_id.clone(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(Error::call("snapshots.prepare"))?
            .into_inner()
            .mounts;
        let mapping = *mapping;
        let chowned = tokio::task::spawn_blocking(move || chown_mounted(&mounts, &mapping))
            .await
            .map_err(Error::from)
            .and_then(|r| r);
        let committed = match chowned {
            Ok(()) => snapshots
                .commit(client.leased_request(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.to_string(),
                        name: name.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
                .map(|_| ())
                .or_else(|status| match status.code() {
                    // Another container of the image made it meanwhile.
                    tonic::Code::AlreadyExists => Ok(()),
                    _ => Err(Error::call("snapshots.commit")(status)),
                }),
            Err(e) => Err(e),
        };
        if committed.is_err() {
            let _ = snapshots
                .remove(client.request(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key,
                }))
                .await;
        }
        committed?;
        keep_with_image(client, image, &name).await?;
        Ok(name)
    })
    .await
}

/// Labels the image's config blob so containerd's gc keeps snapshot `name` as long as
/// the image (as the config's label keeps the unpacked layers).
async fn keep_with_image(
    client: &ContainerdClient,
    image: &ImportedImage,
    name: &str,
) -> Result<(), Error> {
    let suffix = name.rsplit('/').next().unwrap_or(name);
    let label = format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}/userns-{suffix}");
    ContentClient::new(client.channel())
        .update(client.request(UpdateContentRequest {
            info: Some(ContentInfo {
                digest: image.config_digest.clone(),
                labels: HashMap::from([(label.clone(), name.to_string())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{label}")],
            }),
        }))
        .await
        .map_err(Error::call("content.update"))?;
    Ok(())
}

/// Mounts the snapshot `mounts` describe on a private directory, shifts every owner into
/// `mapping`'s range and unmounts it again (blocking).
fn chown_mounted(mounts: &[Mount], mapping: &IdMapping) -> Result<(), Error> {
    let target = Path::new(MOUNT_ROOT).join(unique_suffix());
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| Error::Io { path, source }
    };
    std::fs::create_dir_all(&target).map_err(io(&target))?;
    let mounted = mount_all(mounts, &target);
    let result = mounted.and_then(|()| shift_owners(&target, mapping));
    let _ = rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_dir(&target);
    result
}

/// Mounts `mounts` (an overlay, or a bind of a single layer) on `target`.
fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), Error> {
    let [mount] = mounts else {
        return Err(Error::InvalidConfig(format!(
            "remapping a root file system: expected one mount, containerd gave {}",
            mounts.len()
        )));
    };
    let failed = |e: rustix::io::Errno| Error::Io {
        path: target.to_path_buf(),
        source: std::io::Error::from(e),
    };
    if mount.r#type == "bind" {
        let flags = rustix::mount::MountFlags::BIND;
        return rustix::mount::mount(mount.source.as_str(), target, "", flags, None)
            .map_err(failed);
    }
    let options = std::ffi::CString::new(mount.options.join(",")).map_err(|_| {
        Error::InvalidConfig("remapping a root file system: NUL in mount options".into())
    })?;
    rustix::mount::mount(
        mount.source.as_str(),
        target,
        mount.r#type.as_str(),
        rustix::mount::MountFlags::empty(),
        Some(options.as_c_str()),
    )
    .map_err(failed)
}

/// Shifts the owner of `root` and everything below it into `mapping`'s range (ids the
/// range does not cover are left as they are), keeping set-id bits that chown clears.
fn shift_owners(root: &Path, mapping: &IdMapping) -> Result<(), Error> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let meta = std::fs::symlink_metadata(&path).map_err(io)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(io)? {
                pending.push(entry.map_err(io)?.path());
            }
        }
        let (Some(uid), Some(gid)) = (mapping.host_uid(meta.uid()), mapping.host_gid(meta.gid()))
        else {
            continue;
        };
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io)?;
        let mode = meta.permissions().mode();
        if !meta.file_type().is_symlink() && mode & 0o6000 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_inside_the_range_map_and_others_do_not() {
        let m = IdMapping::DEFAULT;
        assert_eq!(m.host_uid(0), Some(1 << 30));
        assert_eq!(m.host_gid(1000), Some((1 << 30) + 1000));
        assert_eq!(m.host_uid(65_536), None);
    }

    #[test]
    fn owners_shift_into_the_range_and_set_id_bits_stay() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("su");
        std::fs::write(&file, "x").expect("file");
        std::os::unix::fs::lchown(&file, Some(1000), Some(50)).expect("own");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4755)).expect("mode");
        std::os::unix::fs::symlink("su", dir.path().join("link")).expect("link");
        let mapping = IdMapping {
            uid_base: 200_000,
            gid_base: 300_000,
            size: 65_536,
        };
        shift_owners(dir.path(), &mapping).expect("shifted");
        let meta = std::fs::metadata(&file).expect("meta");
        assert_eq!((meta.uid(), meta.gid()), (201_000, 300_050));
        assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
        let link = std::fs::symlink_metadata(dir.path().join("link")).expect("link");
        assert_eq!(link.uid(), 200_000);
        // Already shifted ids are outside the range: a second pass changes nothing.
        shift_owners(dir.path(), &mapping).expect("again");
        assert_eq!(std::fs::metadata(&file).expect("meta").uid(), 201_000);
    }
}
