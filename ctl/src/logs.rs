//! `hmctl logs INSTANCE`: a container's output, read on its node by the agent and
//! streamed through the apiserver (`InstanceService.Logs`).

use std::io::Write;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use hypermesh_api::v1::{
    Instance, InstancePhase, ListRequest, LogsRequest, Workload,
    instance_service_client::InstanceServiceClient,
};
use hypermesh_api::{Api, Resource};
use tonic::transport::Channel;

use crate::error::ServerError;
use crate::{Context, Exit};

/// `hmctl logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The Instance (`NAME`, `instance/NAME`), or `workload/NAME` for one of its Instances
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

/// The Instance `arg` names: `web-1`, `instance/web-1` (`inst/`), or `workload/web`
/// (`wl/`), meaning one of the Workload's Instances — a running one, the oldest first,
/// as `kubectl logs deploy/web` picks a pod.
pub async fn resolve_instance(ctx: &Context, channel: Channel, arg: &str) -> Result<String> {
    let (kind, name) = arg.split_once('/').unwrap_or(("instance", arg));
    if ["instance", "instances", "inst"].contains(&kind) {
        return Ok(name.to_string());
    }
    if !["workload", "workloads", "wl"].contains(&kind) {
        bail!(
            "{arg:?}: logs and exec work on Instances (`hmctl get instances` lists them) or \
             workload/NAME, not {kind}"
        );
    }
    let namespace = ctx
        .namespace
        .clone()
        .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.into());
    let workload = Api::<Workload>::new(channel.clone())
        .get(&namespace, name)
        .await
        .map_err(|s| ServerError::for_object(&s, "workloads", name))?;
    let selector = workload
        .spec
        .as_ref()
        .map(|s| {
            s.selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let (mut instances, _) = Api::<Instance>::new(channel)
        .list_all(ListRequest {
            namespace: namespace.clone(),
            label_selector: selector,
            ..Default::default()
        })
        .await
        .map_err(|s| ServerError::from_status(&s))?;
    let uid = workload.meta().uid.clone();
    instances.retain(|i| i.meta().owner_references.iter().any(|r| r.uid == uid));
    let running = |i: &Instance| {
        i.status
            .as_ref()
            .is_some_and(|s| s.phase == InstancePhase::Running as i32)
    };
    instances.sort_by_key(|i| {
        (
            !running(i),
            i.meta().creation_timestamp.map(|t| (t.seconds, t.nanos)),
        )
    });
    let Some(first) = instances.first() else {
        bail!("workload {namespace}/{name} has no instances");
    };
    if instances.len() > 1 {
        eprintln!(
            "Found {} instances, using instance/{}",
            instances.len(),
            first.meta().name
        );
    }
    Ok(first.meta().name.clone())
}

/// Runs `hmctl logs`.
pub async fn run(ctx: &Context, args: &LogsArgs) -> Result<Exit> {
    let channel = ctx.connect().await?;
    let name = resolve_instance(ctx, channel.clone(), &args.instance).await?;
    let name = name.as_str();
    let namespace = ctx
        .namespace
        .clone()
        .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.into());
    let mut client = InstanceServiceClient::new(channel);
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
