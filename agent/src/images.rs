//! Which images the node has: OCI archives from `--image-dir` imported into containerd
//! (again when they change), and images whose reference names a registry pulled — one
//! pull per image at a time, with back-off per image after a failure. The Instance
//! reconciler asks [`Images::check`] before it starts a container.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hypermesh_runtime::backoff::Backoff;
use tokio::sync::Mutex;

use hypermesh_containers::pull::{self, PullConfig};
use hypermesh_containers::{self as containers, ContainerdClient, image};

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
    /// Not in containerd, no archive provides it, and its name has no registry.
    NotFound,
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
    ) -> Images {
        Images {
            client,
            dir,
            seen: Mutex::new(HashMap::new()),
            pull_config,
            pulling: Mutex::new(HashMap::new()),
            failed: std::sync::Mutex::new(HashMap::new()),
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
            match image::import_archive(&self.client, &path).await {
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
        match self.ensure(name).await {
            Ok(()) => ImageState::Ready,
            Err(containers::Error::ImageNotFound(_)) if pull::is_pullable(name) => {
                let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                match failed.get(name) {
                    Some(f) if f.retry_at > std::time::Instant::now() => {
                        ImageState::BackOff(f.message.clone())
                    }
                    _ => ImageState::Pull,
                }
            }
            Err(containers::Error::ImageNotFound(_)) => ImageState::NotFound,
            Err(e) => {
                tracing::debug!(error = %e, "image lookup failed; retrying");
                ImageState::Down
            }
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
        match pull::pull(&self.client, &self.pull_config, name).await {
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
