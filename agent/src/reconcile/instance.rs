//! One Instance's worker: waits for its images, starts each container (setting up its
//! volumes, user and probes), waits for it to exit, applies the restart policy with
//! back-off, and stops and deletes everything when the Instance goes.

use std::collections::HashMap;
use std::sync::Arc;

use hypermesh_api::Resource;
use hypermesh_api::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Instance, InstancePhase, RestartPolicy,
};
use hypermesh_runtime::events::EventType;
use tokio::sync::Mutex;

use crate::config::MAX_RESTART_BACKOFF;
use crate::container_setup::{Launch, LaunchError};
use crate::images::{ImageState, Pulled};
use crate::probe::ContainerProbes;
use crate::runtime_latency::Operation;
use hypermesh_containers::{self as containers, ContainerConfig, LogSink, TaskEnd, container};

use super::ctx::*;
use super::exit::{Exit, ended_unseen, record_exit};
use super::status::*;

const IMAGE_NOT_FOUND: &str = "ImageNotFound";

pub(super) fn restarts(policy: RestartPolicy, code: i32) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Always | RestartPolicy::Unspecified => true,
    }
}

/// Shows container `index` waiting with `reason` and `message`, publishing only a change.
pub(super) async fn set_waiting(
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
pub(super) async fn drive(ctx: &Arc<Ctx>, instance: &Instance) {
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
                ImageState::NotFound(imported) => (
                    IMAGE_NOT_FOUND,
                    crate::images::not_found_message(&c.image, &imported),
                ),
                ImageState::BackOff(error) => (
                    "ImagePullBackOff",
                    format!("back-off pulling image {}: {error}", c.image),
                ),
                ImageState::Pull => {
                    let pulling = format!("pulling image {}", c.image);
                    set_waiting(ctx, instance, &shared, index, "PullingImage", pulling).await;
                    let event = format!("Pulling image {:?}", c.image);
                    ctx.events
                        .record(instance, EventType::Normal, "Pulling", event)
                        .await;
                    match ctx.images.pull(&c.image).await {
                        Pulled::Done => {
                            let event = format!("Successfully pulled image {:?}", c.image);
                            ctx.events
                                .record(instance, EventType::Normal, "Pulled", event)
                                .await;
                            continue;
                        }
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
            if reason != "ImagePullBackOff" {
                let event = format!("Failed to get image {:?}: {reason}: {message}", c.image);
                ctx.events
                    .record(instance, EventType::Warning, "Failed", event)
                    .await;
            }
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

pub(super) fn config_of(
    ctx: &Ctx,
    instance: &Instance,
    c: &hypermesh_api::v1::Container,
) -> ContainerConfig {
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
        security: Default::default(),
    }
}

/// Runs container `index` until it is done under `policy`; returns its last exit code.
pub(super) async fn run_container(
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
    // A run an earlier agent started that ended unseen (its container gone: the host or
    // the whole cluster restarted) counts as an exit, so RESTARTS goes on from it.
    let restarts_so_far = shared.lock().await.statuses[index].restart_count;
    let mut unseen = ended_unseen(ctx, &base.id, &log_dir, restarts_so_far).await;
    loop {
        let recovered = unseen.is_some();
        let exit = match unseen.take() {
            Some((run, mut exit)) => {
                // The next run is numbered after the newest log, whatever the status said.
                let mut s = shared.lock().await;
                let status = &mut s.statuses[index];
                status.restart_count = status.restart_count.max(run);
                exit.started_at = status
                    .state
                    .as_ref()
                    .and_then(|st| st.running.as_ref())
                    .and_then(|r| r.started_at);
                exit
            }
            None => {
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
                // One log per run: this one and the previous (`hmctl logs --previous`)
                // are kept.
                let run = shared.lock().await.statuses[index].restart_count;
                crate::logs::prune_runs(&log_dir, 1);
                launch.config.log.file = crate::logs::run_log(&log_dir, run);
                run_once(ctx, &launch.config, index, shared, instance, &launch.probes).await
            }
        };
        let mut s = shared.lock().await;
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: exit.code,
                signal: 0,
                reason: exit.reason.clone(),
                message: exit.message.clone(),
                started_at: exit.started_at,
                finished_at: Some(exit.finished_at.unwrap_or_else(hypermesh_api::time::now)),
            }),
            ..Default::default()
        };
        record_exit(ctx, instance, &c.name, &exit).await;
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
        if recovered {
            // Restarted at once: the back-off is for crash loops, not for a host restart.
            status.state = Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: "ContainerCreating".into(),
                    message: format!(
                        "restarting container {}: its last run ended while the agent was down",
                        c.name
                    ),
                }),
                ..Default::default()
            });
            publish(ctx, instance, &s).await;
            continue;
        }
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
        let event = format!("Back-off restarting failed container {}", c.name);
        ctx.events
            .record(instance, EventType::Warning, "BackOff", event)
            .await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
    }
}

/// Creates (or adopts) and starts the container, reports it running, waits for its
/// exit and deletes it. Retries while containerd is unreachable.
pub(super) async fn run_once(
    ctx: &Arc<Ctx>,
    config: &ContainerConfig,
    index: usize,
    shared: &Arc<Mutex<Shared>>,
    instance: &Instance,
    probes: &ContainerProbes,
) -> Exit {
    let client = &ctx.client;
    let latency = &ctx.latency;
    let start_error = |e: containers::Error| Exit {
        code: 128,
        reason: "StartError".into(),
        message: e.to_string(),
        started_at: None,
        finished_at: None,
        liveness_failed: false,
    };
    loop {
        let created = latency
            .time(Operation::Create, container::create(client, config))
            .await;
        // Counting starts on the new cgroup before the container runs (an adopted one
        // is counted from now on).
        if matches!(&created, Err(e) if e.code() == Some(tonic::Code::AlreadyExists))
            || created.is_ok()
        {
            ctx.accounting.attach(&config.id);
        }
        let adopted = match created {
            Ok(_) => match latency
                .time(Operation::Start, container::start(client, &config.id))
                .await
            {
                Ok(_) => false,
                Err(e) if e.is_unreachable() => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(e) => {
                    let _ = latency
                        .time(Operation::Delete, container::delete(client, &config.id))
                        .await;
                    return start_error(e);
                }
            },
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                // Adopted. A task created but never started (the agent stopped in
                // between) is started now; a running or exited one refuses, harmlessly.
                let _ = latency
                    .time(Operation::Start, container::start(client, &config.id))
                    .await;
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
            (started_at, s.statuses[index].name.clone())
        };
        let (started_at, name) = started_at;
        if !adopted {
            let event = format!("Started container {name}");
            ctx.events
                .record(instance, EventType::Normal, "Started", event)
                .await;
        }
        let probing = Probing::start(ctx, instance, index, shared, probes, &config.id);
        // While containerd is away this keeps waiting; a task that kept running is
        // still waited on when it is back (adopted as it is, not restarted).
        let exit = ctx.exits.wait(&config.id).await;
        let liveness = probing.stop();
        // Read OOM state before delete removes the cgroup (the wait already did).
        let deleted = loop {
            let deleted = latency
                .time(Operation::Delete, container::delete(client, &config.id))
                .await;
            match deleted {
                Ok(status) => break status,
                Err(e) => {
                    tracing::debug!(error = %e, "deleting exited container; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        ctx.accounting.forget(&config.id);
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
            finished_at: exit.exited_at.map(hypermesh_api::time::from_system_time),
        };
    }
}

/// Shows a container's spec problem as `CreateContainerConfigError` (transient ones are
/// only logged), then waits before the next try.
pub(super) async fn config_error(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert!(!restarts(RestartPolicy::Never, 1));
        assert!(restarts(RestartPolicy::OnFailure, 1));
        assert!(!restarts(RestartPolicy::OnFailure, 0));
        assert!(restarts(RestartPolicy::Always, 0));
        assert!(restarts(RestartPolicy::Unspecified, 0));
    }
}
