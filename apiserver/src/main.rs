//! `hm-apiserver` command line: parses flags, installs signal handling and runs
//! [`hypermesh_apiserver::serve`], plus the in-process controllers
//! ([`hypermesh_apiserver::in_process`]): the garbage collector always, the
//! leader-elected controllers unless `--controllers none`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hypermesh_apiserver::in_process;
use hypermesh_apiserver::store::backend::StoreBackend;
use hypermesh_apiserver::store::etcd::EtcdOptions;
use hypermesh_apiserver::store::redb::RedbOptions;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long the in-process controllers get to stop (and release their Lease) before
/// the server itself starts draining.
const CONTROLLERS_GRACE: Duration = Duration::from_secs(5);

/// Which controllers run inside the apiserver process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Controllers {
    /// Every controller (workloads, node lifecycle), leader-elected among apiservers.
    All,
    /// None (the garbage collector still runs): run them elsewhere, or not at all.
    None,
}

/// One-off maintenance commands; each uses the same --data-dir, --store and
/// --encryption-key-file as the server.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Puts a new primary key first in the encryption key file (the old keys kept
    /// after it still open what they sealed) and re-seals every Secret and the cluster
    /// CA's key with it. Run it with no apiserver serving the store, then give every
    /// apiserver the new key file. `--retire-previous` afterwards re-seals everything
    /// with the primary and drops the older keys.
    RotateEncryptionKey {
        /// Re-seal with the current primary key and remove every older key from the file.
        #[arg(long)]
        retire_previous: bool,
    },
}

/// The HyperMesh API server: stores assets, workloads and every other object, and
/// serves them over gRPC (with health and reflection, so grpcurl works).
#[derive(Debug, Parser)]
#[command(name = "hm-apiserver", version)]
struct Args {
    /// What to do instead of serving (none: serve).
    #[command(subcommand)]
    command: Option<Command>,

    /// Address for gRPC; port 0 picks a free one (the chosen address is printed).
    #[arg(long, env = "HM_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,

    /// Address for Prometheus `/metrics` and `/healthz` over HTTP (off when unset: request
    /// metrics are then not recorded either).
    #[arg(long, env = "HM_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Directory of the embedded store (created if missing).
    #[arg(
        long,
        global = true,
        env = "HM_DATA_DIR",
        default_value = "/var/lib/hypermesh/apiserver"
    )]
    data_dir: PathBuf,

    /// The store: `redb` (embedded, a file in --data-dir; one apiserver) or
    /// `etcd://host:2379[,host2:2379…]` (an etcd cluster several apiservers share; they
    /// must all get the same --encryption-key-file, which seals the shared cluster CA).
    #[arg(long, global = true, env = "HM_STORE", default_value = "redb")]
    store: String,

    /// CA bundle of etcd's serving certificates; turns on TLS to etcd.
    #[arg(long, global = true, env = "HM_ETCD_CAFILE")]
    etcd_cafile: Option<PathBuf>,

    /// Client certificate for etcd (with --etcd-keyfile).
    #[arg(long, global = true, env = "HM_ETCD_CERTFILE")]
    etcd_certfile: Option<PathBuf>,

    /// Key of the client certificate for etcd.
    #[arg(long, global = true, env = "HM_ETCD_KEYFILE")]
    etcd_keyfile: Option<PathBuf>,

    /// Prefix of every key HyperMesh writes in etcd.
    #[arg(
        long,
        global = true,
        env = "HM_ETCD_PREFIX",
        default_value = "/hypermesh"
    )]
    etcd_prefix: String,

    /// Seconds the in-process controllers' leader Lease lasts without renewal: a
    /// dead leader's replacement takes over within this long.
    #[arg(long, env = "HM_CONTROLLERS_LEASE_SECONDS", default_value_t = 15)]
    controllers_lease_seconds: u64,

    /// Seconds after a node is tainted unreachable (its Lease lapsed) before the
    /// Instances on it that do not tolerate the taint are deleted, so their Workloads
    /// replace them elsewhere (an Instance tolerating the taint for some seconds uses
    /// its own figure). Give every apiserver the same.
    #[arg(long, env = "HM_NODE_EVICTION_GRACE_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    node_eviction_grace_seconds: u64,

    /// Revisions of history kept for watches and paginated lists before compaction.
    #[arg(long, env = "HM_HISTORY_REVISIONS", default_value_t = 100_000)]
    history_revisions: u64,

    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, env = "HM_BOOKMARK_INTERVAL", default_value_t = 10)]
    bookmark_interval: u64,

    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "HM_SHUTDOWN_GRACE", default_value_t = 5)]
    shutdown_grace: u64,

    /// Serve plaintext gRPC without authentication, for local development only: every
    /// caller is an admin. Without it the server speaks TLS 1.3 with client
    /// certificates of the cluster CA it creates in --data-dir on first start.
    #[arg(long, env = "HM_INSECURE_DEV")]
    insecure_dev: bool,

    /// Key file that seals every Secret and the cluster CA's private key at rest
    /// (32-byte keys, the primary first; created when missing). Default:
    /// <data-dir>/encryption.key; keep it on another disk or a secret mount for the
    /// sealing to protect against a copied data directory or store.
    #[arg(long, global = true, env = "HM_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,

    /// Write one JSON line per request (who, what, result) to this file.
    #[arg(long, env = "HM_AUDIT_LOG", value_name = "PATH")]
    audit_log: Option<PathBuf>,

    /// Rotate the audit log when it would grow past this many MiB.
    #[arg(long, env = "HM_AUDIT_LOG_MAX_MIB", default_value_t = 100)]
    audit_log_max_mib: u64,

    /// Audit log files kept, the live one included.
    #[arg(long, env = "HM_AUDIT_LOG_MAX_FILES", default_value_t = 5)]
    audit_log_max_files: u32,

    /// Extra DNS name or IP address for the serving certificate (repeatable), e.g.
    /// the address nodes reach this server at. Loopback, localhost, the host name and
    /// the --listen address are always in it.
    #[arg(long = "tls-san", env = "HM_TLS_SANS", value_delimiter = ',')]
    tls_sans: Vec<String>,

    /// Controllers to run in this process, talking to this server over gRPC; with
    /// several apiservers a Lease elects the one whose controllers act. Garbage
    /// collection and namespace deletion run in every apiserver either way.
    #[arg(long, env = "HM_CONTROLLERS", value_enum, default_value_t = Controllers::All)]
    controllers: Controllers,
    /// Leading zero bits an Asset proof's work must have (a cluster setting: give
    /// every apiserver the same; each step doubles the agents' cost).
    #[arg(long, env = "HM_PROOF_WORK_DIFFICULTY", default_value_t = 14,
          value_parser = clap::value_parser!(u32).range(1..=32))]
    proof_work_difficulty: u32,
    /// Leaves of a storage commitment each Asset proof must open.
    #[arg(long, env = "HM_PROOF_SPACE_SAMPLES", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    proof_space_samples: u32,

    /// Serve watches from one store watch per kind, fanned out from memory with each
    /// event encoded once (false: every watch reads the store and encodes for itself).
    #[arg(long, env = "HM_WATCH_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    watch_cache: bool,

    /// MiB of recent changes each kind's watch cache keeps (watches resume inside it).
    #[arg(long, env = "HM_WATCH_CACHE_WINDOW_MIB", default_value_t = 8)]
    watch_cache_window_mib: usize,

    /// MiB of changes a watcher may fall behind before it is closed (RESOURCE_EXHAUSTED,
    /// reason WatchTooSlow; it resumes or lists again).
    #[arg(long, env = "HM_WATCH_LAG_MIB", default_value_t = 8)]
    watch_lag_mib: usize,

    /// Watches open at once (all kinds, all callers); more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "HM_MAX_WATCHES", default_value_t = 20_000)]
    max_watches: usize,

    /// MiB of writes that may wait for the store; beyond it writes get
    /// RESOURCE_EXHAUSTED (reason Overloaded) after a short wait.
    #[arg(long, env = "HM_WRITE_QUEUE_MIB", default_value_t = 64)]
    write_queue_mib: usize,

    /// Requests per second each identity may send (admins and the scheduler are not
    /// limited); 0 disables. Over it: RESOURCE_EXHAUSTED, reason RateLimited.
    #[arg(long, env = "HM_RATE_LIMIT_QPS", default_value_t = 200.0)]
    rate_limit_qps: f64,

    /// Requests an identity may send at once before --rate-limit-qps applies.
    #[arg(long, env = "HM_RATE_LIMIT_BURST", default_value_t = 400)]
    rate_limit_burst: u32,

    /// Largest image archive `hmctl image import` may upload to one node, in MiB.
    #[arg(long, env = "HM_MAX_IMAGE_UPLOAD_MIB", default_value_t = 2048)]
    max_image_upload_mib: u64,

    /// MiB of store pages the embedded store caches in memory.
    #[arg(long, env = "HM_STORE_CACHE_MIB", default_value_t = 64)]
    store_cache_mib: usize,
}

/// The store `--store` and the etcd flags describe.
/// `hm-apiserver rotate-encryption-key`.
async fn rotate(args: &Args, retire_previous: bool) -> anyhow::Result<()> {
    let mut config = hypermesh_apiserver::Config::new(&args.data_dir);
    config.store = store_backend(args)?;
    config.encryption_key_file = args.encryption_key_file.clone();
    let report = hypermesh_apiserver::key_rotation::rotate_encryption_key(&config, retire_previous)
        .await
        .context("rotate-encryption-key")?;
    let path = config.encryption_key_path();
    println!(
        "{} Secret(s) re-sealed with the primary key of {}{}; the file holds {} key(s)",
        report.secrets,
        path.display(),
        if report.ca {
            ", and the cluster CA's key"
        } else {
            ""
        },
        report.keys
    );
    if !retire_previous && report.keys > 1 {
        println!(
            "give every apiserver this key file; once they all run with it, drop the old key(s): hm-apiserver rotate-encryption-key --retire-previous"
        );
    }
    Ok(())
}

fn store_backend(args: &Args) -> anyhow::Result<StoreBackend> {
    if args.store == "redb" {
        return Ok(StoreBackend::Redb(RedbOptions {
            retain_revisions: args.history_revisions,
            cache_bytes: args.store_cache_mib.max(1).saturating_mul(1024 * 1024),
        }));
    }
    let options = EtcdOptions {
        ca_file: args.etcd_cafile.clone(),
        cert_file: args.etcd_certfile.clone(),
        key_file: args.etcd_keyfile.clone(),
        key_prefix: args.etcd_prefix.clone(),
        retain_revisions: args.history_revisions,
        ..EtcdOptions::default()
    }
    .with_url(&args.store)
    .context("--store: expected redb or etcd://host:port[,host:port…]")?;
    Ok(StoreBackend::Etcd(options))
}

// mimalloc: the servers allocate many small short-lived buffers (protobuf messages,
// HTTP/2 frames) across threads, where it is markedly faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hypermesh_runtime::process::init_logging();
    hypermesh_trust::tls::install_default_provider();
    let args = Args::parse();
    if let Some(Command::RotateEncryptionKey { retire_previous }) = &args.command {
        return rotate(&args, *retire_previous).await;
    }
    if args.insecure_dev {
        warn!(
            "--insecure-dev: serving plaintext gRPC without authentication; every caller is an admin"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;

    // A signal stops the controllers first (so they release their Lease while the
    // server still answers), then the server.
    let stop = hypermesh_runtime::process::shutdown_on_signals();
    let shutdown = CancellationToken::new();

    let mut config = hypermesh_apiserver::Config::new(&args.data_dir);
    config.store = store_backend(&args)?;
    config.bookmark_interval = Duration::from_secs(args.bookmark_interval.max(1));
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    config.proofs.work_difficulty = args.proof_work_difficulty;
    config.proofs.space_samples = args.proof_space_samples;
    config.metrics_addr = args.metrics_addr;
    config.write_queue_bytes = args.write_queue_mib.max(1).saturating_mul(1024 * 1024);
    config.rate_limit_qps = args.rate_limit_qps;
    config.rate_limit_burst = args.rate_limit_burst;
    config.max_image_upload_bytes = args.max_image_upload_mib.saturating_mul(1024 * 1024);
    config.watch_cache = hypermesh_apiserver::watch_cache::WatchCacheOptions {
        enabled: args.watch_cache,
        window_bytes: args
            .watch_cache_window_mib
            .max(1)
            .saturating_mul(1024 * 1024),
        lag_bytes: args.watch_lag_mib.max(1).saturating_mul(1024 * 1024),
        max_watches: args.max_watches,
    };
    config.encryption_key_file = args.encryption_key_file.clone();
    config.audit = args
        .audit_log
        .clone()
        .map(|path| hypermesh_apiserver::audit::AuditSettings {
            path,
            max_bytes: args.audit_log_max_mib.saturating_mul(1024 * 1024).max(4096),
            max_files: args.audit_log_max_files.max(1),
        });
    if !args.insecure_dev {
        config.tls = Some(hypermesh_apiserver::TlsSettings {
            encryption_key_file: args.encryption_key_file.clone(),
            extra_names: args.tls_sans.clone(),
        });
    }

    let server = hypermesh_apiserver::ApiServer::open(config, shutdown.clone())
        .await
        .context("hm-apiserver cannot start")?;
    // admin.config and scheduler.config exist before anyone is told the server is up.
    server
        .write_client_configs(address)
        .await
        .context("writing admin.config and scheduler.config")?;
    // Scripts and tests wait for this line.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "hm-apiserver listening on {address}")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;

    if let Some(pin) = server.ca_pin() {
        info!(
            ca_cert_hash = %pin,
            admin_config = %args.data_dir.join(hypermesh_apiserver::server::ADMIN_CONFIG).display(),
            "TLS on; nodes join with --ca-cert-hash {pin}"
        );
    }
    // The in-process controllers talk to this server like any client, with the
    // system:controllers identity (plaintext on an --insecure-dev server).
    let target = server
        .local_target(
            address,
            hypermesh_apiserver::server::CONTROLLERS_CONFIG,
            hypermesh_apiserver::caller::CONTROLLERS,
            &[hypermesh_apiserver::caller::MASTERS_GROUP],
        )
        .await
        .context("issuing the controllers' certificate")?;
    let channel = hypermesh_api::client::connect_lazy(&target)
        .context("the controllers' channel to this server")?;
    let which = match args.controllers {
        Controllers::All => in_process::Controllers::All,
        Controllers::None => in_process::Controllers::None,
    };
    let token = CancellationToken::new();
    let lease = Duration::from_secs(args.controllers_lease_seconds.clamp(1, 3600));
    // Kept in the data dir (and locked while this process lives): restarted after a
    // crash, this server finds itself holding the controllers' Lease and leads at once.
    let identity = hypermesh_apiserver::controller_identity::load_or_create(
        &args.data_dir,
        hypermesh_controllers::default_identity,
    );
    let controllers = tokio::spawn(in_process::run_with_lease(
        channel,
        which,
        lease,
        identity.name.clone(),
        Duration::from_secs(args.node_eviction_grace_seconds),
        token.clone(),
    ));
    tokio::spawn(async move {
        stop.cancelled().await;
        token.cancel();
        if tokio::time::timeout(CONTROLLERS_GRACE, controllers)
            .await
            .is_err()
        {
            warn!("controllers did not stop in time");
        }
        shutdown.cancel();
    });
    let served = server.serve(listener).await.context("hm-apiserver failed");
    drop(identity);
    served
}
