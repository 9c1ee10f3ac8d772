//! hmctl: the HyperMesh command-line client, kubectl-style.
//!
//! Every API call goes through [`hypermesh_api::Api`]; each verb is written once as a
//! generic function over the kind and chosen at run time by [`kinds::dispatch`].
//!
//! # Layout
//! - [`cli`]: commands, flags and help text (clap).
//! - [`config`]: which apiserver to talk to (`--server`, `HYPERMESH_SERVER`,
//!   `~/.hypermesh/config.yaml`) and `hmctl config`.
//! - [`kinds`]: kind names → generic code ([`kinds::Kind`], [`kinds::dispatch`]).
//! - [`manifests`]: reading `-f` files, directories and stdin.
//! - [`apply`], [`get`], [`watch`], [`describe`], [`delete`], [`scale`], [`rollout`],
//!   [`api_resources`], [`version`]: one module per command.
//! - [`cordon`] (cordon, uncordon), [`drain`]: node maintenance.
//! - [`trust`]: `hmctl node trust`, clearing a Suspect mark.
//! - [`port_forward`]: a local port to an Instance or Route on any node, through the
//!   local hm-proxy's SOCKS5 listener.
//! - [`logs`], [`exec`], [`image`]: container logs, commands in containers and image
//!   imports, streamed through the apiserver to the node's agent.
//! - [`columns`], [`table`], [`output`]: how objects print.
//! - [`error`]: `Error from server (Reason): ...` reporting.

// Unit tests may unwrap: a panic there is a failed test, not a crash on user input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api_resources;
pub mod apply;
pub mod cli;
pub mod columns;
pub mod config;
pub mod cordon;
pub mod delete;
pub mod describe;
pub mod drain;
pub mod error;
pub mod exec;
pub mod get;
pub mod image;
pub mod kinds;
pub mod logs;
pub mod manifests;
pub mod output;
pub mod port_forward;
pub mod rollout;
pub mod scale;
pub mod table;
pub mod trust;
pub mod version;
pub mod watch;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser;
use tonic::transport::Channel;

use crate::cli::{Cli, Command, ConfigCommand};

/// The namespace of namespaced objects when neither `-n` nor the manifest names one.
pub const DEFAULT_NAMESPACE: &str = "default";

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

/// What every command gets: where the apiserver is and the `-n` flag.
#[derive(Debug, Clone)]
pub struct Context {
    /// Apiserver URL.
    pub server: String,
    /// `-n`, if given.
    pub namespace: Option<String>,
}

impl Context {
    /// Connects to the apiserver.
    pub async fn connect(&self) -> Result<Channel> {
        config::check_server_url(&self.server)?;
        Ok(hypermesh_api::client::connect(&self.server).await?)
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<Exit> {
    let ctx = || -> Result<Context> {
        let (server, _) = config::resolve_server(cli.server.as_deref())?;
        Ok(Context {
            server,
            namespace: cli.namespace.clone(),
        })
    };
    match &cli.command {
        Command::Apply(args) => apply::run(&ctx()?, &args.files).await,
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
            output::print(&config::view(cli.server.as_deref())?)?;
            Ok(Exit::Success)
        }
        Command::Cordon(args) => cordon::run(&ctx()?, args, true).await,
        Command::Uncordon(args) => cordon::run(&ctx()?, args, false).await,
        Command::Drain(args) => drain::run(&ctx()?, args).await,
        Command::Node(command) => trust::run(&ctx()?, command).await,
        Command::Logs(args) => logs::run(&ctx()?, args).await,
        Command::Exec(args) => exec::run(&ctx()?, args).await,
        Command::Image(command) => image::run(&ctx()?, command).await,
        Command::PortForward(args) => port_forward::run(&ctx()?, args).await,
        Command::Config(ConfigCommand::SetServer { url }) => {
            let path = config::set_server(url)?;
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
