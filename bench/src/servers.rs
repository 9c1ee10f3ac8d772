//! Real processes for the benchmarks: `hm-apiserver` and `etcd` (each on free loopback
//! ports with its own temporary data directory), `hm-scheduler` and `hm-agent` against
//! an apiserver. A [`ServerProcess`] kills its process when dropped, so an error or
//! Ctrl-C anywhere never leaves a server behind.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How often readiness is polled while a server starts.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The line `hm-apiserver` prints on stdout once it serves.
const APISERVER_READY_PREFIX: &str = "hm-apiserver listening on ";

/// A running server process with its temporary directory (data and log).
#[derive(Debug)]
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    log_path: PathBuf,
    /// Where clients connect; empty for processes that serve no API (scheduler, agent).
    url: String,
    // Dropped after the process is killed (fields drop after `Drop::drop`).
    _dir: TempDir,
}

impl ServerProcess {
    /// The data directory of a server started with one (`<tmp>/data`).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// `http://127.0.0.1:PORT`, where clients connect.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process and waits for it to exit.
    pub async fn stop(mut self) -> Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("stopping {}", self.name))
    }

    /// The last `lines` lines of the process's log (stderr; stdout too unless it is the
    /// apiserver's).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// Fails with the log's last lines when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log_path.display(),
                log_tail(&self.log_path, 20)
            ),
            Ok(None) => Ok(()),
            Err(e) => Err(anyhow!(e).context(format!("checking on {}", self.name))),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Best effort: the process may already be gone.
        let _ = self.child.start_kill();
    }
}

/// The last `lines` lines of a log file (or why it cannot be read).
fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

/// `count` distinct free ports on 127.0.0.1 (free when probed; the OS hands out
/// ephemeral ports in sequence, so a clash before the server binds them is unlikely).
pub fn free_loopback_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding 127.0.0.1:0 to find free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

pub(crate) fn require_binary(path: &Path, hint: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        bail!("{} not found: {hint}", path.display())
    }
}

pub(crate) fn temp_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating a temporary directory")
}

/// Parses `hm-apiserver listening on 127.0.0.1:PORT`.
pub fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix(APISERVER_READY_PREFIX)?
        .parse()
        .ok()
}

/// Which of its in-process controllers `hm-apiserver` runs (`--controllers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controllers {
    /// The store and API alone: nothing reacts to the benchmark's objects.
    None,
    /// Workload, garbage collection, node lifecycle, namespaces: as `make up` runs it.
    All,
}

impl Controllers {
    fn flag(self) -> &'static str {
        match self {
            Controllers::None => "none",
            Controllers::All => "all",
        }
    }
}

/// Starts `hm-apiserver --listen 127.0.0.1:0 --data-dir TMP --controllers C` and waits
/// (up to `timeout`) for the line announcing its address.
pub async fn start_apiserver(
    binary: &Path,
    controllers: Controllers,
    timeout: Duration,
) -> Result<ServerProcess> {
    start_apiserver_with(binary, controllers, false, &[], timeout).await
}

/// As [`start_apiserver`] with extra flags (e.g. `--watch-cache=false`,
/// `--store etcd://…`).
pub async fn start_apiserver_args(
    binary: &Path,
    controllers: Controllers,
    extra: &[&str],
    timeout: Duration,
) -> Result<ServerProcess> {
    start_apiserver_with(binary, controllers, false, extra, timeout).await
}

/// As [`start_apiserver`] with TLS (no `--insecure-dev`, no controllers); the admin's
/// client config is `data_dir()/admin.config`.
pub async fn start_apiserver_tls(binary: &Path, timeout: Duration) -> Result<ServerProcess> {
    start_apiserver_with(binary, Controllers::None, true, &[], timeout).await
}

/// As [`start_apiserver_tls`] with controllers and extra flags.
pub async fn start_apiserver_tls_args(
    binary: &Path,
    controllers: Controllers,
    extra: &[&str],
    timeout: Duration,
) -> Result<ServerProcess> {
    start_apiserver_with(binary, controllers, true, extra, timeout).await
}

async fn start_apiserver_with(
    binary: &Path,
    controllers: Controllers,
    tls: bool,
    extra: &[&str],
    timeout: Duration,
) -> Result<ServerProcess> {
    require_binary(
        binary,
        "build it with `cargo build --release -p hypermesh-apiserver`, or pass --apiserver PATH",
    )?;
    let dir = temp_dir("hm-bench-apiserver-")?;
    let log_path = dir.path().join("hm-apiserver.log");
    let log = File::create(&log_path).context("creating the apiserver log")?;
    let mut command = Command::new(binary);
    command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--controllers")
        .arg(controllers.flag())
        .args(extra);
    if !tls {
        command.arg("--insecure-dev");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("hm-apiserver stdout was not captured"))?;
    let mut server = ServerProcess {
        name: "hm-apiserver",
        child,
        log_path,
        url: String::new(),
        _dir: dir,
    };

    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + timeout;
    let addr = loop {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => bail!(
                "hm-apiserver did not print {APISERVER_READY_PREFIX:?} within {timeout:?}; last lines of its log:\n{}",
                log_tail(&server.log_path, 20)
            ),
            Ok(Err(e)) => return Err(anyhow!(e).context("reading hm-apiserver stdout")),
            Ok(Ok(None)) => {
                // Stdout closed: the process is exiting; report why.
                let status = server
                    .child
                    .wait()
                    .await
                    .context("waiting for hm-apiserver")?;
                bail!(
                    "hm-apiserver exited before serving ({status}); last lines of its log:\n{}",
                    log_tail(&server.log_path, 20)
                );
            }
            Ok(Ok(Some(line))) => line,
        };
        if let Some(addr) = parse_ready_line(&line) {
            break addr;
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    server.url = format!("{}://{addr}", if tls { "https" } else { "http" });
    Ok(server)
}

/// Spawns `binary args…` with stdout and stderr in `<dir>/<name>.log`, killed on drop.
pub(crate) fn spawn_logged(
    name: &'static str,
    binary: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    dir: TempDir,
) -> Result<ServerProcess> {
    let log_path = dir.path().join(format!("{name}.log"));
    let log = File::create(&log_path).with_context(|| format!("creating the {name} log"))?;
    let log_err = log
        .try_clone()
        .with_context(|| format!("duplicating the {name} log handle"))?;
    let child = Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(ServerProcess {
        name,
        child,
        log_path,
        url: String::new(),
        _dir: dir,
    })
}

/// Starts `hm-scheduler --server URL` (warnings and errors to its log).
pub fn start_scheduler(binary: &Path, server: &str) -> Result<ServerProcess> {
    start_scheduler_with(binary, server, None)
}

/// As [`start_scheduler`] with `--config FILE` (the `scheduler.config` a TLS apiserver
/// writes into its data dir).
pub fn start_scheduler_with(
    binary: &Path,
    server: &str,
    config: Option<&Path>,
) -> Result<ServerProcess> {
    require_binary(
        binary,
        "build it with `cargo build --release -p hypermesh-scheduler`, or pass --scheduler PATH",
    )?;
    let dir = temp_dir("hm-bench-scheduler-")?;
    let mut args: Vec<&std::ffi::OsStr> = vec!["--server".as_ref(), server.as_ref()];
    if let Some(config) = config {
        args.extend(["--config".as_ref(), config.as_os_str()]);
    }
    spawn_logged("hm-scheduler", binary, &args, &[("HM_LOG", "warn")], dir)
}

/// What `hm-agent` runs against.
#[derive(Debug, Clone, Copy)]
pub struct AgentTarget<'a> {
    /// The apiserver URL.
    pub server: &'a str,
    /// `--node-name`.
    pub node_name: &'a str,
    /// `--containerd-socket`.
    pub containerd_socket: &'a Path,
    /// `--image-dir`: OCI archives imported at start.
    pub image_dir: &'a Path,
}

/// Starts `hm-agent` with a temporary `--state-dir` (identity, logs); `hm-logger` must
/// sit beside it. Readiness (its Node registered) is for the caller to watch.
pub fn start_agent(binary: &Path, target: AgentTarget<'_>) -> Result<ServerProcess> {
    let hint = "build it with `cargo build --release -p hypermesh-agent`, or pass --agent PATH";
    require_binary(binary, hint)?;
    let logger = binary.with_file_name("hm-logger");
    require_binary(
        &logger,
        "hm-logger is built with hm-agent (-p hypermesh-agent)",
    )?;
    let dir = temp_dir("hm-bench-agent-")?;
    let state = dir.path().join("state");
    spawn_logged(
        "hm-agent",
        binary,
        &[
            "--server".as_ref(),
            target.server.as_ref(),
            "--node-name".as_ref(),
            target.node_name.as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--containerd-socket".as_ref(),
            target.containerd_socket.as_os_str(),
            "--image-dir".as_ref(),
            target.image_dir.as_os_str(),
        ],
        &[],
        dir,
    )
}

/// Starts a single-member etcd on two free loopback ports with a temporary data dir,
/// and waits (up to `timeout`) until a Get succeeds.
pub async fn start_etcd(binary: &Path, timeout: Duration) -> Result<ServerProcess> {
    require_binary(
        binary,
        "install etcd with `bash scripts/setup.sh` (Debian package etcd-server), or pass --etcd PATH",
    )?;
    let dir = temp_dir("hm-bench-etcd-")?;
    let log_path = dir.path().join("etcd.log");
    let log = File::create(&log_path).context("creating the etcd log")?;
    let log_err = log.try_clone().context("duplicating the etcd log handle")?;
    let ports = free_loopback_ports(2)?;
    let client_url = format!("http://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let child = Command::new(binary)
        .arg("--name")
        .arg("default")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut server = ServerProcess {
        name: "etcd",
        child,
        log_path,
        url: client_url,
        _dir: dir,
    };

    let deadline = Instant::now() + timeout;
    loop {
        server.check_alive()?;
        let error = match etcd_get_once(server.url()).await {
            Ok(()) => return Ok(server),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!(
                "etcd at {} did not answer a Get within {timeout:?} (last error: {error:#}); last lines of its log:\n{}",
                server.url(),
                log_tail(&server.log_path, 20)
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn etcd_get_once(url: &str) -> Result<()> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let mut client = etcd_client::Client::connect([url], Some(options)).await?;
    client.get("/hm-bench/ready", None).await?;
    Ok(())
}

/// `3.4.23` from `etcd --version`, or `unknown`.
pub async fn etcd_version(binary: &Path) -> String {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await;
    output
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                l.strip_prefix("etcd Version:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        assert_eq!(
            parse_ready_line("hm-apiserver listening on 127.0.0.1:7443\n"),
            Some("127.0.0.1:7443".parse().expect("literal address"))
        );
        assert_eq!(parse_ready_line("starting up"), None);
        assert_eq!(parse_ready_line("hm-apiserver listening on nowhere"), None);
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_loopback_ports(2).expect("loopback is available");
        assert_ne!(ports[0], ports[1]);
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n").expect("write log");
        assert_eq!(log_tail(&path, 2), "b\nc");
        assert!(log_tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }
}
