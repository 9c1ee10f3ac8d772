//! Memory of the node-side processes in the `runtime` benchmark: `hm-agent`,
//! containerd, and per container the runc shim containerd started for it, the
//! `hm-logger` the shim started for its output, and the container's own process. Shims
//! are found by their command line (`-namespace hypermesh -address SOCKET`), the
//! logger and the container process as the shim's children.

use std::collections::HashSet;
use std::path::Path;

use crate::procfs::{self, Memory};

/// The runc shim program containerd 1.6 starts per container.
const SHIM: &str = "containerd-shim-runc-v2";
/// The log writer the agent asks the shim to start per container.
const LOGGER: &str = "hm-logger";

/// One reading of every node-side process.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The agent process.
    pub agent: Memory,
    /// The containerd daemon.
    pub containerd: Memory,
    /// One per container: its shim.
    pub shims: Vec<Memory>,
    /// One per container: its `hm-logger`.
    pub loggers: Vec<Memory>,
    /// The containers' own processes (`sleep`).
    pub containers: Vec<Memory>,
}

/// Reads the memory of the agent (`agent_pid`), containerd (`containerd_pid`) and the
/// shims of containerd namespace `namespace` on `socket`, with their children.
pub fn snapshot(
    agent_pid: Option<u32>,
    containerd_pid: Option<u32>,
    socket: &Path,
    namespace: &str,
) -> Snapshot {
    let read = |pid: Option<u32>| pid.and_then(procfs::memory).unwrap_or_default();
    let table = procfs::processes();
    let socket = socket.to_string_lossy();
    let shims: HashSet<u32> = table
        .iter()
        .filter(|p| {
            p.program() == SHIM
                && p.flag("-namespace") == Some(namespace)
                && p.flag("-address") == Some(socket.as_ref())
        })
        .map(|p| p.pid)
        .collect();
    let mut snapshot = Snapshot {
        agent: read(agent_pid),
        containerd: read(containerd_pid),
        shims: shims.iter().map(|pid| read(Some(*pid))).collect(),
        ..Default::default()
    };
    for child in table.iter().filter(|p| shims.contains(&p.parent)) {
        let memory = read(Some(child.pid));
        if child.program() == LOGGER {
            snapshot.loggers.push(memory);
        } else {
            snapshot.containers.push(memory);
        }
    }
    snapshot
}

/// `6.8 MB` (MiB, one decimal).
pub fn format_mib(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

/// `x.x MB` per item of `items`, summed.
pub fn per_item(items: &[Memory]) -> Memory {
    let total: Memory = items.iter().copied().sum();
    let n = items.len().max(1) as u64;
    Memory {
        rss_kib: total.rss_kib / n,
        pss_kib: total.pss_kib / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_and_formats() {
        let items = [
            Memory {
                rss_kib: 1024,
                pss_kib: 512,
            },
            Memory {
                rss_kib: 3072,
                pss_kib: 1536,
            },
        ];
        assert_eq!(
            per_item(&items),
            Memory {
                rss_kib: 2048,
                pss_kib: 1024
            }
        );
        assert_eq!(per_item(&[]), Memory::default());
        assert_eq!(format_mib(6_963), "6.8 MB");
    }

    #[test]
    fn no_shims_on_a_socket_nobody_uses() {
        let s = snapshot(
            Some(std::process::id()),
            None,
            Path::new("/nonexistent/containerd.sock"),
            "hypermesh",
        );
        assert!(s.agent.rss_kib > 0);
        assert_eq!(s.containerd, Memory::default());
        assert!(s.shims.is_empty() && s.loggers.is_empty() && s.containers.is_empty());
    }
}
