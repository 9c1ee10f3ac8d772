//! `hmctl scale`: sets `spec.replicas` of workloads, retrying when a workload changed
//! between reading and writing it (optimistic concurrency).

use anyhow::{Result, bail};
use hypermesh_api::Api;
use hypermesh_api::resource::KindInfo;
use hypermesh_api::v1::Workload;
use tonic::Code;

use crate::cli::ScaleArgs;
use crate::error::ServerError;
use crate::kinds::{display_name, request_namespace, resolve_with_names};
use crate::output::print;
use crate::{Context, Exit};

/// Attempts at a read-modify-write before giving up on conflicts.
const CONFLICT_RETRIES: usize = 5;

/// Fails unless `info` is the Workload kind: only workloads have replicas and rollouts.
pub fn require_workload(info: &KindInfo, command: &str) -> Result<()> {
    if info.kind != "Workload" {
        bail!(
            "{command} works on workloads only, not {} (try `hmctl {command} workload NAME`)",
            info.plural
        );
    }
    Ok(())
}

/// Reads workload `namespace/name`, applies `change`, and writes it back (as a
/// compare-and-swap, re-reading on conflicts). `change` returns false to write
/// nothing. Returns the workload as written (or as read when unchanged).
pub async fn modify_workload(
    api: &Api<Workload>,
    namespace: &str,
    name: &str,
    mut change: impl FnMut(&mut Workload) -> Result<bool>,
) -> Result<Workload> {
    for _ in 0..CONFLICT_RETRIES {
        let mut workload = api
            .get(namespace, name)
            .await
            .map_err(|s| ServerError::for_object(&s, "workloads", name))?;
        if !change(&mut workload)? {
            return Ok(workload);
        }
        match api.update(&workload).await {
            Ok(written) => return Ok(written),
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(ServerError::for_object(&s, "workloads", name).into()),
        }
    }
    bail!("workload {name:?} kept changing while hmctl tried to update it; try again")
}

/// Runs `hmctl scale`.
pub async fn run(ctx: &Context, args: &ScaleArgs) -> Result<Exit> {
    let (info, names) = resolve_with_names(&args.kind, &args.names)?;
    require_workload(info, "scale")?;
    if names.is_empty() {
        bail!("give the name of the workload to scale");
    }
    let replicas = i32::try_from(args.replicas)
        .map_err(|_| anyhow::anyhow!("--replicas {} is too large", args.replicas))?;
    let namespace = request_namespace(info, ctx.namespace.as_deref(), false);
    let api = Api::<Workload>::new(ctx.connect().await?);
    let mut exit = Exit::Success;
    for name in names {
        let result = modify_workload(&api, &namespace, &name, |w| {
            w.spec.get_or_insert_with(Default::default).replicas = replicas;
            Ok(true)
        })
        .await;
        match result {
            Ok(_) => print(&format!("{} scaled\n", display_name("Workload", &name)))?,
            Err(err) => {
                crate::error::report(&err);
                exit = Exit::Failure;
            }
        }
    }
    Ok(exit)
}
