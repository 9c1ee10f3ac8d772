//! What an Instance reports: probes run beside each running container (readiness sets
//! `ready`, a liveness failure kills it), the containers' states, conditions and phase,
//! published through `UpdateStatus`.

use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::Resource;
use hypermesh_api::v1::{ContainerStatus, Instance, InstancePhase};
use pbjson_types::Timestamp;
use tokio::sync::Mutex;

use crate::probe::{self, ContainerProbes};
use crate::runtime_latency::Operation;
use hypermesh_containers::container;

use super::ctx::*;

/// The status this agent owns for one Instance, written as a whole.
pub(super) struct Shared {
    pub(super) statuses: Vec<ContainerStatus>,
    pub(super) start_time: Option<Timestamp>,
    pub(super) phase: Option<InstancePhase>,
}

/// The probes of one running container, on a task of their own: readiness flips are
/// published as the container's `ready`; a liveness failure is recorded and the
/// container stopped (SIGTERM, the grace period, SIGKILL), which ends the exit wait.
pub(super) struct Probing {
    pub(super) task: Option<tokio::task::JoinHandle<()>>,
    pub(super) liveness: Arc<std::sync::OnceLock<String>>,
}

impl Probing {
    pub(super) fn start(
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
            let kill = |signal| {
                ctx.latency
                    .time(Operation::Kill, container::kill(&ctx.client, id, signal))
            };
            if kill(SIGTERM).await.is_ok()
                && tokio::time::timeout(grace_of(&instance), ctx.exits.wait(id))
                    .await
                    .is_err()
            {
                let _ = kill(SIGKILL).await;
            }
        });
        Probing {
            task: Some(task),
            liveness,
        }
    }

    /// Stops probing; the liveness failure that killed the container, if one did.
    pub(super) fn stop(mut self) -> Option<String> {
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

/// Sets condition `kind` to True/False, moving its transition time only when it flips.
pub(super) fn set_condition(
    conditions: &mut Vec<hypermesh_api::v1::Condition>,
    kind: &str,
    value: bool,
    reason: &str,
) {
    use hypermesh_api::conditions;
    conditions::set_condition(
        conditions,
        conditions::condition(kind, conditions::status_of(value), reason, ""),
        hypermesh_api::time::now(),
    );
}

/// Writes this agent's part of the status (container statuses, phase, start time, the
/// Ready condition), keeping the rest (other conditions). Gives up quietly when the
/// Instance is gone.
pub(super) async fn publish(ctx: &Ctx, instance: &Instance, shared: &Shared) {
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
        set_condition(
            &mut status.conditions,
            "Ready",
            ready,
            if ready {
                "ContainersReady"
            } else {
                "ContainersNotReady"
            },
        );
        match ctx.api.update_status(&current).await {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::NotFound => return,
            Err(s) => tracing::warn!(error = %s, "instance status update failed; retrying"),
        }
    }
}
