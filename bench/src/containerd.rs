//! A private containerd for the `runtime` benchmark, started and stopped with
//! `scripts/containerd.sh` (its own root, state and socket, isolated from any system
//! containerd), and the `ctr` commands the benchmark runs against it: the floor
//! HyperMesh is measured against, listings, and removing every task and container on
//! the way out. Shims outlive containerd, so [`PrivateContainerd`] removes them before
//! stopping it, also when dropped after an error or Ctrl-C.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;
use tokio::time::Instant;

/// A containerd started by `scripts/containerd.sh start DIR`.
#[derive(Debug)]
pub struct PrivateContainerd {
    script: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    ctr: PathBuf,
    stopped: bool,
}

impl PrivateContainerd {
    /// Starts containerd in `dir` (created if needed) and waits until its socket answers.
    pub async fn start(script: &Path, dir: &Path, ctr: &Path) -> Result<PrivateContainerd> {
        if !script.is_file() {
            bail!(
                "{} not found: run hm-bench from the repository root, or pass --scripts DIR",
                script.display()
            );
        }
        let output = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {} start", script.display()))?;
        if !output.status.success() {
            bail!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let socket = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Ok(PrivateContainerd {
            script: script.to_path_buf(),
            dir: dir.to_path_buf(),
            socket,
            ctr: ctr.to_path_buf(),
            stopped: false,
        })
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's process id (from the pid file the script writes).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("containerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `ctr` against this containerd, in containerd namespace `namespace`.
    pub fn ctr(&self, namespace: &str) -> Ctr {
        Ctr {
            binary: self.ctr.clone(),
            socket: self.socket.clone(),
            namespace: namespace.to_string(),
        }
    }

    /// Removes every task and container in every namespace, then stops containerd.
    pub async fn stop(mut self) -> Result<()> {
        self.stopped = true;
        let (script, dir) = (self.script.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || purge_and_stop(&script, &dir))
            .await
            .context("stopping containerd")?
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if !self.stopped {
            // Best effort on the way out of an error or Ctrl-C.
            if let Err(e) = purge_and_stop(&self.script, &self.dir) {
                eprintln!("hm-bench: stopping the private containerd: {e:#}");
            }
        }
    }
}

/// Force-removes every task and container in every namespace (runc's state directory is
/// shared by all containerds, and shims outlive containerd), then stops the daemon:
/// `scripts/containerd.sh purge` and `stop`.
fn purge_and_stop(script: &Path, dir: &Path) -> Result<()> {
    let mut failures = Vec::new();
    for command in ["purge", "stop"] {
        let output = std::process::Command::new("bash")
            .arg(script)
            .arg(command)
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} {command}", script.display()))?;
        if !output.status.success() {
            failures.push(format!(
                "{} {command}: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("cleanup left something behind: {}", failures.join("; "))
    }
}

/// The `ctr` CLI against one containerd, in one namespace.
#[derive(Debug, Clone)]
pub struct Ctr {
    binary: PathBuf,
    socket: PathBuf,
    namespace: String,
}

impl Ctr {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `ctr ARGS`; its stdout, or an error with its stderr.
    async fn output(&self, args: &[&str]) -> Result<String> {
        let output = self
            .command()
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {}", self.binary.display()))?;
        if !output.status.success() {
            bail!(
                "ctr -n {} {}: {}",
                self.namespace,
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `ctr images import ARCHIVE` (unpacked for this platform's snapshotter).
    pub async fn import(&self, archive: &Path) -> Result<()> {
        let archive = archive
            .to_str()
            .context("the image archive's path is not UTF-8")?;
        self.output(&["images", "import", archive]).await.map(drop)
    }

    /// `ctr run -d IMAGE ID ARGV…`, timed from spawning the command to its exit. `run
    /// -d` returns once the task has started (created, then started, then detached).
    pub async fn run_detached(&self, image: &str, id: &str, argv: &[&str]) -> Result<Duration> {
        let started = Instant::now();
        let mut args = vec!["run", "-d", image, id];
        args.extend_from_slice(argv);
        self.output(&args).await?;
        Ok(started.elapsed())
    }

    /// IDs of the tasks `ctr tasks ls` shows as RUNNING.
    pub async fn running_tasks(&self) -> Result<HashSet<String>> {
        // TASK  PID  STATUS
        Ok(self
            .output(&["tasks", "ls"])
            .await?
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(2) == Some(&"RUNNING")).then(|| fields[0].to_string())
            })
            .collect())
    }

    /// IDs of every container in the namespace.
    pub async fn containers(&self) -> Result<Vec<String>> {
        Ok(self
            .output(&["containers", "ls", "-q"])
            .await?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Kills and deletes the task (`tasks rm -f`), then the container and its snapshot.
    pub async fn remove(&self, id: &str) -> Result<()> {
        self.output(&["tasks", "rm", "-f", id]).await?;
        self.output(&["containers", "rm", id]).await.map(drop)
    }

    /// Waits (polling every 100 ms, up to `timeout`) until the namespace has no
    /// containers left.
    pub async fn wait_empty(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.containers().await?;
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} containers still in containerd namespace {} after {timeout:?}: {}",
                    left.len(),
                    self.namespace,
                    left.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
