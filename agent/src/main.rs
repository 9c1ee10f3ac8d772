//! `hm-agent`: parses flags, installs logging and signal handling, and runs the agent.

use anyhow::Context;
use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    hypermesh_runtime::process::init_logging();
    hypermesh_trust::tls::install_default_provider();
    let config = hypermesh_agent::config::Args::parse()
        .into_config()
        .context("invalid flags")?;
    let shutdown = hypermesh_runtime::process::shutdown_on_signals();
    hypermesh_agent::run(config, shutdown)
        .await
        .context("hm-agent failed")
}
