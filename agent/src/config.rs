//! The agent's configuration: the `hm-agent` command line (each flag also read from an
//! `HM_…` variable) and the [`Config`] that [`crate::run`] takes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hypermesh_api::quantity::Quantity;
use hypermesh_api::v1::PrivacyLevel;

/// Why a flag value was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--label` without `=`.
    #[error("label {0:?}: expected KEY=VALUE")]
    Label(String),
    /// `--reserve` entry that is not `resource=quantity`.
    #[error("reserve {0:?}: expected e.g. cpu=500m,memory=512Mi")]
    Reserve(String),
    /// `--reserve` quantity that does not parse.
    #[error("reserve {entry:?}: {source}")]
    ReserveQuantity {
        entry: String,
        #[source]
        source: hypermesh_api::quantity::QuantityError,
    },
    /// `--privacy` not one of the PrivacyLevel names.
    #[error("privacy {0:?}: expected PRIVATE, PRIVATE_NETWORK, P2P, PUBLIC_NETWORK or FULL_PUBLIC")]
    Privacy(String),
    /// A duration like `2s`, `500ms`, `1m` that does not parse.
    #[error("duration {0:?}: expected e.g. 2s, 500ms or 1m")]
    Duration(String),
    /// A negative `--pids-limit`.
    #[error("pids limit {0}: expected a positive number, or 0 for no limit")]
    PidsLimit(i64),
    /// `--log-max-size` that is not a positive byte quantity.
    #[error("log-max-size {0:?}: expected a size such as 10Mi")]
    LogMaxSize(String),
    /// A path flag that cannot be made absolute (the working directory is gone).
    #[error("path {0:?}: {1}")]
    Path(PathBuf, std::io::Error),
    /// `--storage-commit` that is not a size of 1Ki to 1Gi.
    #[error("storage-commit {0:?}: expected a size from 1Ki to 1Gi, such as 64Mi")]
    StorageCommit(String),
    /// No node name given and the hostname could not be read.
    #[error("no --node-name given and the hostname is unknown")]
    NodeName,
}

/// What the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Apiserver URL, e.g. `https://127.0.0.1:7443` (`http://` for `--insecure-dev`).
    pub server: String,
    /// Node name (default: the hostname).
    pub node_name: String,
    /// Identity keys and other state live here.
    pub state_dir: PathBuf,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// Labels on the Node.
    pub labels: BTreeMap<String, String>,
    /// Resources held back from Instances (`cpu`, `memory`, ...).
    pub reserved: BTreeMap<String, Quantity>,
    /// Privacy level of every Asset once the node holds an admin-issued stake (before,
    /// its Assets are offered at UNTRUSTED only).
    pub privacy: PrivacyLevel,
    /// Most bytes of each storage device offered (and committed: a file of random bytes
    /// of that size is kept in `<state_dir>/space` and answered from in space proofs).
    pub storage_commit_bytes: u64,
    /// How often the Lease is renewed and conditions are refreshed.
    pub heartbeat_interval: Duration,
    /// The Lease's duration.
    pub lease_duration: Duration,
    /// How often hardware is detected again.
    pub detect_interval: Duration,
    /// How often live usage is reported for `hmctl top`.
    pub usage_interval: Duration,
    /// Instances this node accepts.
    pub max_instances: u32,
    /// MemoryPressure when available memory falls below this percent of total.
    pub memory_pressure_percent: f64,
    /// DiskPressure when the root filesystem's free space falls below this percent.
    pub disk_pressure_percent: f64,
    /// Host file locations.
    pub paths: crate::detect::HostPaths,
    /// Where to serve `/metrics` (none: no metrics server).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// OCI image archives imported into containerd at start and when they appear.
    pub image_dir: Option<PathBuf>,
    /// Per-Instance log files (none: `<state_dir>/logs`).
    pub log_dir: Option<PathBuf>,
    /// First back-off before restarting a failed container (doubles up to
    /// [`MAX_RESTART_BACKOFF`]).
    pub restart_backoff: Duration,
    /// Most processes in each container (its cgroup's `pids.max`); none: unlimited.
    pub pids_limit: Option<i64>,
    /// Where secret volumes are written: must be on tmpfs (or ramfs) so secrets never
    /// reach a disk.
    pub secrets_dir: PathBuf,
    /// The `hm-logger` program containerd starts for each container's output.
    pub logger: PathBuf,
    /// A container log is rotated when it would grow past this many bytes.
    pub log_max_bytes: u64,
    /// Log files kept per container run (the live one included).
    pub log_max_files: u32,
    /// How images are pulled from registries (credentials, plain-http hosts, extra CA).
    pub pull: hypermesh_containers::pull::PullConfig,
    /// Bootstrap token for the first join (`hmctl token create`).
    pub join_token: Option<String>,
    /// `sha256:<hex>` of the cluster CA's public key, pinned on first contact.
    pub ca_cert_hash: Option<String>,
    /// The Kubernetes API to read this node's Kubernetes Node from (labels and taints
    /// mirrored, see `kube_node`); `None`: not in a pod, or `--kubernetes-node=off`.
    pub kubernetes: Option<crate::kube_node::KubernetesApi>,
    /// How often the Kubernetes Node is read again.
    pub kubernetes_sync_interval: Duration,
}

/// Storage offered per device when `--storage-commit` is not given.
pub const DEFAULT_STORAGE_COMMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The longest back-off between container restarts.
pub const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);

/// The containerd socket when neither the flag nor `CONTAINERD_ADDRESS` says otherwise.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// Processes per container when `--pids-limit` is not given.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// Where secret volumes go when `--secrets-dir` is not given (`/run` is a tmpfs on
/// systemd hosts).
pub const DEFAULT_SECRETS_DIR: &str = "/run/hypermesh/secrets";

impl Config {
    /// Defaults for everything but the server, node name and state dir.
    pub fn new(
        server: impl Into<String>,
        node_name: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Config {
            server: server.into(),
            node_name: node_name.into(),
            state_dir: state_dir.into(),
            containerd_socket: DEFAULT_CONTAINERD_SOCKET.into(),
            labels: BTreeMap::new(),
            reserved: BTreeMap::new(),
            privacy: PrivacyLevel::PublicNetwork,
            storage_commit_bytes: DEFAULT_STORAGE_COMMIT_BYTES,
            heartbeat_interval: Duration::from_secs(2),
            lease_duration: Duration::from_secs(10),
            detect_interval: Duration::from_secs(60),
            usage_interval: Duration::from_secs(10),
            max_instances: 110,
            memory_pressure_percent: 5.0,
            disk_pressure_percent: 10.0,
            paths: crate::detect::HostPaths::default(),
            metrics_addr: None,
            image_dir: None,
            log_dir: None,
            restart_backoff: Duration::from_secs(10),
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            secrets_dir: DEFAULT_SECRETS_DIR.into(),
            logger: default_logger(),
            log_max_bytes: 10 * 1024 * 1024,
            log_max_files: 5,
            pull: Default::default(),
            join_token: None,
            ca_cert_hash: None,
            kubernetes: None,
            kubernetes_sync_interval: Duration::from_secs(30),
        }
    }

    /// Where emptyDir volumes go: `<state_dir>/volumes`.
    pub fn volumes_dir(&self) -> PathBuf {
        self.state_dir.join("volumes")
    }

    /// Where per-Instance log files go.
    pub fn log_dir(&self) -> PathBuf {
        self.log_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("logs"))
    }
}

/// `hm-logger` beside the running program (where `cargo build` and the packages put it).
pub fn default_logger() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hm-logger")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/hm-logger"))
}

/// `hm-agent` flags.
#[derive(Debug, clap::Parser)]
#[command(
    name = "hm-agent",
    version,
    about = "HyperMesh agent: detects this host's hardware, registers its Node and Assets, heartbeats."
)]
pub struct Args {
    /// Apiserver URL: https://HOST:PORT (http:// only for an --insecure-dev server);
    /// repeat it (or separate with commas) for several apiservers of one cluster.
    #[arg(
        long,
        env = "HM_SERVER",
        default_value = "https://127.0.0.1:7443",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
    /// Node name (default: the hostname).
    #[arg(long, env = "HM_NODE_NAME")]
    pub node_name: Option<String>,
    /// State directory (node identity keys).
    #[arg(long, env = "HM_STATE_DIR", default_value = "/var/lib/hypermesh/agent")]
    pub state_dir: PathBuf,
    /// containerd socket.
    #[arg(long, env = "CONTAINERD_ADDRESS", default_value = DEFAULT_CONTAINERD_SOCKET)]
    pub containerd_socket: PathBuf,
    /// Node label KEY=VALUE (repeatable, or comma-separated).
    #[arg(long = "label", env = "HM_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Reserved for the system, e.g. cpu=500m,memory=512Mi.
    #[arg(long, env = "HM_RESERVE", default_value = "")]
    pub reserve: String,
    /// Privacy level of this node's Assets (once an admin issued it a stake; until then
    /// UNTRUSTED).
    #[arg(long, env = "HM_PRIVACY", default_value = "PUBLIC_NETWORK")]
    pub privacy: String,
    /// Storage offered per device, kept as a committed file of random bytes in
    /// <state-dir>/space (at most 1Gi).
    #[arg(long, env = "HM_STORAGE_COMMIT", default_value = "64Mi")]
    pub storage_commit: String,
    /// Lease renewal and condition refresh period.
    #[arg(long, env = "HM_HEARTBEAT_INTERVAL", default_value = "2s")]
    pub heartbeat_interval: String,
    /// Lease duration.
    #[arg(long, env = "HM_LEASE_DURATION", default_value = "10s")]
    pub lease_duration: String,
    /// Hardware re-detection period.
    #[arg(long, env = "HM_DETECT_INTERVAL", default_value = "60s")]
    pub detect_interval: String,
    /// Live usage (cpu, memory of the host and each Instance) report period, for
    /// `hmctl top`.
    #[arg(long, env = "HM_USAGE_INTERVAL", default_value = "10s")]
    pub usage_interval: String,
    /// Most Instances this node runs.
    #[arg(long, env = "HM_MAX_INSTANCES", default_value_t = 110)]
    pub max_instances: u32,
    /// MemoryPressure threshold: available memory below this percent of total.
    #[arg(long, env = "HM_MEMORY_PRESSURE_PERCENT", default_value_t = 5.0)]
    pub memory_pressure_percent: f64,
    /// DiskPressure threshold: root filesystem free space below this percent.
    #[arg(long, env = "HM_DISK_PRESSURE_PERCENT", default_value_t = 10.0)]
    pub disk_pressure_percent: f64,
    /// Serve Prometheus metrics on HOST:PORT (`/metrics`, `/healthz`).
    #[arg(long, env = "HM_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Directory of OCI image archives, imported at start and when they appear.
    #[arg(long, env = "HM_IMAGE_DIR")]
    pub image_dir: Option<PathBuf>,
    /// Per-Instance container log files (default: <state-dir>/logs).
    #[arg(long, env = "HM_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// First back-off before restarting a failed container (doubles up to 5m).
    #[arg(long, env = "HM_RESTART_BACKOFF", default_value = "10s")]
    pub restart_backoff: String,
    /// Most processes in each container (0: unlimited).
    #[arg(long, env = "HM_PIDS_LIMIT", default_value_t = DEFAULT_PIDS_LIMIT)]
    pub pids_limit: i64,
    /// Directory for secret volumes; must be on tmpfs so secrets never reach a disk.
    #[arg(long, env = "HM_SECRETS_DIR", default_value = DEFAULT_SECRETS_DIR)]
    pub secrets_dir: PathBuf,
    /// The log writer containerd starts per container (default: `hm-logger` beside
    /// `hm-agent`).
    #[arg(long, env = "HM_LOGGER")]
    pub logger: Option<PathBuf>,
    /// Rotate a container's log when it would grow past this size.
    #[arg(long, env = "HM_LOG_MAX_SIZE", default_value = "10Mi")]
    pub log_max_size: String,
    /// Log files kept per container run, the live one included.
    #[arg(long, env = "HM_LOG_MAX_FILES", default_value_t = 5)]
    pub log_max_files: u32,
    /// Registry credentials: a docker config.json (`{"auths": {"HOST:PORT": {"auth":
    /// base64("user:password")}}}`), read at every pull.
    #[arg(long, env = "HM_REGISTRY_AUTH", value_name = "FILE")]
    pub registry_auth: Option<PathBuf>,
    /// A registry (HOST:PORT, as in image names) reached over plain http instead of
    /// https (repeatable, or comma-separated).
    #[arg(
        long = "insecure-registry",
        env = "HM_INSECURE_REGISTRIES",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Extra PEM root certificates trusted for https registries (besides the system's).
    #[arg(long, env = "HM_REGISTRY_CA", value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,
    /// Bootstrap token for joining the cluster the first time (`hmctl token create`
    /// prints it); later starts use the certificate kept in <state-dir>/pki.
    #[arg(long, env = "HM_JOIN_TOKEN", value_name = "TOKEN")]
    pub join_token: Option<String>,
    /// The cluster CA's pin, sha256:<hex of its public key> (`hmctl token create`
    /// prints it): the agent talks only to a server whose CA matches.
    #[arg(long, env = "HM_CA_CERT_HASH", value_name = "sha256:HEX")]
    pub ca_cert_hash: Option<String>,
    /// In a Kubernetes pod with a service-account token (the Helm chart's DaemonSet),
    /// mirror the labels and taints of the Kubernetes Node named --node-name onto this
    /// Node: auto (when in a pod) or off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
    pub kubernetes_node: String,
    /// How often the Kubernetes Node is read again (e.g. 30s).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub kubernetes_sync_interval: String,
}

impl Args {
    /// Checks every flag and builds the [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let node_name = match self.node_name {
            Some(n) if !n.is_empty() => n,
            _ => sysinfo::System::host_name()
                .ok()
                .filter(|h| !h.is_empty())
                .ok_or(ConfigError::NodeName)?
                .to_lowercase(),
        };
        // Paths are handed to containerd and its shims (log files, mounts), which do not
        // share our working directory: make them absolute once, here.
        let mut config = Config::new(
            hypermesh_api::client::join_urls(&self.server),
            node_name,
            absolute(self.state_dir)?,
        );
        config.containerd_socket = absolute(self.containerd_socket)?;
        config.labels = parse_labels(&self.labels)?;
        config.reserved = parse_reserve(&self.reserve)?;
        config.privacy = PrivacyLevel::from_str_name(&self.privacy)
            .filter(|p| *p != PrivacyLevel::Unspecified)
            .ok_or_else(|| ConfigError::Privacy(self.privacy.clone()))?;
        config.storage_commit_bytes = parse_commit(&self.storage_commit)?;
        config.heartbeat_interval = parse_duration(&self.heartbeat_interval)?;
        config.lease_duration = parse_duration(&self.lease_duration)?;
        config.detect_interval = parse_duration(&self.detect_interval)?;
        config.usage_interval = parse_duration(&self.usage_interval)?;
        config.max_instances = self.max_instances;
        config.memory_pressure_percent = self.memory_pressure_percent;
        config.disk_pressure_percent = self.disk_pressure_percent;
        config.metrics_addr = self.metrics_addr;
        config.image_dir = self.image_dir.map(absolute).transpose()?;
        config.log_dir = self.log_dir.map(absolute).transpose()?;
        config.restart_backoff = parse_duration(&self.restart_backoff)?;
        config.pids_limit = match self.pids_limit {
            0 => None,
            n if n > 0 => Some(n),
            n => return Err(ConfigError::PidsLimit(n)),
        };
        config.secrets_dir = absolute(self.secrets_dir)?;
        if let Some(logger) = self.logger {
            config.logger = absolute(logger)?;
        }
        config.log_max_bytes = self
            .log_max_size
            .parse::<Quantity>()
            .ok()
            .map(|q| q.units_ceil())
            .and_then(|b| u64::try_from(b).ok())
            .filter(|b| *b > 0)
            .ok_or_else(|| ConfigError::LogMaxSize(self.log_max_size.clone()))?;
        config.log_max_files = self.log_max_files.max(1);
        config.pull = hypermesh_containers::pull::PullConfig {
            auth_file: self.registry_auth,
            insecure: self
                .insecure_registries
                .into_iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            ca_file: self.registry_ca,
        };
        config.join_token = self.join_token.filter(|t| !t.is_empty());
        config.ca_cert_hash = self.ca_cert_hash.filter(|h| !h.is_empty());
        config.kubernetes_sync_interval = parse_duration(&self.kubernetes_sync_interval)?;
        if self.kubernetes_node == "auto" {
            config.kubernetes = crate::kube_node::KubernetesApi::in_cluster();
        }
        Ok(config)
    }
}

/// `path` made absolute against the working directory (not resolving links).
fn absolute(path: PathBuf) -> Result<PathBuf, ConfigError> {
    std::path::absolute(&path).map_err(|e| ConfigError::Path(path, e))
}

/// `k=v` strings → a map.
pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| ConfigError::Label(s.clone()))
        })
        .collect()
}

/// `64Mi` → bytes, rounded down to whole KiB, from 1Ki to 1Gi.
pub fn parse_commit(text: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::StorageCommit(text.to_string());
    let q: Quantity = text.trim().parse().map_err(|_| bad())?;
    let bytes = u64::try_from(q.units_ceil()).map_err(|_| bad())? / 1024 * 1024;
    if bytes == 0 || bytes > hypermesh_trust::proof::commitment::MAX_COMMITMENT_BYTES {
        return Err(bad());
    }
    Ok(bytes)
}

/// `cpu=500m,memory=512Mi` → a map of quantities.
pub fn parse_reserve(text: &str) -> Result<BTreeMap<String, Quantity>, ConfigError> {
    let mut out = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (k, v) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::Reserve(entry.to_string()))?;
        let q = v
            .trim()
            .parse::<Quantity>()
            .map_err(|source| ConfigError::ReserveQuantity {
                entry: entry.to_string(),
                source,
            })?;
        out.insert(k.trim().to_string(), q);
    }
    Ok(out)
}

/// `2s`, `500ms`, `1m`, `1h` or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    let bad = || ConfigError::Duration(text.to_string());
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2s").ok(), Some(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        let r = parse_reserve("cpu=500m, memory=512Mi").expect("reserve");
        assert_eq!(r["cpu"].millis(), 500);
        assert!(parse_reserve("cpu").is_err());
        assert!(parse_reserve("cpu=lots").is_err());
        let l = parse_labels(&["a=b".into(), "hypermesh.io/role=worker".into()]).expect("labels");
        assert_eq!(l["hypermesh.io/role"], "worker");
        assert!(parse_labels(&["nokey".into()]).is_err());
    }

    #[test]
    fn pids_limit_flag() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["hm-agent", "--node-name", "n1"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv)
                .expect("flags parse")
                .into_config()
        };
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.pids_limit, Some(DEFAULT_PIDS_LIMIT));
        assert_eq!(config.secrets_dir, PathBuf::from(DEFAULT_SECRETS_DIR));
        let config = parse(&["--pids-limit", "64", "--secrets-dir", "/dev/shm/s"]).expect("set");
        assert_eq!(config.pids_limit, Some(64));
        assert_eq!(config.secrets_dir, PathBuf::from("/dev/shm/s"));
        assert_eq!(parse(&["--pids-limit", "0"]).expect("0").pids_limit, None);
        assert!(matches!(
            parse(&["--pids-limit=-5"]),
            Err(ConfigError::PidsLimit(-5))
        ));
        // Relative paths become absolute (containerd's shims do not share our cwd).
        let config = parse(&[
            "--state-dir",
            "dev/agent",
            "--log-dir",
            "logs",
            "--log-max-size",
            "1Mi",
        ])
        .expect("relative");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(config.state_dir, cwd.join("dev/agent"));
        assert_eq!(config.log_dir(), cwd.join("logs"));
        assert_eq!(config.log_max_bytes, 1024 * 1024);
        assert!(matches!(
            parse(&["--log-max-size", "huge"]),
            Err(ConfigError::LogMaxSize(_))
        ));
    }
}
