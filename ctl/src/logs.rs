//! `hmctl logs INSTANCE`: a container's output, read on its node by the agent and
//! streamed through the apiserver (`InstanceService.Logs`).

use std::io::Write;

use anyhow::{Context as _, Result};
use clap::Args;
use hypermesh_api::v1::{LogsRequest, instance_service_client::InstanceServiceClient};

use crate::error::ServerError;
use crate::{Context, Exit};

/// `hmctl logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The Instance (`NAME`, `instance/NAME` or `inst/NAME`)
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
    /// The container (needed when the Instance has several)
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new output until the container's run ends
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// The previous run of the container (before its last restart)
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Prefix each line with its RFC 3339 time
    #[arg(long)]
    pub timestamps: bool,
}

/// `instance/web-1`, `inst/web-1` or `web-1` → `web-1`.
pub fn instance_name(arg: &str) -> Result<&str> {
    match arg.split_once('/') {
        None => Ok(arg),
        Some((kind, name)) if ["instance", "instances", "inst"].contains(&kind) => Ok(name),
        Some((kind, _)) => anyhow::bail!(
            "{arg:?}: logs and exec work on Instances (`hmctl get instances` lists them), not {kind}"
        ),
    }
}

/// Runs `hmctl logs`.
pub async fn run(ctx: &Context, args: &LogsArgs) -> Result<Exit> {
    let name = instance_name(&args.instance)?;
    let namespace = ctx
        .namespace
        .clone()
        .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.into());
    let mut client = InstanceServiceClient::new(ctx.connect().await?);
    let request = LogsRequest {
        namespace,
        name: name.to_string(),
        container: args.container.clone().unwrap_or_default(),
        follow: args.follow,
        tail_lines: args.tail,
        previous: args.previous,
        timestamps: args.timestamps,
    };
    let context = || format!("error reading the logs of instance {name:?}: ");
    let mut stream = client
        .logs(request)
        .await
        .map_err(|s| ServerError::from_status(&s).with_context(context()))?
        .into_inner();
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| ServerError::from_status(&s).with_context(context()))?
    {
        stdout
            .write_all(&chunk.data)
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout")?;
    }
    Ok(Exit::Success)
}
