//! Node conditions the agent owns (Ready, MemoryPressure, DiskPressure, RuntimeReady,
//! GpuDriverReady; NetworkAccounting comes from [`crate::accounting`]): how each is measured, and merging them into the Node so
//! `lastTransitionTime` only moves when a status changes.

use std::path::Path;
use std::time::Duration;

use hypermesh_api::conditions;
use hypermesh_api::v1::Condition;

use crate::detect::gpu::GpuReport;

/// Condition types this agent sets; others (e.g. `Suspect`) are left as they are.
pub const OWNED: &[&str] = &[
    "Ready",
    "MemoryPressure",
    "DiskPressure",
    "RuntimeReady",
    "GpuDriverReady",
    crate::accounting::CONDITION,
];

/// A condition with no transition time yet (set by [`merge`]).
pub fn condition(kind: &str, status: bool, reason: &str, message: impl Into<String>) -> Condition {
    conditions::condition(kind, conditions::status_of(status), reason, message)
}

/// The readings behind the conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Readings {
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    /// Root filesystem (total, available) bytes, if statvfs answered.
    pub root_fs: Option<(u64, u64)>,
    /// `Ok(())` when containerd accepted a connection, else the error text.
    pub containerd: Result<(), String>,
}

/// Thresholds in percent.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub memory_available_percent: f64,
    pub disk_free_percent: f64,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Every condition the agent owns, from fresh readings.
pub fn evaluate(r: &Readings, t: Thresholds, gpu: &GpuReport, socket: &Path) -> Vec<Condition> {
    let mem_pct = percent(r.memory_available_bytes, r.memory_total_bytes);
    let memory = if mem_pct < t.memory_available_percent {
        condition(
            "MemoryPressure",
            true,
            "LowMemory",
            format!(
                "{mem_pct:.1}% of memory available, below {}%",
                t.memory_available_percent
            ),
        )
    } else {
        condition(
            "MemoryPressure",
            false,
            "SufficientMemory",
            format!("{mem_pct:.1}% of memory available"),
        )
    };
    let disk = match r.root_fs {
        Some((total, avail)) => {
            let pct = percent(avail, total);
            if pct < t.disk_free_percent {
                condition(
                    "DiskPressure",
                    true,
                    "LowDiskSpace",
                    format!(
                        "root filesystem {pct:.1}% free, below {}%",
                        t.disk_free_percent
                    ),
                )
            } else {
                condition(
                    "DiskPressure",
                    false,
                    "SufficientDiskSpace",
                    format!("root filesystem {pct:.1}% free"),
                )
            }
        }
        None => Condition {
            status: "Unknown".into(),
            ..condition(
                "DiskPressure",
                false,
                "RootFilesystemUnreadable",
                "statvfs(/) failed",
            )
        },
    };
    let runtime = match &r.containerd {
        Ok(()) => condition(
            "RuntimeReady",
            true,
            "ContainerdReachable",
            format!("containerd accepts connections on {}", socket.display()),
        ),
        Err(e) => condition(
            "RuntimeReady",
            false,
            "ContainerdUnreachable",
            format!("connecting to {}: {e}", socket.display()),
        ),
    };
    let gpu = match gpu {
        GpuReport::Nvml {
            driver_version,
            gpus,
        } => condition(
            "GpuDriverReady",
            true,
            "NvmlAvailable",
            format!("NVIDIA driver {driver_version}, {} GPU(s)", gpus.len()),
        ),
        GpuReport::Unavailable { reason, message } => {
            condition("GpuDriverReady", false, reason, message.clone())
        }
    };
    vec![
        condition("Ready", true, "AgentReady", "hm-agent is posting status"),
        memory,
        disk,
        runtime,
        gpu,
    ]
}

/// `current` with `desired` applied: a condition keeps its `lastTransitionTime` while
/// its status is unchanged; conditions of types the agent does not own are kept.
pub fn merge(current: &[Condition], desired: Vec<Condition>) -> Vec<Condition> {
    let now = hypermesh_api::time::now();
    let mut out = current.to_vec();
    for d in desired {
        conditions::set_condition(&mut out, d, now);
    }
    out.sort_by(|a, b| a.r#type.cmp(&b.r#type));
    out
}

/// How a freshly merged condition list differs from the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// Nothing to write.
    None,
    /// Only messages moved (live figures such as "52.1% of memory available").
    Messages,
    /// A condition appeared, went, or changed status or reason.
    State,
}

/// How `current` and `merged` differ, ignoring order (transition times are compared
/// with the state, since merge keeps them stable).
pub fn difference(current: &[Condition], merged: &[Condition]) -> Difference {
    let sorted = |list: &[Condition]| {
        let mut list = list.to_vec();
        list.sort_by(|x, y| x.r#type.cmp(&y.r#type));
        list
    };
    let (a, b) = (sorted(current), sorted(merged));
    if a == b {
        return Difference::None;
    }
    let state = |c: &Condition| {
        (
            c.r#type.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.last_transition_time,
        )
    };
    if a.len() == b.len() && a.iter().map(state).eq(b.iter().map(state)) {
        Difference::Messages
    } else {
        Difference::State
    }
}

/// Connects to containerd's socket (`unix://` prefix allowed) within `timeout`.
pub async fn probe_containerd(socket: &Path, timeout: Duration) -> Result<(), String> {
    let text = socket.to_string_lossy();
    let path = text.strip_prefix("unix://").unwrap_or(&text).to_string();
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(&path)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Fresh memory, root filesystem and runtime readings.
pub async fn read(meminfo: &Path, socket: &Path) -> Readings {
    let mem = std::fs::read_to_string(meminfo)
        .map(|t| crate::detect::memory::parse_meminfo(&t))
        .unwrap_or_default();
    let root_fs = rustix::fs::statvfs("/").ok().map(|s| {
        let frsize = if s.f_frsize > 0 {
            s.f_frsize
        } else {
            s.f_bsize
        };
        (
            s.f_blocks.saturating_mul(frsize),
            s.f_bavail.saturating_mul(frsize),
        )
    });
    Readings {
        memory_total_bytes: mem.get("MemTotal").copied().unwrap_or(0),
        memory_available_bytes: mem.get("MemAvailable").copied().unwrap_or(0),
        root_fs,
        containerd: probe_containerd(socket, Duration::from_secs(1)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let first = merge(&[], vec![condition("Ready", true, "A", "")]);
        let t0 = first[0].last_transition_time;
        let again = merge(&first, vec![condition("Ready", true, "B", "other")]);
        assert_eq!(again[0].last_transition_time, t0);
        assert_eq!(again[0].reason, "B");
        let suspect = Condition {
            r#type: "Suspect".into(),
            ..first[0].clone()
        };
        let kept = merge(&[suspect], vec![condition("Ready", false, "C", "")]);
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn a_moving_percentage_is_a_message_change_not_a_state_change() {
        let stored = merge(
            &[],
            vec![condition(
                "MemoryPressure",
                false,
                "SufficientMemory",
                "52.1%",
            )],
        );
        let same = merge(
            &stored,
            vec![condition(
                "MemoryPressure",
                false,
                "SufficientMemory",
                "52.1%",
            )],
        );
        assert_eq!(difference(&stored, &same), Difference::None);
        let moved = merge(
            &stored,
            vec![condition(
                "MemoryPressure",
                false,
                "SufficientMemory",
                "49.7%",
            )],
        );
        assert_eq!(difference(&stored, &moved), Difference::Messages);
        let pressure = merge(
            &stored,
            vec![condition("MemoryPressure", true, "LowMemory", "3.0%")],
        );
        assert_eq!(difference(&stored, &pressure), Difference::State);
        let more = merge(&stored, vec![condition("Ready", true, "AgentReady", "")]);
        assert_eq!(difference(&stored, &more), Difference::State);
    }

    #[test]
    fn pressure_thresholds() {
        let r = Readings {
            memory_total_bytes: 100,
            memory_available_bytes: 4,
            root_fs: Some((100, 50)),
            containerd: Err("no such file".into()),
        };
        let t = Thresholds {
            memory_available_percent: 5.0,
            disk_free_percent: 10.0,
        };
        let gpu = GpuReport::Unavailable {
            reason: "NvmlUnavailable".into(),
            message: "x".into(),
        };
        let c = evaluate(&r, t, &gpu, Path::new("/x.sock"));
        let get = |k: &str| c.iter().find(|c| c.r#type == k).map(|c| c.status.clone());
        assert_eq!(get("MemoryPressure").as_deref(), Some("True"));
        assert_eq!(get("DiskPressure").as_deref(), Some("False"));
        assert_eq!(get("RuntimeReady").as_deref(), Some("False"));
        assert_eq!(get("GpuDriverReady").as_deref(), Some("False"));
    }

    #[test]
    fn runtime_ready_names_the_socket_and_the_error() {
        let mut r = Readings {
            memory_total_bytes: 100,
            memory_available_bytes: 50,
            root_fs: Some((100, 50)),
            containerd: Err("Connection refused (os error 111)".into()),
        };
        let t = Thresholds {
            memory_available_percent: 5.0,
            disk_free_percent: 10.0,
        };
        let gpu = GpuReport::Unavailable {
            reason: "NvmlUnavailable".into(),
            message: "x".into(),
        };
        let runtime = |r: &Readings| {
            evaluate(r, t, &gpu, Path::new("/run/ctd.sock"))
                .into_iter()
                .find(|c| c.r#type == "RuntimeReady")
                .expect("RuntimeReady")
        };
        let down = runtime(&r);
        assert_eq!(
            (down.status.as_str(), down.reason.as_str()),
            ("False", "ContainerdUnreachable")
        );
        assert_eq!(
            down.message,
            "connecting to /run/ctd.sock: Connection refused (os error 111)"
        );
        r.containerd = Ok(());
        let up = runtime(&r);
        assert_eq!(
            (up.status.as_str(), up.reason.as_str()),
            ("True", "ContainerdReachable")
        );
    }
}
