//! The Instance reconciler: runs the Instances bound to this node on containerd.
//!
//! One watcher (field selector `spec.nodeName=<node>`, all namespaces) feeds a map of
//! per-Instance workers keyed by uid. A worker ensures the images (importing archives
//! from `--image-dir`, pulling references that name a registry, with back-off after a
//! failed pull), creates and starts one containerd container per container of
//! the spec, waits for the tasks to exit (exit events from one subscription to
//! containerd's events, [`TaskExits`]), applies the restart policy with exponential
//! back-off and reports everything through `UpdateStatus`. Container IDs are derived
//! from namespace/name/uid/container, so a restarted agent adopts the running ones.
//! A deleted Instance (or one with a deletion timestamp) is stopped (SIGTERM, the grace
//! period, SIGKILL) and its containers and snapshots removed. While containerd is
//! unreachable nothing is changed: operations are retried, and containers that kept
//! running (their shims outlive containerd) are waited on again as they are.
//!
//! Before each start, [`ContainerSetup`] sets up the container's volumes and resolves its
//! user, pids limit and probes; a spec problem shows as `CreateContainerConfigError`
//! and is retried. While a container runs its probes run beside it: readiness sets
//! `ready`, a liveness failure kills it and the restart policy applies. An Instance's
//! volume directories are removed with it (or, after a restart, found and removed).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Instance, InstancePhase, Node, RestartPolicy,
};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::watcher::{self, Event};
use pbjson_types::Timestamp;
use tokio::sync::Mutex;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, MAX_RESTART_BACKOFF};
use crate::container_setup::{ContainerSetup, Launch, LaunchError};
use crate::images::{IMAGE_RESCAN, ImageState, Images, Pulled};
use crate::probe::{self, ContainerProbes};
use crate::runtime::{
    ContainerConfig, LogSink, RuntimeClient, RuntimeError, TaskEnd, TaskExits, container,
};
use crate::volumes::{self, InstanceVolumes};
use hypermesh_api::conditions;
use hypermesh_runtime::backoff::Backoff;

/// Default grace period between SIGTERM and SIGKILL.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// How long an exited container's logger gets to write the last of its output.
const LOG_FLUSH: Duration = Duration::from_secs(5);
/// How often a missing image or an unreachable containerd is retried.
const RETRY: Duration = Duration::from_secs(1);
/// Container labels naming the owning Instance.
const LABEL_UID: &str = "hypermesh.io/instance-uid";
const LABEL_NAMESPACE: &str = "hypermesh.io/instance-namespace";
const LABEL_NAME: &str = "hypermesh.io/instance-name";
const LABEL_CONTAINER: &str = "hypermesh.io/container";
const LABEL_GRACE: &str = "hypermesh.io/grace-seconds";

/// The containerd container ID of container `container` of an Instance: stable across
/// agent restarts, unique per Instance uid, valid as a containerd ID and cgroup leaf.
pub fn container_id(namespace: &str, name: &str, uid: &str, container: &str) -> String {
    let hash = blake3::hash(format!("{namespace}/{name}/{uid}/{container}").as_bytes());
    format!("hm-{}", &hash.to_hex()[..32])
}

/// The directory of the logs of one container of an Instance (one file per run, see
/// [`crate::logs`]).
pub fn log_dir_of(log_dir: &std::path::Path, instance: &Instance, container: &str) -> PathBuf {
    let meta = instance.meta();
    crate::logs::container_dir(log_dir, &meta.namespace, &meta.name, &meta.uid, container)
}

struct Ctx {
    client: RuntimeClient,
    /// Task exits, from one subscription to containerd's events.
    exits: TaskExits,
    api: Api<Instance>,
    images: Images,
    log_dir: PathBuf,
    logger: PathBuf,
    log_max_bytes: u64,
    log_max_files: u32,
    backoff: Duration,
    nodes: Api<Node>,
    node_name: String,
    /// What the Node says about this host, once read.
    node_facts: Mutex<Option<NodeFacts>>,
    /// Volumes, user, pids limit and probes of each container start.
    setup: ContainerSetup,
}

/// What an Instance's status takes from its Node.
#[derive(Clone, Debug, Default)]
struct NodeFacts {
    /// The Node's first `InternalIP` (empty when it has none).
    host_ip: String,
    /// The NodeId Instance addresses are derived from.
    node_id: String,
}

impl Ctx {
    /// The Node's facts (defaults while the Node cannot be read yet).
    async fn node_facts(&self) -> NodeFacts {
        let mut cached = self.node_facts.lock().await;
        if let Some(facts) = cached.as_ref() {
            return facts.clone();
        }
        let Ok(node) = self.nodes.get("", &self.node_name).await else {
            return NodeFacts::default();
        };
        let host_ip = node
            .status
            .iter()
            .flat_map(|s| &s.addresses)
            .find(|a| a.r#type == "InternalIP")
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let node_id = node
            .spec
            .and_then(|s| s.identity)
            .map(|i| i.node_id)
            .unwrap_or_default();
        let facts = NodeFacts { host_ip, node_id };
        if !facts.node_id.is_empty() {
            *cached = Some(facts.clone());
        }
        facts
    }
}

/// Runs the reconciler until `shutdown`. Containers keep running when the agent stops.
pub async fn run(config: Config, channel: tonic::transport::Channel, shutdown: CancellationToken) {
    let client = loop {
        match RuntimeClient::connect(&config.containerd_socket).await {
            Ok(c) => break c,
            Err(e) => tracing::debug!(error = %e, "reconciler: containerd unreachable; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY * 2) => {}
        }
    };
    let setup = ContainerSetup {
        client: client.clone(),
        volumes: InstanceVolumes::new(
            Api::new(channel.clone()),
            config.volumes_dir(),
            config.secrets_dir.clone(),
        ),
        pids_limit: config.pids_limit,
    };
    let ctx = Arc::new(Ctx {
        images: Images::new(
            client.clone(),
            config.image_dir.clone(),
            config.registry.clone(),
        ),
        exits: TaskExits::start(client.clone(), shutdown.clone()),
        client,
        api: Api::new(channel.clone()),
        nodes: Api::new(channel),
        node_name: config.node_name.clone(),
        node_facts: Mutex::new(None),
        log_dir: config.log_dir(),
        logger: config.logger.clone(),
        log_max_bytes: config.log_max_bytes,
        log_max_files: config.log_max_files,
        backoff: config.restart_backoff,
        setup,
    });
    ctx.images.scan().await;
    let stream = watcher::watcher(
        ctx.api.clone(),
        watcher::Config {
            field_selector: format!("spec.nodeName={}", config.node_name),
            ..Default::default()
        },
    );
    let mut stream = pin!(stream);
    // uid → the token that tells its worker the Instance is gone.
    let mut workers: HashMap<String, CancellationToken> = HashMap::new();
    let mut rescan = tokio::time::interval(IMAGE_RESCAN);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = rescan.tick() => {
                // New archives in the image dir are imported as they appear.
                let ctx = ctx.clone();
                tokio::spawn(async move { ctx.images.scan().await });
                continue;
            }
            event = stream.next() => event,
        };
        match event {
            None => break,
            Some(Err(e)) => tracing::warn!(error = %e, "instance watch"),
            Some(Ok(Event::Restarted(list))) => {
                let uids: HashSet<String> = list.iter().map(|i| i.meta().uid.clone()).collect();
                workers.retain(|uid, remove| {
                    if !uids.contains(uid) {
                        remove.cancel();
                    }
                    uids.contains(uid)
                });
                for instance in list {
                    observe(&ctx, &mut workers, instance, &shutdown);
                }
                // Listed before any later event can start a new container.
                let stale = ctx.setup.volumes.stale(&uids).await;
                let mut stops = tokio::task::JoinSet::new();
                for (id, grace) in orphans(&ctx, &uids).await {
                    tracing::info!(container = %id, "removing the container of a deleted instance");
                    let ctx = ctx.clone();
                    stops.spawn(async move { stop(&ctx.client, &id, grace).await });
                }
                // Their volumes go once their containers are gone.
                tokio::spawn(async move {
                    while stops.join_next().await.is_some() {}
                    if !stale.is_empty() {
                        tracing::info!(
                            dirs = stale.len(),
                            "removing the volumes of deleted instances"
                        );
                    }
                    if let Err(e) = volumes::remove_dirs(stale).await {
                        tracing::warn!(error = %e, "removing the volumes of deleted instances");
                    }
                });
            }
            Some(Ok(Event::Applied(instance))) => {
                observe(&ctx, &mut workers, instance, &shutdown);
            }
            Some(Ok(Event::Deleted(instance))) => match workers.remove(&instance.meta().uid) {
                Some(remove) => remove.cancel(),
                None => {
                    // Not seen before (e.g. deleted while we re-listed): clean up anyway.
                    let remove = CancellationToken::new();
                    remove.cancel();
                    tokio::spawn(worker(
                        ctx.clone(),
                        instance,
                        false,
                        remove,
                        shutdown.clone(),
                    ));
                }
            },
        }
    }
}

fn observe(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, CancellationToken>,
    instance: Instance,
    shutdown: &CancellationToken,
) {
    let uid = instance.meta().uid.clone();
    let deleting = instance.meta().deletion_timestamp.is_some();
    if let Some(remove) = workers.get(&uid) {
        if deleting {
            remove.cancel();
        }
        return;
    }
    let phase = instance.status.as_ref().map(|s| s.phase).unwrap_or(0);
    let remove = CancellationToken::new();
    workers.insert(uid, remove.clone());
    // Finished: its containers were removed when it finished; its volumes wait for it.
    let finished =
        phase == InstancePhase::Succeeded as i32 || phase == InstancePhase::Failed as i32;
    if deleting {
        remove.cancel();
    }
    tokio::spawn(worker(
        ctx.clone(),
        instance,
        finished,
        remove,
        shutdown.clone(),
    ));
}

/// Runs one Instance (unless `finished` already) until it is removed (then stops its
/// containers and removes its volumes) or the agent shuts down (then leaves them).
async fn worker(
    ctx: Arc<Ctx>,
    instance: Instance,
    finished: bool,
    remove: CancellationToken,
    shutdown: CancellationToken,
) {
    let key = format!("{}/{}", instance.meta().namespace, instance.meta().name);
    if !remove.is_cancelled() {
        // A finished Instance keeps its volumes until it is removed.
        let run = async {
            if !finished {
                drive(&ctx, &instance).await;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = remove.cancelled() => {}
            _ = run => {}
        }
    }
    if shutdown.is_cancelled() {
        return;
    }
    let grace = grace_of(&instance);
    let names: Vec<String> = containers_of(&instance)
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut stops = tokio::task::JoinSet::new();
    for name in names {
        let id = ids(&instance, &name);
        let ctx = ctx.clone();
        stops.spawn(async move { stop(&ctx.client, &id, grace).await });
    }
    while stops.join_next().await.is_some() {}
    let meta = instance.meta();
    let logs = crate::logs::instance_dir(&ctx.log_dir, &meta.namespace, &meta.name, &meta.uid);
    if let Err(e) = std::fs::remove_dir_all(&logs)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %logs.display(), error = %e, "removing instance logs");
    }
    if let Err(e) = ctx.setup.volumes.remove(&instance).await {
        tracing::warn!(instance = %key, error = %e, "removing the instance's volumes");
    }
    tracing::info!(instance = %key, "instance removed: containers stopped and deleted");
}

/// `terminationGracePeriodSeconds`, 30 s when unset (0).
fn grace_of(instance: &Instance) -> Duration {
    instance
        .spec
        .as_ref()
        .map(|s| s.termination_grace_period_seconds)
        .filter(|g| *g > 0)
        .map(|g| Duration::from_secs(g.unsigned_abs()))
        .unwrap_or(DEFAULT_GRACE)
}

/// The containers (and their recorded grace periods) of Instances not in `live`, i.e.
/// deleted while the agent was not watching.
async fn orphans(ctx: &Ctx, live: &HashSet<String>) -> Vec<(String, Duration)> {
    use containerd_client::services::v1::{
        ListContainersRequest, containers_client::ContainersClient,
    };
    let listed = ContainersClient::new(ctx.client.channel())
        .list(ctx.client.request(ListContainersRequest {
            filters: vec![format!("labels.\"{LABEL_UID}\"")],
        }))
        .await;
    let containers = match listed {
        Ok(response) => response.into_inner().containers,
        Err(e) => {
            tracing::debug!(error = %e, "listing containers for orphans");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for c in containers {
        let Some(uid) = c.labels.get(LABEL_UID) else {
            continue;
        };
        if live.contains(uid) {
            continue;
        }
        let grace = c
            .labels
            .get(LABEL_GRACE)
            .and_then(|g| g.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_GRACE);
        out.push((c.id, grace));
    }
    out
}

fn containers_of(instance: &Instance) -> &[hypermesh_api::v1::Container] {
    instance
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[])
}

fn ids(instance: &Instance, container: &str) -> String {
    let m = instance.meta();
    container_id(&m.namespace, &m.name, &m.uid, container)
}

/// SIGTERM, up to `grace` for the exit, SIGKILL, then deletes task, container and
/// snapshot. Retries while containerd is unreachable.
async fn stop(client: &RuntimeClient, id: &str, grace: Duration) {
    const SIGTERM: u32 = 15;
    const SIGKILL: u32 = 9;
    for attempt in 0..30u32 {
        if attempt > 0 {
            tokio::time::sleep(RETRY).await;
        }
        if container::kill(client, id, SIGTERM).await.is_ok()
            && tokio::time::timeout(grace, container::wait(client, id))
                .await
                .is_err()
        {
            let _ = container::kill(client, id, SIGKILL).await;
            let _ =
                tokio::time::timeout(Duration::from_secs(10), container::wait(client, id)).await;
        }
        match container::delete(client, id).await {
            Ok(_) => return,
            Err(e) => tracing::warn!(container = id, error = %e, "deleting container; retrying"),
        }
    }
}

fn restarts(policy: RestartPolicy, code: i32) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Always | RestartPolicy::Unspecified => true,
    }
}

/// The status this agent owns for one Instance, written as a whole.
struct Shared {
    statuses: Vec<ContainerStatus>,
    start_time: Option<Timestamp>,
    phase: Option<InstancePhase>,
}

/// Shows container `index` waiting with `reason` and `message`, publishing only a change.
async fn set_waiting(
    ctx: &Ctx,
    instance: &Instance,
    shared: &Mutex<Shared>,
    index: usize,
    reason: &str,
    message: String,
) {
    let mut s = shared.lock().await;
    let waiting = ContainerStateWaiting {
        reason: reason.into(),
        message,
    };
    let status = &mut s.statuses[index];
    if status.state.as_ref().and_then(|st| st.waiting.as_ref()) == Some(&waiting) {
        return;
    }
    status.state = Some(ContainerState {
        waiting: Some(waiting),
        ..Default::default()
    });
    publish(ctx, instance, &s).await;
}

/// Everything but removal: images, containers, exits, restarts, final phase.
async fn drive(ctx: &Arc<Ctx>, instance: &Instance) {
    let containers = containers_of(instance).to_vec();
    if containers.is_empty() {
        return;
    }
    let policy = instance
        .spec
        .as_ref()
        .and_then(|s| RestartPolicy::try_from(s.restart_policy).ok())
        .unwrap_or(RestartPolicy::Always);
    let old = instance.status.clone().unwrap_or_default();
    let statuses = containers
        .iter()
        .map(|c| {
            old.container_statuses
                .iter()
                .find(|s| s.name == c.name)
                .cloned()
                .unwrap_or_else(|| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    ..Default::default()
                })
        })
        .collect();
    let shared = Arc::new(Mutex::new(Shared {
        statuses,
        start_time: old.start_time,
        phase: None,
    }));

    // Images first: pull or report a missing one and keep trying, changing nothing else.
    loop {
        let mut ready = true;
        for (index, c) in containers.iter().enumerate() {
            let (reason, message) = match ctx.images.check(&c.image).await {
                ImageState::Ready => continue,
                ImageState::Down => {
                    ready = false;
                    continue;
                }
                ImageState::NotFound => (
                    "ImageNotFound",
                    format!(
                        "image {} is not in containerd and no archive in the image directory provides it",
                        c.image
                    ),
                ),
                ImageState::BackOff(error) => (
                    "ImagePullBackOff",
                    format!("back-off pulling image {}: {error}", c.image),
                ),
                ImageState::Pull => {
                    let pulling = format!("pulling image {}", c.image);
                    set_waiting(ctx, instance, &shared, index, "PullingImage", pulling).await;
                    match ctx.images.pull(&c.image).await {
                        Pulled::Done => continue,
                        Pulled::Down => {
                            ready = false;
                            continue;
                        }
                        Pulled::Failed(error) => (
                            "ErrImagePull",
                            format!("pulling image {}: {error}", c.image),
                        ),
                    }
                }
            };
            ready = false;
            set_waiting(ctx, instance, &shared, index, reason, message).await;
        }
        if ready {
            break;
        }
        tokio::time::sleep(RETRY * 2).await;
    }

    let mut loops = tokio::task::JoinSet::new();
    for (index, c) in containers.iter().enumerate() {
        let ctx = ctx.clone();
        let shared = shared.clone();
        let instance = instance.clone();
        let c = c.clone();
        loops
            .spawn(async move { run_container(&ctx, &instance, index, &c, policy, &shared).await });
    }
    let mut codes = Vec::new();
    while let Some(result) = loops.join_next().await {
        codes.push(result.unwrap_or(-1));
    }
    let mut s = shared.lock().await;
    s.phase = Some(if codes.iter().all(|c| *c == 0) {
        InstancePhase::Succeeded
    } else {
        InstancePhase::Failed
    });
    publish(ctx, instance, &s).await;
    tracing::info!(
        instance = %format!("{}/{}", instance.meta().namespace, instance.meta().name),
        phase = ?s.phase,
        "instance finished"
    );
}

fn config_of(ctx: &Ctx, instance: &Instance, c: &hypermesh_api::v1::Container) -> ContainerConfig {
    let meta = instance.meta();
    let resources = c.resources.clone().unwrap_or_default();
    let quantity = |text: &str| {
        Some(text)
            .filter(|t| !t.is_empty())
            .and_then(|q| q.parse::<hypermesh_api::quantity::Quantity>().ok())
    };
    ContainerConfig {
        id: ids(instance, &c.name),
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        working_dir: Some(c.working_dir.clone()).filter(|d| !d.is_empty()),
        cpu: quantity(&resources.cpu),
        memory: quantity(&resources.memory),
        pids_limit: None,
        log: LogSink {
            logger: ctx.logger.clone(),
            file: crate::logs::run_log(&log_dir_of(&ctx.log_dir, instance, &c.name), 0),
            max_bytes: ctx.log_max_bytes,
            max_files: ctx.log_max_files,
        },
        labels: HashMap::from([
            (LABEL_UID.to_string(), meta.uid.clone()),
            (LABEL_NAMESPACE.to_string(), meta.namespace.clone()),
            (LABEL_NAME.to_string(), meta.name.clone()),
            (LABEL_CONTAINER.to_string(), c.name.clone()),
            (
                LABEL_GRACE.to_string(),
                grace_of(instance).as_secs().to_string(),
            ),
        ]),
        // Set per start by ContainerSetup::prepare.
        user: None,
        mounts: Vec::new(),
    }
}

/// How one run of a container ended.
struct Exit {
    code: i32,
    reason: String,
    message: String,
    started_at: Option<Timestamp>,
    /// Its liveness probe failed and it was killed.
    liveness_failed: bool,
}

/// Runs container `index` until it is done under `policy`; returns its last exit code.
async fn run_container(
    ctx: &Arc<Ctx>,
    instance: &Instance,
    index: usize,
    c: &hypermesh_api::v1::Container,
    policy: RestartPolicy,
    shared: &Arc<Mutex<Shared>>,
) -> i32 {
    let base = config_of(ctx, instance, c);
    let log_dir = log_dir_of(&ctx.log_dir, instance, &c.name);
    // Finished before an agent restart: do not run it again.
    {
        let s = shared.lock().await;
        if let Some(t) = s.statuses[index]
            .state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            && !restarts(policy, t.exit_code)
        {
            return t.exit_code;
        }
    }
    let mut backoff = ctx.backoff;
    loop {
        let mut launch = match ctx.setup.prepare(instance, index, c, base.clone()).await {
            Ok(launch) => launch,
            // A container an earlier agent left running is adopted as it is.
            Err(_) if container::pid(&ctx.client, &base.id).await.is_ok() => Launch {
                config: base.clone(),
                probes: ContainerProbes::of(index, c).unwrap_or_default(),
            },
            Err(e) => {
                config_error(ctx, instance, index, shared, &e).await;
                continue;
            }
        };
        // One log per run: this one and the previous (`hmctl logs --previous`) are kept.
        let run = shared.lock().await.statuses[index].restart_count;
        crate::logs::prune_runs(&log_dir, 1);
        launch.config.log.file = crate::logs::run_log(&log_dir, run);
        let exit = run_once(ctx, &launch.config, index, shared, instance, &launch.probes).await;
        let mut s = shared.lock().await;
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: exit.code,
                signal: 0,
                reason: exit.reason.clone(),
                message: exit.message.clone(),
                started_at: exit.started_at,
                finished_at: Some(hypermesh_api::time::now()),
            }),
            ..Default::default()
        };
        let status = &mut s.statuses[index];
        status.ready = false;
        // As Kubernetes: a container its liveness probe killed restarts unless Never.
        let restart =
            restarts(policy, exit.code) || (exit.liveness_failed && policy != RestartPolicy::Never);
        if !restart {
            status.state = Some(terminated);
            if s.statuses.len() > 1 {
                publish(ctx, instance, &s).await;
            }
            return exit.code;
        }
        status.last_state = Some(terminated);
        status.restart_count += 1;
        status.state = Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting failed container {} (exit code {})",
                    backoff.as_secs_f64(),
                    c.name,
                    exit.code
                ),
            }),
            ..Default::default()
        });
        publish(ctx, instance, &s).await;
        drop(s);
        tokio::time::sleep(backoff).await;
        backoff = Backoff::new(ctx.backoff, MAX_RESTART_BACKOFF).after(backoff);
    }
}

/// Creates (or adopts) and starts the container, reports it running, waits for its
/// exit and deletes it. Retries while containerd is unreachable.
async fn run_once(
    ctx: &Arc<Ctx>,
    config: &ContainerConfig,
    index: usize,
    shared: &Arc<Mutex<Shared>>,
    instance: &Instance,
    probes: &ContainerProbes,
) -> Exit {
    let client = &ctx.client;
    let start_error = |e: RuntimeError| Exit {
        code: 128,
        reason: "StartError".into(),
        message: e.to_string(),
        started_at: None,
        liveness_failed: false,
    };
    loop {
        let adopted = match container::create(client, config).await {
            Ok(_) => match container::start(client, &config.id).await {
                Ok(_) => false,
                Err(e) if e.is_unreachable() => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(e) => {
                    let _ = container::delete(client, &config.id).await;
                    return start_error(e);
                }
            },
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                // Adopted. A task created but never started (the agent stopped in
                // between) is started now; a running or exited one refuses, harmlessly.
                let _ = container::start(client, &config.id).await;
                true
            }
            Err(e) if e.is_unreachable() => {
                tracing::debug!(error = %e, "containerd unreachable; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(e) => return start_error(e),
        };
        let started_at = {
            let mut s = shared.lock().await;
            let previous = s.statuses[index]
                .state
                .as_ref()
                .and_then(|st| st.running.as_ref())
                .and_then(|r| r.started_at);
            let started_at = if adopted {
                previous.unwrap_or_else(hypermesh_api::time::now)
            } else {
                hypermesh_api::time::now()
            };
            let status = &mut s.statuses[index];
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(started_at),
                }),
                ..Default::default()
            });
            status.container_id = format!("containerd://{}", config.id);
            status.image = config.image.clone();
            // Without a readiness probe a running container is ready.
            status.ready = probes.readiness.is_none();
            if s.start_time.is_none() {
                s.start_time = Some(started_at);
            }
            s.phase = Some(InstancePhase::Running);
            publish(ctx, instance, &s).await;
            started_at
        };
        let probing = Probing::start(ctx, instance, index, shared, probes, &config.id);
        // While containerd is away this keeps waiting; a task that kept running is
        // still waited on when it is back (adopted as it is, not restarted).
        let exit = ctx.exits.wait(&config.id).await;
        let liveness = probing.stop();
        // Read OOM state before delete removes the cgroup (the wait already did).
        let deleted = loop {
            match container::delete(client, &config.id).await {
                Ok(status) => break status,
                Err(e) => {
                    tracing::debug!(error = %e, "deleting exited container; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        // Deleting the task closed the output pipes; once the logger has written the
        // rest, the reported exit means the log is complete.
        crate::logs::wait_done(&config.log.file, LOG_FLUSH).await;
        let exit = match exit {
            TaskEnd::Exited(exit) => exit,
            // An adopted container without a task: start it afresh.
            TaskEnd::Missing => match deleted {
                Some(exit) => exit,
                None => continue,
            },
        };
        return Exit {
            code: i32::try_from(exit.code).unwrap_or(i32::MAX),
            reason: exit.reason().to_string(),
            liveness_failed: liveness.is_some(),
            message: liveness.unwrap_or_default(),
            started_at: Some(started_at),
        };
    }
}

/// Shows a container's spec problem as `CreateContainerConfigError` (transient ones are
/// only logged), then waits before the next try.
async fn config_error(
    ctx: &Ctx,
    instance: &Instance,
    index: usize,
    shared: &Mutex<Shared>,
    error: &LaunchError,
) {
    if error.is_transient() {
        tracing::debug!(error = %error, "preparing container; retrying");
        tokio::time::sleep(RETRY).await;
        return;
    }
    let waiting = ContainerStateWaiting {
        reason: "CreateContainerConfigError".into(),
        message: error.to_string(),
    };
    {
        let mut s = shared.lock().await;
        let status = &mut s.statuses[index];
        if status.state.as_ref().and_then(|st| st.waiting.as_ref()) != Some(&waiting) {
            tracing::info!(container = %status.name, error = %error, "container config error");
            status.ready = false;
            status.state = Some(ContainerState {
                waiting: Some(waiting),
                ..Default::default()
            });
            publish(ctx, instance, &s).await;
        }
    }
    tokio::time::sleep(RETRY * 2).await;
}

/// The probes of one running container, on a task of their own: readiness flips are
/// published as the container's `ready`; a liveness failure is recorded and the
/// container stopped (SIGTERM, the grace period, SIGKILL), which ends the exit wait.
struct Probing {
    task: Option<tokio::task::JoinHandle<()>>,
    liveness: Arc<std::sync::OnceLock<String>>,
}

impl Probing {
    fn start(
        ctx: &Arc<Ctx>,
        instance: &Instance,
        index: usize,
        shared: &Arc<Mutex<Shared>>,
        probes: &ContainerProbes,
        id: &str,
    ) -> Probing {
        let liveness = Arc::new(std::sync::OnceLock::new());
        if probes.readiness.is_none() && probes.liveness.is_none() {
            return Probing {
                task: None,
                liveness,
            };
        }
        let (ctx, instance, shared, probes) = (
            ctx.clone(),
            instance.clone(),
            shared.clone(),
            probes.clone(),
        );
        let target = probe::Target {
            client: ctx.client.clone(),
            container_id: id.to_string(),
        };
        let failed = liveness.clone();
        let task = tokio::spawn(async move {
            let on_ready = |ready: bool, why: String| {
                let (ctx, instance, shared) = (ctx.clone(), instance.clone(), shared.clone());
                async move {
                    let mut s = shared.lock().await;
                    tracing::info!(container = %s.statuses[index].name, ready, why, "readiness changed");
                    s.statuses[index].ready = ready;
                    publish(&ctx, &instance, &s).await;
                }
            };
            let failure = probes.run(&target, on_ready).await;
            tracing::info!(container = %target.container_id, failure, "killing the container");
            let _ = failed.set(failure);
            const SIGTERM: u32 = 15;
            const SIGKILL: u32 = 9;
            let id = &target.container_id;
            if container::kill(&ctx.client, id, SIGTERM).await.is_ok()
                && tokio::time::timeout(grace_of(&instance), ctx.exits.wait(id))
                    .await
                    .is_err()
            {
                let _ = container::kill(&ctx.client, id, SIGKILL).await;
            }
        });
        Probing {
            task: Some(task),
            liveness,
        }
    }

    /// Stops probing; the liveness failure that killed the container, if one did.
    fn stop(mut self) -> Option<String> {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.liveness.get().cloned()
    }
}

impl Drop for Probing {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Writes this agent's part of the status (container statuses, phase, start time, the
/// Ready condition), keeping the rest (other conditions). Gives up quietly when the
/// Instance is gone.
async fn publish(ctx: &Ctx, instance: &Instance, shared: &Shared) {
    let meta = instance.meta();
    for attempt in 0..10u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut current = match ctx.api.get(&meta.namespace, &meta.name).await {
            Ok(i) => i,
            Err(s) if s.code() == tonic::Code::NotFound => return,
            Err(s) => {
                tracing::warn!(error = %s, "reading instance for status");
                continue;
            }
        };
        if current.meta().uid != meta.uid {
            return;
        }
        let status = current.status.get_or_insert_with(Default::default);
        status.container_statuses = shared.statuses.clone();
        if let Some(phase) = shared.phase {
            status.phase = phase as i32;
        }
        if shared.start_time.is_some() {
            status.start_time = shared.start_time;
        }
        if status.host_ip.is_empty() || status.address.is_empty() {
            let facts = ctx.node_facts().await;
            if status.host_ip.is_empty() {
                status.host_ip = facts.host_ip;
            }
            // The Instance's global address (fd48:4d00::/32), stable for its lifetime.
            if status.address.is_empty() && !facts.node_id.is_empty() {
                status.address = crate::register::global_address(
                    &facts.node_id,
                    &format!("instance/{}", meta.uid),
                )
                .to_string();
            }
        }
        // Ready: every container running and ready (its readiness probe passing, or
        // running when it has none). The workload controller counts Instances as
        // available from this condition.
        let ready = !status.container_statuses.is_empty()
            && status.container_statuses.iter().all(|c| c.ready)
            && status.phase == hypermesh_api::v1::InstancePhase::Running as i32;
        let reason = if ready {
            "ContainersReady"
        } else {
            "ContainersNotReady"
        };
        conditions::set_condition(
            &mut status.conditions,
            conditions::condition("Ready", conditions::status_of(ready), reason, ""),
            hypermesh_api::time::now(),
        );
        match ctx.api.update_status(&current).await {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::NotFound => return,
            Err(s) => tracing::warn!(error = %s, "instance status update failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_and_distinct() {
        let a = container_id("default", "web", "u1", "main");
        assert_eq!(a, container_id("default", "web", "u1", "main"));
        assert_ne!(a, container_id("default", "web", "u2", "main"));
        assert_ne!(a, container_id("default", "web", "u1", "side"));
        assert_eq!(a.len(), 35);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn restart_policies() {
        assert!(!restarts(RestartPolicy::Never, 1));
        assert!(restarts(RestartPolicy::OnFailure, 1));
        assert!(!restarts(RestartPolicy::OnFailure, 0));
        assert!(restarts(RestartPolicy::Always, 0));
        assert!(restarts(RestartPolicy::Unspecified, 0));
    }
}
