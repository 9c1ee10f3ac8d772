//! The test harness every integration test in `tests/tests/suite/` uses: starts real
//! apiservers (in-process or as `hm-apiserver` processes), schedulers, agents, private
//! containerd, registries, proxies and network-namespace hosts, finds the workspace
//! binaries, and waits on conditions with deadlines so every test reads as a short
//! story. One module per part of a cluster; a test imports the ones it needs.
//!
//! Binaries are looked up in the cargo target directory of the running test, so run
//! `cargo build --workspace --bins` first (`make test` does).

pub mod agent;
pub mod attack;
pub mod containerd;
pub mod etcd;
pub mod fixtures;
pub mod ha;
pub mod helm;
pub mod hmctl;
pub mod hosts;
pub mod images;
pub mod instance;
pub mod kube_api;
pub mod metrics;
pub mod multi_host;
pub mod netns;
pub mod node_env;
pub mod node_lifecycle;
pub mod pki;
pub mod proofs;
pub mod proxy;
pub mod registry;
pub mod scheduler;
pub mod secrets;
pub mod traffic;
pub mod webdriver;
pub mod workload;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use hypermesh_runtime::backoff::Backoff;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long harness waits last by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of workspace binary `name` (e.g. `hmctl`), next to the test executable.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("."));
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// Polls `check` until it yields `Some`, failing after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut polls = Backoff::new(Duration::from_millis(5), Duration::from_millis(200)).retry();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        polls.wait().await;
    }
}

/// Connects to `url` (plaintext), retrying until the server answers.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    connect_target(&hypermesh_api::client::Target::insecure(url)).await
}

/// Connects to `target`, retrying until the server answers.
pub async fn connect_target(target: &hypermesh_api::client::Target) -> anyhow::Result<Channel> {
    let attempt = target.clone();
    wait_for(DEFAULT_TIMEOUT, || {
        let target = attempt.clone();
        async move { hypermesh_api::client::connect_to(&target).await.ok() }
    })
    .await
    .with_context(|| format!("connecting to {}", target.url))
}

pub mod identities;

/// An apiserver running inside the test process on a free loopback port, with its
/// garbage collector.
pub struct InProcessApiServer {
    url: String,
    target: hypermesh_api::client::Target,
    channel: Channel,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), hypermesh_apiserver::ServerError>>>,
    data_dir: tempfile::TempDir,
}

impl InProcessApiServer {
    /// Starts one with default settings.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts one with TLS and client certificates (what `hm-apiserver` does without
    /// `--insecure-dev`); [`InProcessApiServer::channel`] is the admin's.
    pub async fn start_tls() -> anyhow::Result<Self> {
        Self::start_with(|c| c.tls = Some(hypermesh_apiserver::TlsSettings::default())).await
    }

    /// Starts one after `tune` adjusts its configuration.
    pub async fn start_with(
        tune: impl FnOnce(&mut hypermesh_apiserver::Config),
    ) -> anyhow::Result<Self> {
        hypermesh_trust::tls::install_default_provider();
        let data_dir = tempfile::tempdir().context("temp dir")?;
        let mut config = hypermesh_apiserver::Config::new(data_dir.path());
        tune(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind")?;
        let address = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let server = hypermesh_apiserver::ApiServer::open(config, shutdown.clone()).await?;
        let url = server.url_for(address);
        let tls = server.ca_pin().is_some();
        let task = tokio::spawn(server.serve(listener));
        let target = if tls {
            let admin = data_dir
                .path()
                .join(hypermesh_apiserver::server::ADMIN_CONFIG);
            wait_for(DEFAULT_TIMEOUT, || {
                let admin = admin.clone();
                async move {
                    hypermesh_trust::client_config::ClientConfigFile::load(&admin)
                        .ok()
                        .filter(|c| c.server.is_some())
                        .and_then(|c| c.target(&admin, None).ok())
                }
            })
            .await
            .context("waiting for admin.config")?
        } else {
            hypermesh_api::client::Target::insecure(url.clone())
        };
        let channel = connect_target(&target).await?;
        // Garbage collection runs beside the server, as in `hm-apiserver`.
        tokio::spawn(hypermesh_apiserver::in_process::run(
            channel.clone(),
            hypermesh_apiserver::in_process::Controllers::None,
            shutdown.child_token(),
        ));
        Ok(InProcessApiServer {
            url,
            target,
            channel,
            shutdown,
            task: Some(task),
            data_dir,
        })
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin's target (plaintext without TLS).
    pub fn target(&self) -> &hypermesh_api::client::Target {
        &self.target
    }

    /// A connected channel, as admin (clone it freely).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The admin client config file (TLS servers).
    pub fn admin_config(&self) -> PathBuf {
        self.data_dir
            .path()
            .join(hypermesh_apiserver::server::ADMIN_CONFIG)
    }

    /// The cluster CA's pin, `sha256:…` (TLS servers).
    pub fn ca_pin(&self) -> anyhow::Result<String> {
        let pem = std::fs::read_to_string(self.data_dir.path().join("pki").join("ca.crt"))
            .context("reading pki/ca.crt")?;
        let der = hypermesh_trust::pki::first_certificate(&pem)?;
        Ok(hypermesh_trust::pki::spki_pin(&der)?)
    }

    /// A typed client for kind `K`.
    pub fn api<K: hypermesh_api::Resource>(&self) -> hypermesh_api::Api<K> {
        hypermesh_api::Api::new(self.channel())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Stops the server gracefully and starts it again on the same address and data
    /// dir (default settings, plaintext), as after a restart of its host.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.url.starts_with("http://"),
            "restart is for plaintext servers"
        );
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.context("server task")??;
        }
        let address: std::net::SocketAddr = self.url["http://".len()..]
            .parse()
            .context("the server's address")?;
        let listener = wait_for(DEFAULT_TIMEOUT, || async {
            tokio::net::TcpListener::bind(address).await.ok()
        })
        .await
        .context("binding the old address again")?;
        let shutdown = CancellationToken::new();
        // The old server's last tasks (watch caches, the controllers) let go of the store
        // as they notice the shutdown.
        let data_dir = self.data_dir.path().to_path_buf();
        let server = wait_for(DEFAULT_TIMEOUT, || {
            let config = hypermesh_apiserver::Config::new(&data_dir);
            let shutdown = shutdown.clone();
            async move {
                hypermesh_apiserver::ApiServer::open(config, shutdown)
                    .await
                    .ok()
            }
        })
        .await
        .context("opening the store again")?;
        self.task = Some(tokio::spawn(server.serve(listener)));
        self.channel = connect_target(&self.target).await?;
        tokio::spawn(hypermesh_apiserver::in_process::run(
            self.channel.clone(),
            hypermesh_apiserver::in_process::Controllers::None,
            shutdown.child_token(),
        ));
        self.shutdown = shutdown;
        Ok(())
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.context("server task")??;
        }
        Ok(())
    }
}

impl Drop for InProcessApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A real `hm-apiserver` process on a free loopback port with its own data dir.
pub struct ApiServerProcess {
    child: Option<Child>,
    url: String,
    tls: bool,
    data_dir: tempfile::TempDir,
    extra_args: Vec<String>,
}

impl ApiServerProcess {
    /// Starts `hm-apiserver` with a fresh data dir.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_args(&[]).await
    }

    /// Starts `hm-apiserver` with extra command-line arguments.
    pub async fn start_with_args(args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_new(args, false).await
    }

    /// Starts `hm-apiserver` with TLS (no `--insecure-dev`) and extra arguments; its
    /// [`ApiServerProcess::channel`] is the admin's (`admin.config`).
    pub async fn start_tls_with_args(args: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_new(args, true).await
    }

    async fn spawn_new(args: &[&str], tls: bool) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir().context("temp dir")?;
        let mut server = ApiServerProcess {
            child: None,
            url: String::new(),
            tls,
            data_dir,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn("127.0.0.1:0").await?;
        Ok(server)
    }

    async fn spawn(&mut self, listen: &str) -> anyhow::Result<()> {
        let mut command = Command::new(bin_path("hm-apiserver"));
        command
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(self.data_dir.path());
        if !self.tls {
            command.arg("--insecure-dev");
        }
        let mut child = command
            .args(&self.extra_args)
            .env("HM_LOG", "warn")
            // Tests that want the in-process controllers pass `--controllers all`.
            .env("HM_CONTROLLERS", "none")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning hm-apiserver")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(DEFAULT_TIMEOUT, lines.next_line())
            .await
            .context("hm-apiserver did not report its address in time")??
            .context("hm-apiserver exited before listening")?;
        let address = line
            .strip_prefix("hm-apiserver listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?;
        self.url = format!("{}://{address}", if self.tls { "https" } else { "http" });
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// A connected channel (the admin's with TLS).
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        connect_target(&self.target()?).await
    }

    /// A connected channel with the scheduler's identity (`scheduler.config`; TLS).
    pub async fn scheduler_channel(&self) -> anyhow::Result<Channel> {
        connect_target(&self.config_target(hypermesh_apiserver::server::SCHEDULER_CONFIG)?).await
    }

    /// The admin's target (plaintext without TLS).
    pub fn target(&self) -> anyhow::Result<hypermesh_api::client::Target> {
        if !self.tls {
            return Ok(hypermesh_api::client::Target::insecure(self.url.clone()));
        }
        self.config_target(hypermesh_apiserver::server::ADMIN_CONFIG)
    }

    /// The target a client config the server wrote into its data dir describes
    /// (`admin.config`, `scheduler.config`), pointed at this server.
    pub fn config_target(&self, file: &str) -> anyhow::Result<hypermesh_api::client::Target> {
        let path = self.data_dir.path().join(file);
        let config = hypermesh_trust::client_config::ClientConfigFile::load(&path)?;
        Ok(config.target(&path, Some(&self.url))?)
    }

    /// The cluster CA's pin (TLS servers).
    pub fn ca_pin(&self) -> anyhow::Result<String> {
        let pem = std::fs::read_to_string(self.data_dir.path().join("pki").join("ca.crt"))
            .context("reading pki/ca.crt")?;
        Ok(hypermesh_trust::pki::spki_pin(
            &hypermesh_trust::pki::first_certificate(&pem)?,
        )?)
    }

    /// Kills the process with SIGKILL and waits for it to be gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("kill")?;
            child.wait().await.context("wait")?;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        let pid = child.id().context("no pid")?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .context("kill -TERM")?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(DEFAULT_TIMEOUT, child.wait())
            .await
            .context("no exit after SIGTERM")?
            .context("wait")
    }

    /// Starts the server again on the same data dir and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9().await?;
        let listen = self
            .url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        self.spawn(&listen).await
    }
}
