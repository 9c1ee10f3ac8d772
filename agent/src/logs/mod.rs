//! Container logs on the node: where they live, how they are written and read.
//!
//! Each run of a container writes one log (`<log-dir>/<ns>_<name>_<uid>/<container>/
//! <restart>.log`), rotated by size into `<restart>.log.1`, `.2`, … (oldest last). Lines
//! are stored in the CRI format, `<RFC 3339 nanos> <stdout|stderr> <F|P> <text>`, where
//! `P` marks a piece of a line longer than the writer's buffer. The `hm-logger` process
//! (started by containerd's runc shim, see [`writer`]) writes them and outlives agent
//! restarts; the agent reads them for `hmctl logs` ([`reader`]). When the container's
//! output ends the logger creates `<restart>.log.done`, which ends a follow.

pub mod reader;
pub mod writer;

use std::path::{Path, PathBuf};

/// The directory holding every log of one container of an Instance.
pub fn container_dir(
    log_dir: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
    container: &str,
) -> PathBuf {
    instance_dir(log_dir, namespace, name, uid).join(container)
}

/// The directory holding the logs of one Instance.
pub fn instance_dir(log_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    log_dir.join(format!("{namespace}_{name}_{uid}"))
}

/// The live log file of run `restart` (0 for the first run) in a container's directory.
pub fn run_log(container_dir: &Path, restart: u32) -> PathBuf {
    container_dir.join(format!("{restart}.log"))
}

/// The marker the logger creates when run `log`'s output has ended.
pub fn done_marker(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".done");
    PathBuf::from(name)
}

/// Waits (up to `limit`) until the logger of run `log` has finished writing.
pub async fn wait_done(log: &Path, limit: std::time::Duration) -> bool {
    let marker = done_marker(log);
    let deadline = tokio::time::Instant::now() + limit;
    while !marker.exists() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

/// Rotated file `n` (1 = the newest rotated) of `log`.
pub fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The runs with a log in a container's directory, oldest first.
pub fn runs(container_dir: &Path) -> Vec<u32> {
    let mut runs: Vec<u32> = std::fs::read_dir(container_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    runs.sort_unstable();
    runs
}

/// The previous run among `runs` (oldest first) of a container restarted `restarts`
/// times: the newest run started before the current one (run `restarts`), so during a
/// restart back-off it is the run that just ended. Without a restart count, the one
/// before the newest log.
pub fn previous_run(runs: &[u32], restarts: Option<u32>) -> Option<u32> {
    match restarts {
        Some(restarts) => runs.iter().rev().find(|r| **r < restarts).copied(),
        None => runs.iter().rev().nth(1).copied(),
    }
}

/// Removes the logs of every run but the newest `keep`, before a new run starts.
pub fn prune_runs(container_dir: &Path, keep: usize) {
    let runs = runs(container_dir);
    let old = runs.len().saturating_sub(keep);
    for run in &runs[..old] {
        let log = run_log(container_dir, *run);
        let _ = std::fs::remove_file(done_marker(&log));
        for n in 1.. {
            if std::fs::remove_file(rotated(&log, n)).is_err() {
                break;
            }
        }
        let _ = std::fs::remove_file(&log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_run_is_the_newest_before_the_restart_count() {
        // Never restarted: none, whether running or finished.
        assert_eq!(previous_run(&[0], Some(0)), None);
        // First back-off (restart count 1, run 1 not started yet): run 0.
        assert_eq!(previous_run(&[0], Some(1)), Some(0));
        // Run 1 running: run 0.
        assert_eq!(previous_run(&[0, 1], Some(1)), Some(0));
        // Second back-off: run 1.
        assert_eq!(previous_run(&[0, 1], Some(2)), Some(1));
        // No status to go by: the log before the newest.
        assert_eq!(previous_run(&[3, 4], None), Some(3));
        assert_eq!(previous_run(&[4], None), None);
    }

    #[test]
    fn runs_are_listed_in_order_and_pruned() {
        let dir = tempfile::tempdir().expect("dir");
        for run in [0, 2, 10] {
            std::fs::write(run_log(dir.path(), run), "x").expect("write");
        }
        std::fs::write(rotated(&run_log(dir.path(), 0), 1), "old").expect("write");
        std::fs::write(done_marker(&run_log(dir.path(), 0)), "").expect("write");
        assert_eq!(runs(dir.path()), vec![0, 2, 10]);
        prune_runs(dir.path(), 2);
        assert_eq!(runs(dir.path()), vec![2, 10]);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read")
            .flatten()
            .map(|e| e.file_name().into_string().expect("utf-8"))
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }
}
