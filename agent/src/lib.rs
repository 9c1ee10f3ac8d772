//! The per-host agent: detects the real hardware, registers its Node and one Asset per
//! device (each with a signed consensus proof), and heartbeats a Lease while keeping
//! the Node's conditions current, and runs the Instances bound to it on containerd.
//!
//! # Layout
//! - [`config`]: `hm-agent` flags and the [`Config`] that [`run`] takes.
//! - [`credentials`]: joining with a token, the node certificate in `<state-dir>/pki`,
//!   renewal.
//! - [`container_setup`]: per-start container settings from the spec (user, pids
//!   limit, volume mounts, probes) and their `CreateContainerConfigError`s.
//! - [`detect`]: CPU, memory, storage, network, GPU (NVML) and container capacity,
//!   read from sysinfo, `/proc` and `/sys`; turns them into device assets.
//! - [`register`]: Node and Asset create/update/delete, asset names and addresses.
//! - [`kube_node`]: in a Kubernetes pod, the Kubernetes Node's labels and taints
//!   mirrored onto this Node.
//! - [`heartbeat`]: Lease renewal and condition refresh.
//! - [`conditions`]: measuring and merging Node conditions.
//! - [`accounting`]: per-Instance cpu, memory, disk, network (eBPF or
//!   `/proc/<pid>/net/dev`) and process starts on `/metrics`; the `NetworkAccounting`
//!   condition.
//! - [`metrics`]: Prometheus counters and the `--metrics-addr` server.
//! - [`runtime_latency`]: the histogram of the agent's calls to containerd.
//! - [`usage`]: live cpu and memory of the host and its Instances, for `hmctl top`.
//! - [`probe`]: readiness and liveness probes (TCP in the container's netns, exec).
//! - [`reconcile`]: runs the Instances bound to this node on containerd (through
//!   [`hypermesh_containers`]).
//! - `images`: archives from `--image-dir` and registry pulls, for the reconciler.
//! - [`logs`]: container log files (written by `hm-logger`), rotation, tail and follow.
//! - [`sessions`]: logs, exec and image imports relayed by the apiserver over a
//!   connection the agent dials.
//! - [`volumes`]: emptyDir, hostPath and secret volumes on the host, and their cleanup.

pub mod accounting;
pub mod conditions;
pub mod config;
pub mod container_setup;
pub mod credentials;
pub mod detect;
pub mod heartbeat;
mod images;
pub mod kube_node;
pub mod logs;
pub mod metrics;
pub mod probe;
pub mod reconcile;
pub mod register;
pub mod runtime_latency;
pub mod sessions;
pub mod usage;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_runtime::backoff::Backoff;
use hypermesh_trust::NodeIdentity;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The node identity in the state dir could not be loaded or created.
    #[error("node identity in {dir}: {source}")]
    Identity {
        dir: std::path::PathBuf,
        #[source]
        source: hypermesh_trust::IdentityError,
    },
    /// The host's CPU or memory could not be read.
    #[error("hardware detection: {0}")]
    Detect(#[from] detect::DetectError),
    /// `--metrics-addr` could not be bound.
    #[error("binding metrics address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The node has no usable TLS credentials and cannot get any.
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
}

/// Runs the agent until `shutdown` is cancelled: loads (or creates) the node identity,
/// detects the hardware, registers the Node and its Assets, then heartbeats and
/// re-detects periodically. Apiserver errors are logged and retried, never fatal.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    let dir = config.state_dir.clone();
    let identity = tokio::task::spawn_blocking(move || NodeIdentity::load_or_create(&dir))
        .await?
        .map_err(|source| AgentError::Identity {
            dir: config.state_dir.clone(),
            source,
        })?;
    let identity = Arc::new(identity);
    let metrics = Arc::new(metrics::AgentMetrics::default());
    let accounting = tokio::task::spawn_blocking(accounting::Accounting::start).await?;
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Metrics { addr, source })?;
        tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving metrics");
        tokio::spawn(hypermesh_runtime::telemetry::serve(
            listener,
            vec![metrics.exposition(), accounting.exposition()],
            hypermesh_runtime::health::Health::new(),
            shutdown.child_token(),
        ));
    }
    tracing::info!(node = %config.node_name, node_id = %identity.node_id(), "node identity loaded");

    let Some(target) = credentials::establish(&config, &identity, &shutdown).await? else {
        return Ok(());
    };
    tokio::spawn(credentials::renew_loop(
        config.clone(),
        target.clone(),
        shutdown.child_token(),
    ));
    let Some(channel) = connect(&target, &shutdown).await else {
        return Ok(());
    };
    let registrar = register::Registrar {
        nodes: Api::new(channel.clone()),
        assets: Api::new(channel.clone()),
        config: config.clone(),
        identity,
        commitments: Default::default(),
    };
    tokio::spawn(reconcile::run(
        config.clone(),
        channel.clone(),
        Arc::new(registrar.identity.kem().clone()),
        accounting.clone(),
        metrics.runtime.clone(),
        shutdown.child_token(),
    ));
    tokio::spawn(sessions::run(
        config.clone(),
        channel.clone(),
        metrics.clone(),
        shutdown.child_token(),
    ));
    tokio::spawn(usage::run(
        config.clone(),
        channel.clone(),
        accounting.clone(),
        shutdown.child_token(),
    ));
    // Mirroring starts once registration has written the Node with `--label`, so the
    // two never race on the Node's first writes.
    let mut kubernetes_mirror = config.kubernetes.clone();
    let kube_nodes = Api::new(channel.clone());
    let mut lease = heartbeat::LeaseRenewer::new(Api::new(channel), &config);
    let mut reporter = heartbeat::ConditionReporter::default();
    reporter.extra.push(accounting.condition());

    let mut inventory = detect_now(&config).await?;
    let mut registered = false;
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut redetect = tokio::time::interval(config.detect_interval);
    redetect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    redetect.tick().await;
    loop {
        if !registered {
            registered = register(&registrar, &inventory, &metrics).await;
        }
        if registered && let Some(api) = kubernetes_mirror.take() {
            tokio::spawn(kube_node::run(
                api,
                kube_nodes.clone(),
                config.node_name.clone(),
                config.labels.clone(),
                config.kubernetes_sync_interval,
                shutdown.child_token(),
            ));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            scheduled = heartbeat.tick() => {
                if !registered {
                    continue;
                }
                let started = std::time::Instant::now();
                match lease.renew().await {
                    Ok(_) => {
                        metrics.heartbeats.inc();
                        metrics.lease_renewed(scheduled.into_std());
                    }
                    Err(e) => {
                        metrics.heartbeat_failures.inc();
                        tracing::warn!(error = %e, "lease renewal failed");
                    }
                }
                match reporter.refresh(&registrar.nodes, &config, &inventory.gpu).await {
                    Ok(changed) => {
                        if changed {
                            metrics.condition_updates.inc();
                        }
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        tracing::warn!("Node was deleted: registering again");
                        registered = false;
                    }
                    Err(e) => {
                        metrics.heartbeat_failures.inc();
                        tracing::warn!(error = %e, "condition update failed");
                    }
                }
                metrics.heartbeat_seconds.observe(started.elapsed().as_secs_f64());
            }
            _ = redetect.tick() => {
                match detect_now(&config).await {
                    Ok(fresh) => {
                        if fresh.device_assets() != inventory.device_assets()
                            || fresh.gpu != inventory.gpu
                            || fresh.storage.root().map(|r| r.total_bytes)
                                != inventory.storage.root().map(|r| r.total_bytes)
                        {
                            tracing::info!("hardware changed: updating Node and Assets");
                        }
                        // Also picks up a new stake record (Assets re-proved citing it).
                        registered = false;
                        inventory = fresh;
                    }
                    Err(e) => tracing::warn!(error = %e, "re-detection failed"),
                }
            }
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Registers the Node and Assets; logs and returns false on failure (retried on the
/// next heartbeat).
async fn register(
    registrar: &register::Registrar,
    inventory: &detect::Inventory,
    metrics: &metrics::AgentMetrics,
) -> bool {
    let node = match registrar.register_node(inventory).await {
        Ok(node) => node,
        Err(e) => {
            tracing::warn!(error = %e, "node registration failed; retrying");
            metrics.registration_failures.inc();
            return false;
        }
    };
    match registrar.sync_assets(&node, inventory).await {
        Ok(names) => {
            tracing::info!(assets = names.len(), "node and assets registered");
            metrics.registrations.inc();
            metrics
                .assets
                .set(i64::try_from(names.len()).unwrap_or(i64::MAX));
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "asset registration failed; retrying");
            metrics.registration_failures.inc();
            false
        }
    }
}

async fn detect_now(config: &Config) -> Result<detect::Inventory, AgentError> {
    let paths = config.paths.clone();
    let max = config.max_instances;
    Ok(tokio::task::spawn_blocking(move || detect::detect(&paths, max)).await??)
}

/// Connects to the apiserver, retrying with back-off; `None` if shut down first.
async fn connect(
    target: &hypermesh_api::client::Target,
    shutdown: &CancellationToken,
) -> Option<tonic::transport::Channel> {
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).retry();
    loop {
        match hypermesh_api::client::connect_to(target).await {
            Ok(channel) => return Some(channel),
            Err(e) => {
                tracing::warn!(server = %target.url, error = %e, "apiserver unreachable; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = retry.wait() => {}
        }
    }
}
