//! hmctl: the HyperMesh command-line client, kubectl-style.
//!
//! Every API call goes through [`hypermesh_api::Api`]; each verb is written once as a
//! generic function over the kind and chosen at run time by [`kinds::dispatch`].
//!
//! # Layout
//! - [`cli`]: commands, flags and help text (clap).
//! - [`config`]: which apiserver to talk to and as whom (`--config`,
//!   `HYPERMESH_CONFIG`, `~/.hypermesh/config.yaml`; `--server`, `HYPERMESH_SERVER`)
//!   and `hmctl config`.
//! - [`kinds`]: kind names → generic code ([`kinds::Kind`], [`kinds::dispatch`]).
//! - [`manifests`]: reading `-f` files, directories and stdin.
//! - [`k8s`]: Kubernetes manifests (Deployment, Pod, Service, Secret, Namespace) as
//!   HyperMesh objects, with warnings for what cannot be honoured; `hmctl convert`.
//! - [`duration`]: durations on the command line (`30s`, `2m`).
//! - [`listing`]: what `get` and `get -w` list and print per object.
//! - [`apply`], [`get`], [`watch`], [`describe`], [`delete`], [`scale`], [`rollout`],
//!   [`api_resources`], [`version`]: one module per command.
//! - [`cordon`] (cordon, uncordon), [`drain`]: node maintenance.
//! - [`progress`]: a bar on a terminal, plain lines otherwise, for long operations.
//! - [`top`]: live usage of nodes and instances, as the agents report it.
//! - [`dashboard`]: `hmctl dashboard`, a web page served on 127.0.0.1 with the user's
//!   own identity (embedded HTML/CSS/JS, a JSON API, live updates over SSE).
//! - [`trust`]: `hmctl node trust|revoke|rekey`: a node's Suspect mark, certificates
//!   and key binding.
//! - [`access`]: `hmctl token` (join tokens) and `hmctl user` (certificates, roles).
//! - [`port_forward`]: a local port to an Instance or Route on any node, through the
//!   local hm-proxy's SOCKS5 listener.
//! - [`logs`], [`exec`], [`image`]: container logs, commands in containers and image
//!   imports, streamed through the apiserver to the node's agent.
//! - [`columns`], [`table`], [`output`]: how objects print.
//! - [`error`]: `Error from server (Reason): ...` reporting.

// Unit tests may unwrap: a panic there is a failed test, not a crash on user input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access;
pub mod api_resources;
pub mod apply;
pub mod apply_wait;
pub mod cli;
pub mod columns;
pub mod config;
pub mod cordon;
pub mod dashboard;
pub mod delete;
pub mod describe;
pub mod drain;
pub mod duration;
pub mod error;
pub mod exec;
pub mod get;
pub mod image;
pub mod k8s;
pub mod kinds;
pub mod listing;
pub mod logs;
pub mod manifests;
pub mod output;
pub mod port_forward;
pub mod progress;
pub mod reveal;
pub mod rollout;
pub mod scale;
pub mod table;
pub mod top;
pub mod trust;
pub mod version;
pub mod watch;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;
use hypermesh_runtime::backoff::Backoff;
use tonic::transport::Channel;

use crate::cli::{Cli, Command, ConfigCommand};

/// The namespace of namespaced objects when neither `-n` nor the manifest names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How often a long wait says what it is still waiting for (on stderr).
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Pauses between checks while waiting for something to happen (an object to be
/// deleted, a node to drain).
pub const POLL: Backoff = Backoff::new(
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(500),
);

/// How a command ended, for the exit status (0 or 1, as kubectl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success,
    /// Something failed and was reported on stderr.
    Failure,
    /// A remote command's exit code (`hmctl exec`).
    Code(u8),
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        match exit {
            Exit::Success => ExitCode::SUCCESS,
            Exit::Failure => ExitCode::FAILURE,
            Exit::Code(code) => ExitCode::from(code),
        }
    }
}

/// What every command gets: where the apiserver is, who we are to it, and `-n`.
#[derive(Debug, Clone)]
pub struct Context {
    /// Apiserver URL.
    pub server: String,
    /// `-n`, if given.
    pub namespace: Option<String>,
    /// The TLS configuration (CA and client certificate) from the config file.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The cluster CA certificate from the config file (for its pin).
    pub ca_pem: Option<String>,
}

impl Context {
    /// The apiserver target.
    pub fn target(&self) -> hypermesh_api::client::Target {
        hypermesh_api::client::Target {
            url: self.server.clone(),
            tls: self.tls.clone().map(hypermesh_api::client::ClientTls::new),
        }
    }

    /// Connects to the apiserver.
    pub async fn connect(&self) -> Result<Channel> {
        config::check_server_url(&self.server)?;
        Ok(hypermesh_api::client::connect_to(&self.target()).await?)
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<Exit> {
    let ctx = || -> Result<Context> {
        let resolved = config::resolve(cli_server(&cli.server).as_deref(), cli.config.as_deref())?;
        Ok(Context {
            server: resolved.server,
            namespace: cli.namespace.clone(),
            tls: resolved.tls,
            ca_pem: resolved.ca_pem,
        })
    };
    if let (Some(verb), Some(namespace)) = (node_verb(&cli.command), &cli.namespace) {
        anyhow::bail!(
            "{verb}: nodes are cluster-scoped; -n/--namespace does not apply (drop -n {namespace})"
        );
    }
    match &cli.command {
        Command::Apply(args) => apply::run(&ctx()?, args).await,
        Command::Convert(args) => apply::convert(&args.files, cli.namespace.as_deref()),
        Command::Get(args) => get::run(&ctx()?, args).await,
        Command::Describe(args) => describe::run(&ctx()?, args).await,
        Command::Delete(args) => delete::run(&ctx()?, args).await,
        Command::Scale(args) => scale::run(&ctx()?, args).await,
        Command::Rollout(command) => rollout::run(&ctx()?, command).await,
        Command::ApiResources => {
            output::print(&api_resources::table().render())?;
            Ok(Exit::Success)
        }
        Command::Version(args) if args.client => version::run(None).await,
        Command::Version(_) => version::run(Some(&ctx()?)).await,
        Command::Config(ConfigCommand::View) => {
            output::print(&config::view(
                cli_server(&cli.server).as_deref(),
                cli.config.as_deref(),
            )?)?;
            Ok(Exit::Success)
        }
        Command::Cordon(args) => cordon::run(&ctx()?, args, true).await,
        Command::Uncordon(args) => cordon::run(&ctx()?, args, false).await,
        Command::Drain(args) => drain::run(&ctx()?, args).await,
        Command::Node(command) => trust::run(&ctx()?, command).await,
        Command::Token(command) => access::token(&ctx()?, command).await,
        Command::User(command) => access::user(&ctx()?, command).await,
        Command::Logs(args) => logs::run(&ctx()?, args).await,
        Command::Exec(args) => exec::run(&ctx()?, args).await,
        Command::Image(command) => image::run(&ctx()?, command).await,
        Command::Top(args) => top::run(&ctx()?, args).await,
        Command::PortForward(args) => port_forward::run(&ctx()?, args).await,
        Command::Dashboard(args) => dashboard::run(&ctx()?, args).await,
        Command::Config(ConfigCommand::SetServer { url }) => {
            let path = config::set_server(url, cli.config.as_deref())?;
            output::print(&format!("server set to {url} in {}\n", path.display()))?;
            Ok(Exit::Success)
        }
    }
}

/// The whole program: parses arguments, runs the command, reports errors, and returns
/// the exit status (0 on success, 1 on any error, as kubectl).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime");
    let result = runtime.and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(exit) => exit.into(),
        Err(err) if error::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            error::report(&err);
            ExitCode::FAILURE
        }
    }
}

/// The name of a command about nodes, which are cluster-scoped (so `-n` is an error).
fn node_verb(command: &Command) -> Option<&'static str> {
    match command {
        Command::Cordon(_) => Some("cordon"),
        Command::Uncordon(_) => Some("uncordon"),
        Command::Drain(_) => Some("drain"),
        _ => None,
    }
}

/// `--server` given once or more: one target URL (comma-separated), `None` when absent.
fn cli_server(urls: &[String]) -> Option<String> {
    (!urls.is_empty()).then(|| hypermesh_api::client::join_urls(urls))
}
