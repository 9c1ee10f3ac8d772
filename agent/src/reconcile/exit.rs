//! How one run of a container ended ([`Exit`]): the runs that ended while no agent
//! watched (recovered from their logs so RESTARTS goes on), and the events an exit is
//! news for (OOMKilled, a liveness kill).

use hypermesh_api::v1::Instance;
use hypermesh_containers::{self as containers, container};
use hypermesh_runtime::events::EventType;
use pbjson_types::Timestamp;

use super::ctx::Ctx;

/// How one run of a container ended.
pub(super) struct Exit {
    pub(super) code: i32,
    pub(super) reason: String,
    pub(super) message: String,
    pub(super) started_at: Option<Timestamp>,
    /// When it ended, as containerd recorded it (also for a container that ended while
    /// the agent was down); `None` when containerd gave no time.
    pub(super) finished_at: Option<Timestamp>,
    /// Its liveness probe failed and it was killed.
    pub(super) liveness_failed: bool,
}

/// The newest run of a container (from its logs) when it ended while no agent watched:
/// it is run `restarts` or later (the status never saw it end) and containerd has no
/// task for it any more (a host or cluster restart removed it). Its exit status is gone,
/// so it is reported as kubelet does (`ContainerStatusUnknown`, 137), ended when its
/// output did. `None` while containerd cannot be asked, or when the run may be adopted.
pub(super) async fn ended_unseen(
    ctx: &Ctx,
    id: &str,
    log_dir: &std::path::Path,
    restarts: u32,
) -> Option<(u32, Exit)> {
    let run = *crate::logs::runs(log_dir).last()?;
    if run < restarts {
        return None;
    }
    match container::pid(&ctx.client, id).await {
        Ok(_) => return None,
        Err(e) if e.code() == Some(tonic::Code::NotFound) => {}
        Err(containers::Error::InvalidConfig(_)) => {}
        Err(_) => return None,
    }
    let log = crate::logs::run_log(log_dir, run);
    let ended = std::fs::metadata(crate::logs::done_marker(&log))
        .or_else(|_| std::fs::metadata(&log))
        .and_then(|m| m.modified())
        .ok();
    tracing::info!(
        container = id,
        run,
        "a run ended while the agent was down; counting it as a restart"
    );
    Some((
        run,
        Exit {
            code: 137,
            reason: "ContainerStatusUnknown".into(),
            message: "the container ended while the agent was down; its exit status is gone".into(),
            started_at: None,
            finished_at: ended.map(hypermesh_api::time::from_system_time),
            liveness_failed: false,
        },
    ))
}

/// Records why a container ended, when that is news: killed for memory, or by its
/// liveness probe.
pub(super) async fn record_exit(ctx: &Ctx, instance: &Instance, name: &str, exit: &Exit) {
    if exit.reason == "OOMKilled" {
        let event = format!(
            "Container {name} was killed: out of memory (exit code {})",
            exit.code
        );
        ctx.events
            .record(instance, EventType::Warning, "OOMKilled", event)
            .await;
    }
    if exit.liveness_failed {
        let event = format!("Liveness probe failed: {}", exit.message);
        ctx.events
            .record(instance, EventType::Warning, "Unhealthy", event)
            .await;
        let event = format!("Container {name} failed its liveness probe and was killed");
        ctx.events
            .record(instance, EventType::Normal, "Killing", event)
            .await;
    }
}
