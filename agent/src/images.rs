//! Which images the node has: OCI archives from `--image-dir` imported into containerd
//! (again when they change), and images whose reference names a registry pulled — one
//! pull per image at a time, with back-off per image after a failure. Local names
//! ([`is_local`]: the `hypermesh.local` registry, or a repository imported from an
//! archive) are never pulled, so a typo'd tag fails at once, listing the imported images.
//! The Instance reconciler asks [`Images::check`] before it starts a container.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hypermesh_runtime::backoff::Backoff;
use tokio::sync::Mutex;

use hypermesh_containers::pull::{self, PullConfig};
use hypermesh_containers::reference::Reference;
use hypermesh_containers::{self as containers, ContainerdClient, image};

use crate::runtime_latency::{Operation, RuntimeLatency};

/// The registry host of images that only come from OCI archives on the node
/// (`scripts/build-test-image.sh` builds `hypermesh.local/busybox:latest`): never pulled.
pub(crate) const LOCAL_REGISTRY: &str = "hypermesh.local";
/// Most imported image names an `ImageNotFound` message lists.
const LISTED_IMAGES: usize = 10;

/// Whether `name` is a local image: its registry is [`LOCAL_REGISTRY`], or images of its
/// repository (same registry and path) were imported from archives here, so a
/// missing tag is a typo, not something to fetch.
pub(crate) fn is_local(name: &str, imported: &[String]) -> bool {
    let Ok(wanted) = Reference::parse(name) else {
        return false;
    };
    if wanted.registry.as_deref() == Some(LOCAL_REGISTRY) {
        return true;
    }
    imported.iter().any(|i| {
        Reference::parse(i)
            .is_ok_and(|r| r.registry == wanted.registry && r.repository == wanted.repository)
    })
}

/// `image NAME not found locally (imported images: a, b)`, listing at most
/// [`LISTED_IMAGES`].
pub(crate) fn not_found_message(name: &str, imported: &[String]) -> String {
    let listed = if imported.is_empty() {
        "none".to_string()
    } else {
        let mut listed = imported
            .iter()
            .take(LISTED_IMAGES)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if imported.len() > LISTED_IMAGES {
            listed.push_str(&format!(" and {} more", imported.len() - LISTED_IMAGES));
        }
        listed
    };
    format!("image {name} not found locally (imported images: {listed})")
}

/// How often the image directory is looked at for new archives.
pub(crate) const IMAGE_RESCAN: Duration = Duration::from_secs(10);
/// How long an archive that failed to import is left alone (unless it changes).
const IMPORT_RETRY: Duration = Duration::from_secs(30);

/// Waits before pulling an image again after failed pulls: 5 s doubling to 5 min.
const PULL_BACKOFF: Backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));

/// Brings images into containerd: imports OCI archives from the image directory, each
/// again only when it changed (or, after a failed import, after [`IMPORT_RETRY`]), and
/// pulls images whose reference names a registry, one pull per image at a time, backing
/// off per image after a failure.
pub(crate) struct Images {
    client: ContainerdClient,
    dir: Option<PathBuf>,
    /// Archive → its mtime when last tried, and when it failed (none: imported).
    seen: Mutex<HashMap<PathBuf, (SystemTime, Option<std::time::Instant>)>>,
    pull_config: PullConfig,
    /// Image → held while it is being pulled, so concurrent workers pull it once.
    pulling: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Image → its last failed pull.
    failed: std::sync::Mutex<HashMap<String, PullFailure>>,
    /// Times imports and pulls.
    latency: RuntimeLatency,
}

/// A failed pull of one image: why, and when it may be tried again.
struct PullFailure {
    message: String,
    retry_at: std::time::Instant,
    delay: Duration,
}

/// What the image-wait loop learns about one container's image.
pub(crate) enum ImageState {
    /// In containerd, unpacked.
    Ready,
    /// Not in containerd and no archive provides it; its name has no registry, or names
    /// a local image (see [`is_local`]). Carries the names of the images imported from
    /// archives, for the message.
    NotFound(Vec<String>),
    /// Its name has a registry: pull it now.
    Pull,
    /// The last pull failed (the message says why); waiting before the next one.
    BackOff(String),
    /// containerd is unreachable: retry, change nothing.
    Down,
}

/// How a pull ended.
pub(crate) enum Pulled {
    Done,
    Failed(String),
    /// containerd became unreachable: retry, change nothing.
    Down,
}

impl Images {
    /// Images for `client`'s containerd, from the archives in `dir` and the registries
    /// `pull_config` describes.
    pub(crate) fn new(
        client: ContainerdClient,
        dir: Option<PathBuf>,
        pull_config: PullConfig,
        latency: RuntimeLatency,
    ) -> Images {
        Images {
            client,
            dir,
            seen: Mutex::new(HashMap::new()),
            pull_config,
            pulling: Mutex::new(HashMap::new()),
            failed: std::sync::Mutex::new(HashMap::new()),
            latency,
        }
    }

    /// Imports every archive in the directory not imported at its current mtime.
    pub(crate) async fn scan(&self) {
        let Some(dir) = &self.dir else { return };
        let mut seen = self.seen.lock().await;
        let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
            return;
        };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let path = entry.path();
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            let Ok(modified) = meta.modified() else {
                continue;
            };
            let settled = seen.get(&path).is_some_and(|(mtime, failed)| {
                *mtime == modified && failed.is_none_or(|at| at.elapsed() < IMPORT_RETRY)
            });
            if !meta.is_file() || settled {
                continue;
            }
            let imported = self
                .latency
                .time(
                    Operation::Import,
                    image::import_archive(&self.client, &path),
                )
                .await;
            match imported {
                Ok(images) => {
                    for i in images {
                        tracing::info!(image = %i.name, archive = %path.display(), "image imported");
                    }
                    seen.insert(path, (modified, None));
                }
                Err(e @ containers::Error::Connect { .. }) => {
                    tracing::warn!(error = %e, "image import: containerd unreachable");
                }
                Err(e) if e.code() == Some(tonic::Code::Unavailable) => {
                    tracing::warn!(error = %e, "image import: containerd unreachable");
                }
                Err(e) => {
                    tracing::warn!(archive = %path.display(), error = %e, "image import failed");
                    seen.insert(path, (modified, Some(std::time::Instant::now())));
                }
            }
        }
    }

    /// Ok when the image is in containerd (importing new archives first if needed).
    async fn ensure(&self, name: &str) -> Result<(), containers::Error> {
        match image::resolve(&self.client, name).await {
            Err(containers::Error::ImageNotFound(_)) => {
                self.scan().await;
                image::resolve(&self.client, name).await.map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// Whether image `name` is ready, to be pulled, backing off or missing.
    pub(crate) async fn check(&self, name: &str) -> ImageState {
        let imported = match self.ensure(name).await {
            Ok(()) => return ImageState::Ready,
            Err(containers::Error::ImageNotFound(_)) => {
                match image::archive_images(&self.client).await {
                    Ok(imported) => imported,
                    Err(e) => {
                        tracing::debug!(error = %e, "listing imported images failed; retrying");
                        return ImageState::Down;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "image lookup failed; retrying");
                return ImageState::Down;
            }
        };
        // A local name (a typo'd tag of an imported image, say) is never looked up in DNS
        // or a registry.
        if is_local(name, &imported) || !pull::is_pullable(name) {
            return ImageState::NotFound(imported);
        }
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match failed.get(name) {
            Some(f) if f.retry_at > std::time::Instant::now() => {
                ImageState::BackOff(f.message.clone())
            }
            _ => ImageState::Pull,
        }
    }

    /// Pulls image `name` unless another worker just did; a failure starts (or
    /// doubles) the image's back-off.
    pub(crate) async fn pull(&self, name: &str) -> Pulled {
        let gate = self
            .pulling
            .lock()
            .await
            .entry(name.to_string())
            .or_default()
            .clone();
        let _pulling = gate.lock().await;
        if image::resolve(&self.client, name).await.is_ok() {
            return Pulled::Done;
        }
        let started = std::time::Instant::now();
        let pulled = self
            .latency
            .time(
                Operation::Pull,
                pull::pull(&self.client, &self.pull_config, name),
            )
            .await;
        match pulled {
            Ok(pulled) => {
                tracing::info!(
                    image = name,
                    manifest = %pulled.manifest,
                    seconds = started.elapsed().as_secs_f64(),
                    "image pulled"
                );
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                Pulled::Done
            }
            Err(e)
                if e.containerd()
                    .is_some_and(containers::Error::is_unreachable) =>
            {
                tracing::debug!(image = name, error = %e, "pull: containerd unreachable; retrying");
                Pulled::Down
            }
            Err(e) => {
                let message = e.to_string();
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                let delay = failed
                    .get(name)
                    .map_or(PULL_BACKOFF.initial, |f| PULL_BACKOFF.after(f.delay));
                tracing::warn!(image = name, error = %message, retry_in = ?delay, "image pull failed");
                failed.insert(
                    name.to_string(),
                    PullFailure {
                        message: message.clone(),
                        retry_at: std::time::Instant::now() + delay,
                        delay,
                    },
                );
                Pulled::Failed(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_are_never_pulled() {
        let imported = vec![
            "hypermesh.local/busybox:latest".to_string(),
            "registry.example.com/team/app:1.0".to_string(),
        ];
        // The local registry, whatever the repository.
        assert!(is_local("hypermesh.local/busybox:lates", &imported));
        assert!(is_local("hypermesh.local/busybx:latest", &[]));
        // Another tag of a repository imported from an archive.
        assert!(is_local("registry.example.com/team/app:1.1", &imported));
        // A registry image nothing was imported for is pulled.
        assert!(!is_local("registry.example.com/team/other:1.0", &imported));
        assert!(!is_local("ghcr.io/team/app:1.0", &imported));
    }

    #[test]
    fn the_message_lists_what_was_imported() {
        assert_eq!(
            not_found_message(
                "hypermesh.local/busybox:lates",
                &["hypermesh.local/busybox:latest".into()]
            ),
            "image hypermesh.local/busybox:lates not found locally (imported images: hypermesh.local/busybox:latest)"
        );
        assert_eq!(
            not_found_message("x", &[]),
            "image x not found locally (imported images: none)"
        );
        let many: Vec<String> = (0..12).map(|i| format!("img{i}")).collect();
        assert!(not_found_message("x", &many).ends_with("img9 and 2 more)"));
    }
}
