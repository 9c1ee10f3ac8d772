//! Secret volume files on the host: the Secret's keys as files in a directory on a
//! memory-backed file system (checked), each replaced atomically, owned by the user the
//! container runs as on the host, removed when the key leaves the Secret.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::VolumeError;

/// Mode of each secret file: readable by its owner (the container's user) only.
pub(super) const SECRET_FILE_MODE: u32 = 0o400;
/// Mode of a secret file that containers of several users read.
const SHARED_SECRET_FILE_MODE: u32 = 0o444;
/// Prefix of a secret file while it is written (Secret keys cannot start with `..`).
const TEMP_PREFIX: &str = "..tmp-";
/// `statfs` magic numbers of the memory-backed file systems secrets may live on.
const TMPFS_MAGIC: rustix::fs::FsWord = 0x0102_1994;
const RAMFS_MAGIC: rustix::fs::FsWord = 0x8584_58f6;

/// A Secret key that is a plain file name in the volume directory.
pub(super) fn usable_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && !key.starts_with("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Creates `dir` (and parents) readable by root only.
pub(super) fn private_dir(dir: &Path) -> Result<(), VolumeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(VolumeError::io(dir))
}

/// True when `dir` is on tmpfs or ramfs.
pub(super) fn memory_backed(dir: &Path) -> Result<bool, VolumeError> {
    let stat = rustix::fs::statfs(dir).map_err(|e| VolumeError::Io {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    Ok(matches!(stat.f_type, TMPFS_MAGIC | RAMFS_MAGIC))
}

/// Makes `dir` hold exactly one file per key, each replaced atomically and owned by
/// `owner` (mode 0400); when the files belonged to another owner (a container of the
/// same Instance running as another user), mode 0444 so both can read them.
pub(super) fn write_secret_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    owner: (u32, u32),
) -> Result<(), VolumeError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(dir)
        .map_err(VolumeError::io(dir))?;
    for (key, value) in data {
        let path = dir.join(key);
        let shared = std::fs::symlink_metadata(&path).is_ok_and(|m| {
            (m.uid(), m.gid()) != owner || m.permissions().mode() & 0o777 == SHARED_SECRET_FILE_MODE
        });
        let mode = if shared {
            SHARED_SECRET_FILE_MODE
        } else {
            SECRET_FILE_MODE
        };
        let temp = dir.join(format!("{TEMP_PREFIX}{key}"));
        let _ = std::fs::remove_file(&temp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_FILE_MODE)
            .open(&temp)
            .map_err(VolumeError::io(&temp))?;
        file.write_all(value).map_err(VolumeError::io(&temp))?;
        std::os::unix::fs::fchown(&file, Some(owner.0), Some(owner.1))
            .map_err(VolumeError::io(&temp))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(VolumeError::io(&temp))?;
        drop(file);
        std::fs::rename(&temp, &path).map_err(VolumeError::io(&path))?;
    }
    // Keys removed from the Secret since the last write.
    for entry in std::fs::read_dir(dir).map_err(VolumeError::io(dir))? {
        let entry = entry.map_err(VolumeError::io(dir))?;
        let keep = entry
            .file_name()
            .to_str()
            .is_some_and(|n| data.contains_key(n));
        if !keep {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(VolumeError::io(&path))?;
        }
    }
    Ok(())
}
