//! One hollow node: a real agent's control-plane half without containers. It joins with
//! a token exactly as `hm-agent` does (its own FALCON-1024 identity, a CSR, a node
//! certificate; `hypermesh_agent::credentials`), registers its Node and proved Assets
//! with the agent's own [`Registrar`] (a challenge per Asset, the four proofs), renews
//! its Lease and refreshes its conditions every heartbeat with the agent's
//! [`LeaseRenewer`] and [`ConditionReporter`], all on its own mTLS connection.
//!
//! What is fake is the runtime: the Instances bound to the node (watched with the same
//! `spec.nodeName` field selector the agent's reconciler uses) are reported Running and
//! Ready after `ready_delay`, and an Instance being deleted has its containers
//! finalizer removed at once.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use hypermesh_agent::detect::Inventory;
use hypermesh_agent::heartbeat::{ConditionReporter, LeaseRenewer};
use hypermesh_agent::register::Registrar;
use hypermesh_api::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, Instance, InstancePhase,
};
use hypermesh_api::{Api, CONTAINERS_FINALIZER, Resource};
use hypermesh_runtime::watcher::{self, Event};
use hypermesh_trust::NodeIdentity;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What every hollow node of a run shares.
#[derive(Debug)]
pub struct Fleet {
    /// The apiserver URL (`https://…`).
    pub server: String,
    /// A join token allowing as many joins as there are nodes.
    pub join_token: String,
    /// `sha256:…` pin of the cluster CA.
    pub ca_pin: String,
    /// Each node's state dir is `<root>/<name>`.
    pub root: PathBuf,
    /// A socket that accepts connections, standing in for containerd (RuntimeReady).
    pub containerd_socket: PathBuf,
    /// The hardware every node reports.
    pub inventory: Inventory,
    /// Lease renewal period.
    pub heartbeat_interval: Duration,
    /// The Lease's duration.
    pub lease_duration: Duration,
    /// Bound Instance → Running.
    pub ready_delay: Duration,
    /// Bytes of each storage device committed (a file per node).
    pub storage_commit_bytes: u64,
    /// Bounds joins and registrations in flight (keygen and proofs are CPU work).
    pub registering: Semaphore,
    /// Counters and samples.
    pub stats: FleetStats,
}

/// Counters every node adds to; the benchmark reads and resets the samples per phase.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Nodes joined and registered (Node and Assets).
    pub registered: AtomicU64,
    /// Lease renewals that succeeded.
    pub heartbeats: AtomicU64,
    /// Lease renewals or condition reads that failed.
    pub heartbeat_failures: AtomicU64,
    /// Instances reported Running.
    pub running: AtomicU64,
    /// Status writes that failed for good.
    pub status_failures: AtomicU64,
    /// Latency of each Lease renewal (one Update).
    pub lease_latency: Mutex<Vec<Duration>>,
    /// Bind (the Scheduled condition's time) → the bound Instance's event at its
    /// node's watch.
    pub bind_delivery: Mutex<Vec<Duration>>,
    /// The first error a node met while registering.
    pub first_error: Mutex<Option<String>>,
}

impl FleetStats {
    /// Takes the Lease latency samples gathered so far.
    pub fn take_lease_latency(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.lease_latency.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the bind → node watch samples gathered so far.
    pub fn take_bind_delivery(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.bind_delivery.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn note_error(&self, error: &anyhow::Error) {
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(format!("{error:#}"));
        }
    }
}

/// The name of hollow node `index`.
pub fn node_name(index: usize) -> String {
    format!("hollow-{index:05}")
}

/// Runs hollow node `index` until `stop`: joins, registers, then heartbeats and runs
/// the fake runtime. Registration failures are retried; they are also recorded in
/// the fleet's `first_error`.
pub async fn run(fleet: Arc<Fleet>, index: usize, stop: CancellationToken) {
    let name = node_name(index);
    let permit = tokio::select! {
        _ = stop.cancelled() => return,
        p = fleet.registering.acquire() => p,
    };
    let mut delay = Duration::from_millis(200);
    let (registrar, channel) = loop {
        match join_and_register(&fleet, &name, &stop).await {
            Ok(Some(done)) => break done,
            Ok(None) => return,
            Err(e) => {
                fleet.stats.note_error(&e);
                tracing::warn!(node = %name, error = %format!("{e:#}"), "hollow node registration failed; retrying");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    drop(permit);
    fleet.stats.registered.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(fake_runtime(
        fleet.clone(),
        Api::new(channel.clone()),
        name.clone(),
        stop.clone(),
    ));
    heartbeat(&fleet, &registrar, Api::new(channel), &stop).await;
}

/// Joins with the fleet's token (own identity and certificate) and registers the Node
/// and its Assets; `None` when stopped first.
async fn join_and_register(
    fleet: &Fleet,
    name: &str,
    stop: &CancellationToken,
) -> Result<Option<(Registrar, tonic::transport::Channel)>> {
    let config = agent_config(fleet, name);
    let identity = Arc::new(
        tokio::task::spawn_blocking({
            let dir = config.state_dir.clone();
            move || NodeIdentity::load_or_create(&dir)
        })
        .await
        .context("identity task")?
        .context("node identity")?,
    );
    let Some(target) = hypermesh_agent::credentials::establish(&config, &identity, stop)
        .await
        .context("joining")?
    else {
        return Ok(None);
    };
    let channel = hypermesh_api::client::connect_to(&target)
        .await
        .context("connecting with the node certificate")?;
    let registrar = Registrar {
        nodes: Api::new(channel.clone()),
        assets: Api::new(channel.clone()),
        config,
        identity,
        commitments: Default::default(),
    };
    let node = registrar
        .register_node(&fleet.inventory)
        .await
        .context("registering the Node")?;
    registrar
        .sync_assets(&node, &fleet.inventory)
        .await
        .context("registering the Assets")?;
    // A hollow node never re-proves, so its commitment file need not stay open: with
    // 10,000 nodes in one process those files alone took half of its 20,000 allowed
    // descriptors, and the RuntimeReady probes then failed on EMFILE.
    registrar
        .commitments
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    Ok(Some((registrar, channel)))
}

fn agent_config(fleet: &Fleet, name: &str) -> hypermesh_agent::Config {
    let mut config =
        hypermesh_agent::Config::new(fleet.server.clone(), name, fleet.root.join(name));
    config.join_token = Some(fleet.join_token.clone());
    config.ca_cert_hash = Some(fleet.ca_pin.clone());
    config.containerd_socket = fleet.containerd_socket.clone();
    config.heartbeat_interval = fleet.heartbeat_interval;
    config.lease_duration = fleet.lease_duration;
    config.storage_commit_bytes = fleet.storage_commit_bytes;
    config
}

/// The agent's heartbeat: renew the Lease, then refresh the conditions (a Get, and an
/// UpdateStatus when they changed), every interval, starting at a random offset so
/// the fleet's renewals spread over the period as real hosts' do.
async fn heartbeat(
    fleet: &Fleet,
    registrar: &Registrar,
    leases: Api<hypermesh_api::v1::Lease>,
    stop: &CancellationToken,
) {
    let config = &registrar.config;
    let mut lease = LeaseRenewer::new(leases, config);
    let period = config.heartbeat_interval;
    let offset = period.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ready=True right away (the agent's first heartbeat follows registration at once).
    let mut reporter = ConditionReporter::default();
    let first = reporter
        .refresh(&registrar.nodes, config, &fleet.inventory.gpu)
        .await;
    if first.is_err() {
        fleet
            .stats
            .heartbeat_failures
            .fetch_add(1, Ordering::Relaxed);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        match lease.renew().await {
            Ok(_) => {
                fleet.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                fleet
                    .stats
                    .lease_latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(started.elapsed());
            }
            Err(_) => {
                fleet
                    .stats
                    .heartbeat_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if reporter
            .refresh(&registrar.nodes, config, &fleet.inventory.gpu)
            .await
            .is_err()
        {
            fleet
                .stats
                .heartbeat_failures
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Watches the Instances bound to `node` and reports each Running after the delay;
/// lets deleted ones go (removes the containers finalizer).
async fn fake_runtime(
    fleet: Arc<Fleet>,
    api: Api<Instance>,
    node: String,
    stop: CancellationToken,
) {
    let stream = watcher::watcher(
        api.clone(),
        watcher::Config {
            field_selector: format!("spec.nodeName={node}"),
            ..Default::default()
        },
    );
    let mut stream = std::pin::pin!(stream);
    // uids already started (or finished), so a MODIFIED event does not start them again.
    let mut started: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = stream.next() => e,
        };
        let instances = match event {
            None => return,
            Some(Err(_)) => continue,
            Some(Ok(Event::Restarted(list))) => list,
            Some(Ok(Event::Applied(i))) => {
                if !started.contains(&i.meta().uid)
                    && let Some(took) = since_bound(&i)
                {
                    fleet
                        .stats
                        .bind_delivery
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(took);
                }
                vec![i]
            }
            Some(Ok(Event::Deleted(i))) => {
                started.remove(&i.meta().uid);
                continue;
            }
        };
        for instance in instances {
            let meta = instance.meta();
            if meta.deletion_timestamp.is_some() {
                if meta.finalizers.iter().any(|f| f == CONTAINERS_FINALIZER) {
                    tokio::spawn(release(api.clone(), instance, stop.clone()));
                }
                continue;
            }
            if running(&instance) || !started.insert(meta.uid.clone()) {
                continue;
            }
            tokio::spawn(start(fleet.clone(), api.clone(), instance, stop.clone()));
        }
    }
}

/// Time since the apiserver bound `instance` (its Scheduled condition's transition
/// time, set by `InstanceService.Bind`); `None` when it is not bound.
fn since_bound(instance: &Instance) -> Option<Duration> {
    let status = instance.status.as_ref()?;
    let scheduled = hypermesh_api::conditions::find(&status.conditions, "Scheduled")?;
    if scheduled.status != "True" {
        return None;
    }
    let at = hypermesh_api::time::to_system_time(scheduled.last_transition_time.as_ref()?);
    std::time::SystemTime::now().duration_since(at).ok()
}

fn running(instance: &Instance) -> bool {
    instance
        .status
        .as_ref()
        .is_some_and(|s| s.phase == InstancePhase::Running as i32)
}

/// After the ready delay: every container running and ready, phase Running, Ready=True.
async fn start(
    fleet: Arc<Fleet>,
    api: Api<Instance>,
    mut instance: Instance,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(fleet.ready_delay) => {}
    }
    for _ in 0..10 {
        let now = hypermesh_api::time::now();
        let containers: Vec<(String, String)> = instance
            .spec
            .as_ref()
            .map(|s| {
                s.containers
                    .iter()
                    .map(|c| (c.name.clone(), c.image.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let uid = instance.meta().uid.clone();
        let status = instance.status.get_or_insert_with(Default::default);
        status.phase = InstancePhase::Running as i32;
        status.start_time = Some(now);
        status.container_statuses = containers
            .into_iter()
            .map(|(name, image)| ContainerStatus {
                container_id: format!("hollow-{uid}-{name}"),
                name,
                image,
                ready: true,
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(now),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        hypermesh_api::conditions::set_condition(
            &mut status.conditions,
            hypermesh_api::conditions::condition("Ready", "True", "ContainersReady", ""),
            now,
        );
        match api.update_status(&instance).await {
            Ok(_) => {
                fleet.stats.running.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(s) if s.code() == tonic::Code::NotFound => return,
            Err(s) if s.code() == tonic::Code::Aborted => {
                let meta = instance.meta().clone();
                match api.get(&meta.namespace, &meta.name).await {
                    Ok(fresh) if fresh.meta().uid == meta.uid => instance = fresh,
                    _ => return,
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        if stop.is_cancelled() {
            return;
        }
    }
    fleet.stats.status_failures.fetch_add(1, Ordering::Relaxed);
}

/// The containers are "stopped" at once: remove the finalizer that held the Instance.
async fn release(api: Api<Instance>, mut instance: Instance, stop: CancellationToken) {
    for _ in 0..10 {
        if stop.is_cancelled() {
            return;
        }
        instance
            .meta_mut()
            .finalizers
            .retain(|f| f != CONTAINERS_FINALIZER);
        match api.update(&instance).await {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::NotFound => return,
            Err(_) => {
                let meta = instance.meta().clone();
                match api.get(&meta.namespace, &meta.name).await {
                    Ok(fresh) => instance = fresh,
                    Err(_) => return,
                }
            }
        }
    }
}

/// A Unix socket that accepts and drops connections: what the agent's RuntimeReady
/// check dials instead of containerd.
pub fn fake_containerd(path: &std::path::Path) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    }))
}

/// The hardware every hollow node reports: this host's, read by the agent's own
/// detection, with the CPU and memory of a `cpus`-thread, `memory_gib` GiB machine
/// and no GPUs.
pub fn inventory(cpus: u32, memory_gib: u64, max_instances: u32) -> Result<Inventory> {
    let paths = hypermesh_agent::detect::HostPaths::default();
    let mut inv = hypermesh_agent::detect::detect(&paths, max_instances)
        .map_err(|e| anyhow!("detecting this host: {e}"))?;
    let mut socket = inv
        .cpu
        .sockets
        .first()
        .cloned()
        .context("this host reports no CPU socket")?;
    socket.threads = cpus;
    socket.cores = cpus.div_ceil(2);
    inv.cpu.sockets = vec![socket];
    inv.memory.total_bytes = memory_gib << 30;
    inv.memory.available_bytes = memory_gib << 30;
    inv.memory.numa_total_bytes.clear();
    inv.gpu = hypermesh_agent::detect::gpu::GpuReport::Unavailable {
        reason: "NoGpu".into(),
        message: "hollow node".into(),
    };
    Ok(inv)
}
