//! Storage detection: block devices from `/sys/block` (size, rotational, model) and
//! mounted filesystems with size and free space (sysinfo, i.e. statvfs).

use std::path::{Path, PathBuf};

use super::DetectError;

/// A block device backed by hardware (it has a `device` link in sysfs; loop, ram and
/// zram devices do not and are left out).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDevice {
    /// Kernel name, e.g. `nvme0n1`.
    pub name: String,
    /// `/dev/<name>`.
    pub path: String,
    /// `size` × 512, bytes.
    pub size_bytes: u64,
    /// `queue/rotational` is 1 (a spinning disk).
    pub rotational: bool,
    /// `device/model`, when the driver reports one.
    pub model: Option<String>,
    /// Mount points of this device or its partitions.
    pub mounts: Vec<String>,
}

/// A mounted filesystem.
#[derive(Debug, Clone, PartialEq)]
pub struct Filesystem {
    /// Source device, e.g. `/dev/vda1` or `overlay`.
    pub device: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// Block devices and filesystems.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StorageInfo {
    pub devices: Vec<BlockDevice>,
    pub filesystems: Vec<Filesystem>,
}

impl StorageInfo {
    /// The filesystem mounted at `/`, if any.
    pub fn root(&self) -> Option<&Filesystem> {
        self.filesystems
            .iter()
            .find(|f| f.mount_point == Path::new("/"))
    }
}

/// Reads `sys_block` (normally `/sys/block`) and the mounted filesystems.
pub fn detect(sys_block: &Path) -> Result<StorageInfo, DetectError> {
    let filesystems = filesystems();
    let mut devices = Vec::new();
    let entries = std::fs::read_dir(sys_block).map_err(|source| DetectError::Read {
        path: sys_block.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if !dir.join("device").exists() {
            continue;
        }
        let sectors = read_u64(&dir.join("size")).unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let path = format!("/dev/{name}");
        let mut mounts: Vec<String> = filesystems
            .iter()
            .filter(|f| belongs_to(&f.device, &path))
            .map(|f| f.mount_point.display().to_string())
            .collect();
        mounts.sort();
        mounts.dedup();
        devices.push(BlockDevice {
            name,
            path,
            size_bytes: sectors.saturating_mul(512),
            rotational: read_u64(&dir.join("queue/rotational")) == Some(1),
            model: std::fs::read_to_string(dir.join("device/model"))
                .ok()
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty()),
            mounts,
        });
    }
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StorageInfo {
        devices,
        filesystems,
    })
}

/// Whether filesystem source `source` is device `disk` or one of its partitions
/// (`/dev/sda1`, `/dev/nvme0n1p2`).
fn belongs_to(source: &str, disk: &str) -> bool {
    source
        .strip_prefix(disk)
        .is_some_and(|rest| rest.is_empty() || rest.trim_start_matches('p').parse::<u32>().is_ok())
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Mounted filesystems with size and free space, as statvfs reports them.
pub fn filesystems() -> Vec<Filesystem> {
    let Ok(disks) = sysinfo::Disks::new_with_refreshed_list() else {
        return Vec::new();
    };
    disks
        .iter()
        .map(|d| Filesystem {
            device: d.name().to_string_lossy().into_owned(),
            mount_point: d.mount_point().to_path_buf(),
            fs_type: d.file_system().to_string_lossy().into_owned(),
            total_bytes: d.total_space(),
            available_bytes: d.available_space(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_belong_to_their_disk() {
        assert!(belongs_to("/dev/vda", "/dev/vda"));
        assert!(belongs_to("/dev/sda1", "/dev/sda"));
        assert!(belongs_to("/dev/nvme0n1p2", "/dev/nvme0n1"));
        assert!(!belongs_to("/dev/sdab", "/dev/sda"));
        assert!(!belongs_to("overlay", "/dev/sda"));
    }
}
