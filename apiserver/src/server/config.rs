//! How the apiserver runs ([`Config`], [`TlsSettings`]) and the client configurations
//! it writes into its data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::registry::RegistryOptions;
use crate::store::backend::StoreBackend;

/// How the apiserver runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the embedded store keeps `store.redb`, and client configurations.
    pub data_dir: PathBuf,
    /// The store: embedded redb (default) or etcd.
    pub store: StoreBackend,
    /// Largest object accepted, in encoded bytes.
    pub max_object_bytes: usize,
    /// How often watches asking for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Where to serve `/metrics` and `/healthz` over HTTP; `None` disables them, and
    /// request, watch and handshake metrics are then not recorded at all.
    pub metrics_addr: Option<SocketAddr>,
    /// TLS with client certificates; `None` serves plaintext (`--insecure-dev`).
    pub tls: Option<TlsSettings>,
    /// The audit log (`--audit-log`); `None` records nothing.
    pub audit: Option<crate::audit::AuditSettings>,
    /// Proof challenges: work difficulty, space samples, lifetimes (a cluster setting:
    /// give every apiserver the same).
    pub proofs: crate::proof_ledger::ProofSettings,
    /// The watch cache (`--watch-cache`).
    pub watch_cache: crate::watch_cache::WatchCacheOptions,
    /// Bytes of writes that may wait for the store before new ones get
    /// `RESOURCE_EXHAUSTED` (`--write-queue-mib`).
    pub write_queue_bytes: usize,
    /// Requests per second per identity (`--rate-limit-qps`; 0 disables).
    pub rate_limit_qps: f64,
    /// Burst of the per-identity rate limit (`--rate-limit-burst`).
    pub rate_limit_burst: u32,
    /// Largest image archive one upload to a node may carry (`--max-image-upload-mib`).
    pub max_image_upload_bytes: u64,
    /// The key file sealing Secrets and the CA key (`--encryption-key-file`); when
    /// unset, the TLS settings' file, else `<data-dir>/encryption.key`.
    pub encryption_key_file: Option<PathBuf>,
}

/// How the server runs TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// The key file sealing the CA key (and Secrets); default `<data-dir>/encryption.key`.
    /// Keep it elsewhere (another disk, a secret mount) for the sealing to mean more.
    pub encryption_key_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the serving certificate (`--tls-san`).
    pub extra_names: Vec<String>,
}

/// The admin client configuration written into the data directory.
pub const ADMIN_CONFIG: &str = "admin.config";
/// The scheduler's client configuration written into the data directory.
pub const SCHEDULER_CONFIG: &str = "scheduler.config";
/// The in-process controllers' client configuration in the data directory.
pub const CONTROLLERS_CONFIG: &str = "controllers.config";

impl Config {
    /// Defaults with the store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let registry = RegistryOptions::default();
        Config {
            data_dir: data_dir.into(),
            store: StoreBackend::default(),
            max_object_bytes: registry.max_object_bytes,
            bookmark_interval: registry.bookmark_interval,
            shutdown_grace: Duration::from_secs(5),
            metrics_addr: None,
            tls: None,
            audit: None,
            proofs: crate::proof_ledger::ProofSettings::default(),
            watch_cache: Default::default(),
            write_queue_bytes: 64 * 1024 * 1024,
            rate_limit_qps: 200.0,
            rate_limit_burst: 400,
            max_image_upload_bytes: registry.max_image_upload_bytes,
            encryption_key_file: None,
        }
    }

    /// The key file sealing Secrets (and, with TLS, the CA key).
    pub fn encryption_key_path(&self) -> PathBuf {
        self.encryption_key_file
            .clone()
            .or_else(|| {
                self.tls
                    .as_ref()
                    .and_then(|t| t.encryption_key_file.clone())
            })
            .unwrap_or_else(|| self.data_dir.join("encryption.key"))
    }

    /// The same with TLS on (default settings).
    pub fn with_tls(mut self) -> Self {
        self.tls = Some(TlsSettings::default());
        self
    }
}
