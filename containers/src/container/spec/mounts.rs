//! A container's mounts: the kernel file systems every container gets, then its volumes
//! as bind mounts, parents before children. Volumes are bound with `bind`, not `rbind`:
//! a host directory's submounts (another disk, `/proc`, a secret tmpfs) stay out of the
//! container, which sees only the directory's own file system.

use serde_json::{Value, json};

use crate::Error;
use crate::container::{BindMount, ContainerConfig};

/// The kernel file systems every container gets, then `config`'s volumes.
pub fn mounts(config: &ContainerConfig) -> Result<Vec<Value>, Error> {
    let mut mounts = default_mounts(config.security.privileged);
    for m in sorted_by_depth(&config.mounts) {
        if !m.destination.starts_with('/') || !m.source.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "{}: bind mount {} -> {:?} needs absolute paths",
                config.id,
                m.source.display(),
                m.destination
            )));
        }
        let access = if m.read_only { "ro" } else { "rw" };
        let mut options = vec!["bind", "rprivate", "nosuid", "nodev", access];
        // A flag of the source's mount that a user namespace locks must be kept on the
        // bind mount, or its read-only remount is refused.
        if source_is_noexec(&m.source) {
            options.push("noexec");
        }
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": options,
        }));
    }
    Ok(mounts)
}

/// Whether `path` lives on a mount with `noexec` (unknown paths: no).
fn source_is_noexec(path: &std::path::Path) -> bool {
    rustix::fs::statvfs(path)
        .is_ok_and(|s| s.f_flag.contains(rustix::fs::StatVfsMountFlags::NOEXEC))
}

/// The kernel file systems every container gets (`/sys` writable only when privileged).
fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys_access = if privileged { "rw" } else { "ro" };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", sys_access]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]
}

/// Parents before children (fewer path components first), so a volume mounted below
/// another one is not hidden by it; the given order otherwise.
fn sorted_by_depth(mounts: &[BindMount]) -> Vec<&BindMount> {
    let mut sorted: Vec<&BindMount> = mounts.iter().collect();
    sorted.sort_by_key(|m| {
        m.destination
            .split('/')
            .filter(|part| !part.is_empty())
            .count()
    });
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::spec::runtime_spec;
    use crate::container::spec::tests::{busybox, config};

    #[test]
    fn volumes_are_non_recursive_bind_mounts_parents_first() {
        let mut c = config();
        let bind = |source: &str, destination: &str, read_only| BindMount {
            source: source.into(),
            destination: destination.into(),
            read_only,
        };
        c.mounts = vec![
            bind("/host/b", "/data/cache", false),
            bind("/host/a", "/data", true),
        ];
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        let mounts = spec["mounts"].as_array().expect("mounts");
        let binds: Vec<&Value> = mounts.iter().filter(|m| m["type"] == "bind").collect();
        assert_eq!(
            binds,
            [
                &json!({"destination": "/data", "type": "bind", "source": "/host/a",
                        "options": ["bind", "rprivate", "nosuid", "nodev", "ro"]}),
                &json!({"destination": "/data/cache", "type": "bind", "source": "/host/b",
                        "options": ["bind", "rprivate", "nosuid", "nodev", "rw"]}),
            ]
        );
        assert!(
            !binds.iter().any(|m| m["options"]
                .as_array()
                .is_some_and(|o| o.contains(&json!("rbind")))),
            "never recursive"
        );
        assert!(mounts.iter().any(|m| m["destination"] == "/proc"));
        c.mounts = vec![bind("host", "/data", false)];
        assert!(runtime_spec(&c, &busybox()).is_err());
    }
}
