//! The STATUS of an Instance as `hmctl get` shows it, computed the way kubectl computes
//! a pod's: the phase (or the Instance's own reason), overridden by the last container
//! that is waiting or terminated with a reason (`CrashLoopBackOff`, `ImagePullBackOff`,
//! `OOMKilled`, `Completed`, `Error`, …; `ExitCode:N` or `Signal:N` without one),
//! `NotReady` for a running Instance whose containers are not all ready, and
//! `Terminating` once it is being deleted.

use hypermesh_api::Resource;
use hypermesh_api::v1::{self, Instance};

use super::{NONE, title_case};

/// The phase as a word (`Running`), or `<none>`.
pub fn phase(instance: &Instance) -> String {
    let phase = instance.status.as_ref().map_or(0, |s| s.phase);
    match v1::InstancePhase::try_from(phase) {
        Ok(v1::InstancePhase::Unspecified) => NONE.to_string(),
        Ok(p) => title_case(p.as_str_name()),
        Err(_) => phase.to_string(),
    }
}

/// The STATUS cell.
pub fn status(instance: &Instance) -> String {
    if instance.meta().deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = instance.status.clone().unwrap_or_default();
    let mut reason = if status.reason.is_empty() {
        phase(instance)
    } else {
        status.reason.clone()
    };
    let mut running_ready = 0;
    let mut running = false;
    for c in status.container_statuses.iter().rev() {
        let state = c.state.clone().unwrap_or_default();
        if let Some(w) = state.waiting.filter(|w| !w.reason.is_empty()) {
            reason = w.reason;
        } else if let Some(t) = state.terminated {
            reason = if !t.reason.is_empty() {
                t.reason
            } else if t.signal != 0 {
                format!("Signal:{}", t.signal)
            } else {
                format!("ExitCode:{}", t.exit_code)
            };
        } else if state.running.is_some() {
            running = true;
            if c.ready {
                running_ready += 1;
            }
        }
    }
    let total = instance.spec.as_ref().map_or(0, |s| s.containers.len());
    // A finished container beside running ones: the Instance is not done.
    if reason == "Completed" && running {
        reason = "Running".into();
    }
    if reason == "Running" && running_ready < total && total > 0 {
        reason = "NotReady".into();
    }
    reason
}

/// READY: ready containers over containers, e.g. `1/2`.
pub fn ready(instance: &Instance) -> String {
    let ready = instance.status.as_ref().map_or(0, |s| {
        s.container_statuses.iter().filter(|c| c.ready).count()
    });
    let total = instance.spec.as_ref().map_or(0, |s| s.containers.len());
    format!("{ready}/{total}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, InstancePhase, InstanceSpec, InstanceStatus,
    };

    fn instance(phase: InstancePhase, containers: Vec<ContainerStatus>) -> Instance {
        Instance {
            metadata: None,
            spec: Some(InstanceSpec {
                containers: containers
                    .iter()
                    .map(|c| v1::Container {
                        name: c.name.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            status: Some(InstanceStatus {
                phase: phase as i32,
                container_statuses: containers,
                ..Default::default()
            }),
        }
    }

    fn waiting(reason: &str) -> ContainerStatus {
        ContainerStatus {
            name: "main".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: reason.into(),
                    message: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn terminated(reason: &str, exit_code: i32, signal: i32) -> ContainerStatus {
        ContainerStatus {
            name: "main".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    reason: reason.into(),
                    exit_code,
                    signal,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn running(ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: "main".into(),
            ready,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning { started_at: None }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_reasons_win_over_the_phase() {
        let crash = instance(InstancePhase::Running, vec![waiting("CrashLoopBackOff")]);
        assert_eq!(status(&crash), "CrashLoopBackOff");
        let pull = instance(InstancePhase::Scheduled, vec![waiting("ImagePullBackOff")]);
        assert_eq!(status(&pull), "ImagePullBackOff");
        let oom = instance(InstancePhase::Failed, vec![terminated("OOMKilled", 137, 0)]);
        assert_eq!(status(&oom), "OOMKilled");
        let done = instance(
            InstancePhase::Succeeded,
            vec![terminated("Completed", 0, 0)],
        );
        assert_eq!(status(&done), "Completed");
        let bare = instance(InstancePhase::Failed, vec![terminated("", 3, 0)]);
        assert_eq!(status(&bare), "ExitCode:3");
        let killed = instance(InstancePhase::Failed, vec![terminated("", 0, 9)]);
        assert_eq!(status(&killed), "Signal:9");
    }

    #[test]
    fn running_needs_every_container_ready() {
        assert_eq!(
            status(&instance(InstancePhase::Running, vec![running(true)])),
            "Running"
        );
        let unready = instance(InstancePhase::Running, vec![running(false)]);
        assert_eq!(status(&unready), "NotReady");
        assert_eq!(ready(&unready), "0/1");
        assert_eq!(status(&instance(InstancePhase::Pending, vec![])), "Pending");
    }

    #[test]
    fn deletion_shows_terminating() {
        let mut i = instance(InstancePhase::Running, vec![running(true)]);
        i.metadata = Some(v1::ObjectMeta {
            deletion_timestamp: Some(Default::default()),
            ..Default::default()
        });
        assert_eq!(status(&i), "Terminating");
    }
}
