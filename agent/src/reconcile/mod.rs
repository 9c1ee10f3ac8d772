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
//! period, SIGKILL) and its containers and snapshots removed; then the agent removes
//! its `hypermesh.io/containers` finalizer, so it shows `Terminating` until then. While containerd is
//! unreachable nothing is changed: operations are retried, and containers that kept
//! running (their shims outlive containerd) are waited on again as they are.
//!
//! Before each start, [`ContainerSetup`] sets up the container's volumes and resolves its
//! user, pids limit and probes; a spec problem shows as `CreateContainerConfigError`
//! and is retried. While a container runs its probes run beside it: readiness sets
//! `ready`, a liveness failure kills it and the restart policy applies. An Instance's
//! volume directories are removed with it (or, after a restart, found and removed).
//!
//! # Layout
//! - `ctx`: what every worker shares (containerd, images, volumes, the Node's facts),
//!   container labels, ids and grace periods.
//! - `instance`: one Instance's worker: its containers started, waited on, restarted
//!   by policy and stopped.
//! - `status`: probes beside each running container and the Instance's reported status.

mod ctx;
mod exit;
mod instance;
mod status;

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::v1::{Instance, InstancePhase};
use hypermesh_api::{Api, CONTAINERS_FINALIZER, Resource};
use hypermesh_runtime::events::{EventRecorder, EventType};
use hypermesh_runtime::watcher::{self, Event};
use tokio::sync::Mutex;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::container_setup::ContainerSetup;
use crate::images::{IMAGE_RESCAN, Images};
use crate::runtime_latency::{Operation, Outcome as _};
use crate::volumes::{self, InstanceVolumes};
use hypermesh_containers::{ContainerdClient, TaskExits, container};

use ctx::*;
use instance::drive;

pub use ctx::{container_id, log_dir_of};

/// Runs the reconciler until `shutdown`. Containers keep running when the agent stops.
pub async fn run(
    config: Config,
    channel: tonic::transport::Channel,
    kem: std::sync::Arc<hypermesh_trust::sealing::NodeKem>,
    accounting: Arc<crate::accounting::Accounting>,
    latency: crate::runtime_latency::RuntimeLatency,
    shutdown: CancellationToken,
) {
    let client = loop {
        match ContainerdClient::connect(&config.containerd_socket).await {
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
            crate::volumes::SealedSecrets::new(Api::new(channel.clone()), &config.node_name, kem),
            config.volumes_dir(),
            config.secrets_dir.clone(),
        ),
        pids_limit: config.pids_limit,
        user_namespace: user_namespace(),
    };
    let ctx = Arc::new(Ctx {
        images: Images::new(
            client.clone(),
            config.image_dir.clone(),
            config.pull.clone(),
            latency.clone(),
        ),
        exits: TaskExits::start(client.clone(), shutdown.clone()),
        client,
        api: Api::new(channel.clone()),
        events: EventRecorder::new(
            Api::new(channel.clone()),
            "hm-agent",
            config.node_name.clone(),
        ),
        nodes: Api::new(channel),
        node_name: config.node_name.clone(),
        node_facts: Mutex::new(None),
        log_dir: config.log_dir(),
        logger: config.logger.clone(),
        log_max_bytes: config.log_max_bytes,
        log_max_files: config.log_max_files,
        backoff: config.restart_backoff,
        setup,
        accounting,
        latency,
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
                    stops.spawn(async move { stop(&ctx, &id, grace).await });
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
        if container::pid(&ctx.client, &id).await.is_ok() {
            ctx.events
                .record(
                    &instance,
                    EventType::Normal,
                    "Killing",
                    format!(
                        "Stopping container {name} (grace period {}s)",
                        grace.as_secs()
                    ),
                )
                .await;
        }
        let ctx = ctx.clone();
        stops.spawn(async move { stop(&ctx, &id, grace).await });
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
    release(&ctx, &instance, &shutdown).await;
}

/// Confirms to the apiserver that `instance`'s containers are gone by removing its
/// [`CONTAINERS_FINALIZER`] (the Instance then leaves the API). Retries conflicts and
/// outages until the agent stops; a later list finds the Instance again.
async fn release(ctx: &Ctx, instance: &Instance, shutdown: &CancellationToken) {
    let meta = instance.meta();
    for attempt in 0..60u32 {
        if attempt > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        let mut latest = match ctx.api.get(&meta.namespace, &meta.name).await {
            Ok(latest) => latest,
            Err(s) if s.code() == tonic::Code::NotFound => return,
            Err(e) => {
                tracing::debug!(error = %e, "reading a deleted instance; retrying");
                continue;
            }
        };
        let m = latest.meta_mut();
        if m.uid != meta.uid || !m.finalizers.iter().any(|f| f == CONTAINERS_FINALIZER) {
            return;
        }
        m.finalizers.retain(|f| f != CONTAINERS_FINALIZER);
        match ctx.api.update(&latest).await {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::NotFound => return,
            Err(e) => tracing::debug!(error = %e, "confirming an instance's removal; retrying"),
        }
    }
    tracing::warn!(instance = %meta.name, namespace = %meta.namespace, "could not confirm the instance's removal to the apiserver");
}

/// The id mapping containers run with, or `None` (logged) where the kernel has no user
/// namespaces: they then run in the host's, root inside being root outside.
fn user_namespace() -> Option<container::IdMapping> {
    if container::user_namespaces_available() {
        Some(container::IdMapping::DEFAULT)
    } else {
        tracing::warn!(
            "this kernel has no user namespaces (/proc/sys/user/max_user_namespaces is 0): \
             containers run in the host's user namespace, root inside is root on the host"
        );
        None
    }
}

/// The containers (and their recorded grace periods) of Instances not in `live`, i.e.
/// deleted while the agent was not watching.
async fn orphans(ctx: &Ctx, live: &HashSet<String>) -> Vec<(String, Duration)> {
    let containers = match container::list_labelled(&ctx.client, LABEL_UID).await {
        Ok(containers) => containers,
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

/// SIGTERM, up to `grace` for the exit, SIGKILL, then deletes task, container and
/// snapshot. Retries while containerd is unreachable. The whole of it is timed as one
/// `stop`, each signal and delete on its own too.
async fn stop(ctx: &Ctx, id: &str, grace: Duration) {
    const SIGTERM: u32 = 15;
    const SIGKILL: u32 = 9;
    let (client, latency) = (&ctx.client, &ctx.latency);
    let started = std::time::Instant::now();
    let mut result = "error";
    for attempt in 0..30u32 {
        if attempt > 0 {
            tokio::time::sleep(RETRY).await;
        }
        let term = latency.time(Operation::Kill, container::kill(client, id, SIGTERM));
        if term.await.is_ok()
            && tokio::time::timeout(grace, container::wait(client, id))
                .await
                .is_err()
        {
            let _ = latency
                .time(Operation::Kill, container::kill(client, id, SIGKILL))
                .await;
            let _ =
                tokio::time::timeout(Duration::from_secs(10), container::wait(client, id)).await;
        }
        match latency
            .time(Operation::Delete, container::delete(client, id))
            .await
        {
            Ok(_) => {
                result = "ok";
                break;
            }
            Err(e) => {
                result = e.result();
                tracing::warn!(container = id, error = %e, "deleting container; retrying")
            }
        }
    }
    latency.observe(Operation::Stop, result, started);
}
