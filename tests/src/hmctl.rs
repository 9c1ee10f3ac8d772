//! Runs the real `hmctl` binary for the `hmctl_*` tests: each command with a deadline,
//! its own empty `$HOME` (no config file) and no `HYPERMESH_SERVER`, and long-running
//! ones (`get -w`, `delete --wait`) as children whose output is read line by line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long one `hmctl` command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished `hmctl` run printed.
#[derive(Debug)]
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with everything printed unless the command exited 0.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "hmctl failed: {self:#?}");
        self
    }

    /// Panics unless the command exited 1.
    pub fn failed(self) -> Self {
        assert_eq!(
            self.code, 1,
            "hmctl should have failed with exit 1: {self:#?}"
        );
        self
    }

    /// The stdout lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// `hmctl` pointed at one apiserver.
pub struct Hmctl {
    server: String,
    home: tempfile::TempDir,
    config: Option<PathBuf>,
}

impl Hmctl {
    /// An `hmctl` that talks to `server` (via `--server`).
    pub fn new(server: &str) -> Self {
        Hmctl {
            server: server.to_string(),
            home: tempfile::tempdir().expect("temp HOME"),
            config: None,
        }
    }

    /// An `hmctl` that talks to `server` as the identity in config file `config`.
    pub fn with_config(server: &str, config: &Path) -> Self {
        Hmctl {
            config: Some(config.to_path_buf()),
            ..Hmctl::new(server)
        }
    }

    /// The `$HOME` hmctl runs with (for writing config files and manifests).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Writes `text` to `name` under the temp home and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.home.path().join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("manifest dir");
        }
        std::fs::write(&path, text).expect("write manifest");
        path
    }

    /// The command without `--server`: only `$HOME` and the environment are set.
    pub fn bare_command(&self) -> Command {
        let mut cmd = Command::new(crate::bin_path("hmctl"));
        cmd.env("HOME", self.home.path())
            .env_remove("HYPERMESH_SERVER")
            .env_remove("HYPERMESH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare_command();
        cmd.arg("--server").arg(&self.server);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(args);
        cmd
    }

    /// Runs `hmctl --server URL ARGS...` to completion.
    pub async fn run(&self, args: &[&str]) -> Output {
        finish(self.command(args), None).await
    }

    /// Runs it with `stdin` as standard input.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        finish(self.command(args), Some(stdin)).await
    }

    /// Runs a prepared command (e.g. from [`Hmctl::bare_command`]) to completion.
    pub async fn run_command(&self, cmd: Command) -> Output {
        finish(cmd, None).await
    }

    /// Starts `hmctl --server URL ARGS...` and returns it with its stdout lines.
    pub fn spawn(&self, args: &[&str]) -> (Child, Lines<BufReader<ChildStdout>>) {
        let mut child = self.command(args).spawn().expect("spawn hmctl");
        let stdout = child.stdout.take().expect("stdout piped");
        (child, BufReader::new(stdout).lines())
    }
}

async fn finish(mut cmd: Command, stdin: Option<&str>) -> Output {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn hmctl");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .expect("hmctl did not finish in time")
        .expect("hmctl output");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Reads lines until one satisfies `want`, failing at the deadline or end of output.
/// Returns every line read, the matching one last.
pub async fn read_until(
    lines: &mut Lines<BufReader<ChildStdout>>,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .with_context(|| format!("no matching line within {timeout:?}; saw {seen:#?}"))?
            .context("reading hmctl stdout")?;
        let Some(line) = next else {
            bail!("hmctl closed stdout before a matching line; saw {seen:#?}");
        };
        let done = want(&line);
        seen.push(line);
        if done {
            return Ok(seen);
        }
    }
}

/// The Workload manifest most tests apply.
pub fn web_workload(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: hypermesh.io/v1
kind: Workload
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector: {{app: {name}}}
  template:
    labels: {{app: {name}}}
    containers:
      - name: main
        image: hypermesh.local/busybox:latest
        resources: {{cpu: 100m, memory: 32Mi}}
"
    )
}

/// A Namespace manifest.
pub fn namespace(name: &str) -> String {
    format!("apiVersion: hypermesh.io/v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}
