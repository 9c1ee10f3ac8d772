//! Instance volumes on the host, handed to containers as bind mounts: an emptyDir is a
//! directory under `<state_dir>/volumes`, a secret volume is the Secret's keys written as
//! files (mode 0400, owned by the container's user as the host sees it, so a non-root or
//! user-namespaced container can read them) under `--secrets-dir`, which must be a tmpfs
//! so secrets never reach a disk, and a hostPath is checked to exist. When containers of
//! one Instance running as different users mount the same Secret, its files become
//! readable by every user of those containers (0444), as Kubernetes' default mode. An Instance's directories are named
//! `<namespace>_<name>_<uid>` in both places, so they are removed with the Instance and,
//! after an agent restart, recognised by uid and removed once the Instance is gone.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hypermesh_api::Resource;
use hypermesh_api::v1::{self, Instance, volume::Source};
use tokio::sync::Mutex;

use hypermesh_containers::container::BindMount;

mod sealed;
mod secret_files;

pub use sealed::SealedSecrets;

#[cfg(test)]
use secret_files::SECRET_FILE_MODE;
use secret_files::{memory_backed, private_dir, usable_key, write_secret_files};

/// Mode of an emptyDir: writable by any user the container runs as (as Kubernetes).
const EMPTY_DIR_MODE: u32 = 0o777;

/// Why a container's volumes could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A volume mount names a volume the Instance does not define.
    #[error("volume mount {0:?}: no volume of that name in spec.volumes")]
    Undefined(String),
    /// A volume sets none of emptyDir, hostPath or secret.
    #[error("volume {0:?}: set one of emptyDir, hostPath or secret")]
    NoSource(String),
    /// A mount path that is relative or climbs out with `..`.
    #[error("volume mount {volume:?}: mount path {path:?} must be absolute, without '..'")]
    MountPath { volume: String, path: String },
    /// A hostPath that is relative or climbs out with `..`.
    #[error("volume {volume:?}: hostPath {path:?} must be absolute, without '..'")]
    HostPathInvalid { volume: String, path: String },
    /// A hostPath that does not exist on this node.
    #[error("volume {volume:?}: hostPath {path:?} does not exist on this node")]
    HostPathMissing { volume: String, path: String },
    /// The Secret a secret volume names is not in the Instance's namespace.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// A Secret key that cannot be a file name.
    #[error("secret {secret:?}: key {key:?} cannot be used as a file name")]
    SecretKey { secret: String, key: String },
    /// The apiserver answered without a copy sealed to this node.
    #[error(
        "secret {0:?}: the apiserver sent no copy sealed to this node's ML-KEM key; \
         plaintext is never accepted (a plaintext --insecure-dev apiserver cannot tell \
         nodes apart, so it seals to none: run it with TLS and join the node; or the \
         apiserver is older than this agent)"
    )]
    SecretNotSealed(String),
    /// The sealed copy does not open with this node's key.
    #[error("secret {name:?}: {source}")]
    SecretOpen {
        name: String,
        #[source]
        source: hypermesh_trust::sealing::SealError,
    },
    /// An env var names a key the Secret does not have, or one that is not UTF-8.
    #[error("env {env:?}: secret {secret:?} has no key {key:?} holding UTF-8 text")]
    SecretEnvKey {
        env: String,
        secret: String,
        key: String,
    },
    /// `--secrets-dir` is not memory-backed.
    #[error(
        "secret volume {volume:?}: {} is not on tmpfs and secrets are never written to disk: \
         point the agent's --secrets-dir at a tmpfs",
        .dir.display()
    )]
    NotTmpfs { volume: String, dir: PathBuf },
    /// The Secret could not be read from the apiserver (retried).
    #[error("reading secret {name:?}: {source}")]
    Api {
        name: String,
        #[source]
        source: tonic::Status,
    },
    /// A host file or directory could not be inspected, created, written or removed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking file task panicked.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl VolumeError {
    /// True for failures worth retrying quietly (the apiserver unreachable), as opposed
    /// to ones the Instance's owner has to see and fix.
    pub fn is_transient(&self) -> bool {
        match self {
            VolumeError::Api { source, .. } => source.code() != tonic::Code::PermissionDenied,
            VolumeError::Task(_) => true,
            _ => false,
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
        move |source| VolumeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The volume directories of the Instances on this node.
pub struct InstanceVolumes {
    secrets: SealedSecrets,
    empty_dir_root: PathBuf,
    secrets_root: PathBuf,
    /// Serialises secret writes: two containers of one Instance start at once.
    writing: Mutex<()>,
}

impl InstanceVolumes {
    /// emptyDirs under `empty_dir_root`, secrets (read through `secrets`) under
    /// `secrets_root`; both are created when first needed.
    pub fn new(secrets: SealedSecrets, empty_dir_root: PathBuf, secrets_root: PathBuf) -> Self {
        InstanceVolumes {
            secrets,
            empty_dir_root,
            secrets_root,
            writing: Mutex::new(()),
        }
    }

    /// Sets up every volume `container` mounts (creating emptyDirs, checking hostPaths,
    /// writing Secrets afresh, their files owned by `owner`, the host uid and gid the
    /// container's user is) and returns its bind mounts.
    pub async fn mounts(
        &self,
        instance: &Instance,
        container: &v1::Container,
        owner: (u32, u32),
    ) -> Result<Vec<BindMount>, VolumeError> {
        let volumes = instance
            .spec
            .as_ref()
            .map(|s| s.volumes.as_slice())
            .unwrap_or(&[]);
        let mut mounts = Vec::with_capacity(container.volume_mounts.len());
        for m in &container.volume_mounts {
            let volume = volumes
                .iter()
                .find(|v| v.name == m.name)
                .ok_or_else(|| VolumeError::Undefined(m.name.clone()))?;
            if !clean_absolute(&m.mount_path) {
                return Err(VolumeError::MountPath {
                    volume: m.name.clone(),
                    path: m.mount_path.clone(),
                });
            }
            let (source, read_only) = match &volume.source {
                None => return Err(VolumeError::NoSource(volume.name.clone())),
                Some(Source::EmptyDir(_)) => {
                    (self.empty_dir(instance, &volume.name).await?, m.read_only)
                }
                Some(Source::HostPath(h)) => (host_path(&volume.name, &h.path).await?, m.read_only),
                Some(Source::Secret(s)) => (
                    self.secret(instance, &volume.name, &s.secret_name, owner)
                        .await?,
                    true,
                ),
            };
            mounts.push(BindMount {
                source,
                destination: m.mount_path.clone(),
                read_only,
            });
        }
        Ok(mounts)
    }

    /// Removes the Instance's emptyDirs and secret files (its containers must be gone).
    pub async fn remove(&self, instance: &Instance) -> Result<(), VolumeError> {
        let name = dir_name(instance);
        remove_dirs(vec![
            self.empty_dir_root.join(&name),
            self.secrets_root.join(&name),
        ])
        .await
    }

    /// The volume directories of Instances whose uid is not in `live`: left behind by
    /// Instances deleted while the agent was not watching.
    pub async fn stale(&self, live: &HashSet<String>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for root in [&self.empty_dir_root, &self.secrets_root] {
            let Ok(mut entries) = tokio::fs::read_dir(root).await else {
                continue;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name();
                let Some(uid) = name.to_str().and_then(uid_of_dir) else {
                    continue;
                };
                if !live.contains(uid) {
                    out.push(entry.path());
                }
            }
        }
        out
    }

    async fn empty_dir(&self, instance: &Instance, volume: &str) -> Result<PathBuf, VolumeError> {
        let dir = self.empty_dir_root.join(dir_name(instance)).join(volume);
        let path = dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(&path)
                .map_err(VolumeError::io(&path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(EMPTY_DIR_MODE))
                .map_err(VolumeError::io(&path))
        })
        .await??;
        Ok(dir)
    }

    /// The values of `container`'s env vars that take theirs from a Secret key
    /// (`valueFrom.secretKeyRef`), opened from the copy sealed to this node.
    pub async fn secret_env(
        &self,
        instance: &Instance,
        container: &v1::Container,
    ) -> Result<Vec<(String, String)>, VolumeError> {
        let mut values = Vec::new();
        let mut read: std::collections::BTreeMap<
            String,
            std::collections::BTreeMap<String, Vec<u8>>,
        > = Default::default();
        for env in &container.env {
            let Some(reference) = env.secret_key_ref.as_ref() else {
                continue;
            };
            if !read.contains_key(&reference.name) {
                let data = self
                    .secrets
                    .read(&instance.meta().namespace, &reference.name)
                    .await?;
                read.insert(reference.name.clone(), data);
            }
            let value = read
                .get(&reference.name)
                .and_then(|data| data.get(&reference.key))
                .and_then(|bytes| String::from_utf8(bytes.clone()).ok())
                .ok_or_else(|| VolumeError::SecretEnvKey {
                    env: env.name.clone(),
                    secret: reference.name.clone(),
                    key: reference.key.clone(),
                })?;
            values.push((env.name.clone(), value));
        }
        Ok(values)
    }

    async fn secret(
        &self,
        instance: &Instance,
        volume: &str,
        secret_name: &str,
        owner: (u32, u32),
    ) -> Result<PathBuf, VolumeError> {
        let data = self
            .secrets
            .read(&instance.meta().namespace, secret_name)
            .await?;
        if let Some(key) = data.keys().find(|k| !usable_key(k)) {
            return Err(VolumeError::SecretKey {
                secret: secret_name.to_string(),
                key: key.clone(),
            });
        }
        let root = self.secrets_root.clone();
        let dir = root.join(dir_name(instance)).join(volume);
        let volume = volume.to_string();
        let target = dir.clone();
        let _writing = self.writing.lock().await;
        tokio::task::spawn_blocking(move || {
            private_dir(&root)?;
            if !memory_backed(&root)? {
                return Err(VolumeError::NotTmpfs { volume, dir: root });
            }
            if let Some(parent) = target.parent() {
                private_dir(parent)?;
            }
            write_secret_files(&target, &data, owner)
        })
        .await??;
        Ok(dir)
    }
}

/// `<namespace>_<name>_<uid>`: namespaces and names are DNS names, so the uid is what
/// follows the last `_`.
fn dir_name(instance: &Instance) -> String {
    let m = instance.meta();
    format!("{}_{}_{}", m.namespace, m.name, m.uid)
}

/// The uid in a directory name made by [`dir_name`].
fn uid_of_dir(name: &str) -> Option<&str> {
    let (rest, uid) = name.rsplit_once('_')?;
    (rest.contains('_') && !uid.is_empty()).then_some(uid)
}

/// Absolute and without `.` or `..` components.
fn clean_absolute(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|part| part == ".." || part == ".")
}

/// Checks that a hostPath is usable: absolute, no `..`, and present on this node.
async fn host_path(volume: &str, path: &str) -> Result<PathBuf, VolumeError> {
    if !clean_absolute(path) {
        return Err(VolumeError::HostPathInvalid {
            volume: volume.to_string(),
            path: path.to_string(),
        });
    }
    match tokio::fs::metadata(path).await {
        Ok(_) => Ok(PathBuf::from(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(VolumeError::HostPathMissing {
            volume: volume.to_string(),
            path: path.to_string(),
        }),
        Err(source) => Err(VolumeError::Io {
            path: PathBuf::from(path),
            source,
        }),
    }
}

/// Removes directories and everything in them (symlinks inside are removed, never
/// followed); missing ones are fine.
pub async fn remove_dirs(dirs: Vec<PathBuf>) -> Result<(), VolumeError> {
    tokio::task::spawn_blocking(move || {
        for dir in dirs {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(VolumeError::Io { path: dir, source }),
            }
        }
        Ok(())
    })
    .await?
}

#[cfg(test)]
mod tests;
