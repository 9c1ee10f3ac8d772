//! `hmctl drain`: cordons a node, then evicts every Instance bound to it (all
//! namespaces, field selector `spec.nodeName=NODE`) and waits until they are gone (an
//! evicted Instance stays `Terminating` until the node's agent has stopped its
//! containers), saying every few seconds what it still waits for, so the node can be
//! taken down. Workload-managed Instances are recreated by their
//! Workload and placed elsewhere; Instances nothing manages would be lost, so drain
//! refuses to evict them unless `--force` is given (as kubectl does).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use hypermesh_api::v1::{DeleteRequest, Instance, ListRequest, Node};
use hypermesh_api::{Api, Resource};
use tokio::time::Instant;
use tonic::Code;

use crate::cordon::{self, set_unschedulable};
use crate::error::ServerError;
use crate::output::print;
use crate::progress::{Progress, Unit};
use crate::{Context, Exit};

/// `hmctl drain`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  hmctl drain host-1\n  \
    hmctl drain host-1 --timeout 2m --force\n\n\
    The node stays cordoned afterwards; `hmctl uncordon NODE` brings it back.")]
pub struct DrainArgs {
    /// The node's name
    #[arg(value_name = "NODE")]
    pub node: String,

    /// How long to wait for the evicted Instances to be gone, e.g. 30s, 2m
    #[arg(long, default_value = "5m", value_parser = crate::duration::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Also evict Instances that no Workload manages (they are not recreated)
    #[arg(long)]
    pub force: bool,
}

/// `(namespace, name, uid)` of an Instance being evicted.
type Evictee = (String, String, String);

fn evictee(inst: &Instance) -> Evictee {
    let meta = inst.meta();
    (meta.namespace.clone(), meta.name.clone(), meta.uid.clone())
}

fn managed(inst: &Instance) -> bool {
    inst.meta().owner_references.iter().any(|r| r.controller)
}

/// Runs `hmctl drain`.
pub async fn run(ctx: &Context, args: &DrainArgs) -> Result<Exit> {
    let channel = ctx.connect().await?;
    let nodes = Api::<Node>::new(channel.clone());
    let instances = Api::<Instance>::new(channel);

    let change = set_unschedulable(&nodes, &args.node, true).await?;
    print(&format!("{}\n", cordon::message(&args.node, true, change)))?;

    let on_node = bound_to(&instances, &args.node).await?;
    let unmanaged: Vec<String> = on_node
        .iter()
        .filter(|i| !managed(i))
        .map(|i| format!("{}/{}", i.meta().namespace, i.meta().name))
        .collect();
    if !unmanaged.is_empty() {
        if !args.force {
            eprintln!(
                "error: cannot evict Instances that no Workload manages (use --force to evict \
                 them anyway; they will not be recreated): {}",
                unmanaged.join(", ")
            );
            return Ok(Exit::Failure);
        }
        eprintln!(
            "warning: evicting Instances that no Workload manages: {}",
            unmanaged.join(", ")
        );
    }

    let progress = Progress::new(
        &format!("draining node/{}", args.node),
        on_node.len() as u64,
        Unit::Items,
    );
    let mut waiting = BTreeSet::new();
    for inst in &on_node {
        let (namespace, name, uid) = evictee(inst);
        progress.suspend(|| print(&format!("evicting instance {namespace}/{name}\n")))?;
        let request = DeleteRequest {
            namespace: namespace.clone(),
            name: name.clone(),
            ..Default::default()
        };
        match instances.delete(request).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(ServerError::for_object(&s, "instances", &name).into()),
        }
        waiting.insert((namespace, name, uid));
    }

    let deadline = Instant::now() + args.timeout;
    let mut polls = crate::POLL.retry();
    let mut next_report = Instant::now() + crate::PROGRESS_EVERY;
    loop {
        let still: BTreeSet<Evictee> = bound_to(&instances, &args.node)
            .await?
            .iter()
            .map(evictee)
            .collect();
        let gone: Vec<Evictee> = waiting.difference(&still).cloned().collect();
        for (namespace, name, uid) in gone {
            progress.suspend(|| print(&format!("evicted instance {namespace}/{name}\n")))?;
            waiting.remove(&(namespace, name, uid));
        }
        progress.update(
            (on_node.len() - waiting.len()) as u64,
            format!("{} instance(s) stopping their containers", waiting.len()),
        );
        if waiting.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= next_report && now < deadline && !progress.is_bar() {
            let names: Vec<String> = waiting
                .iter()
                .map(|(ns, n, _)| format!("{ns}/{n}"))
                .collect();
            eprintln!(
                "waiting for {} instance(s) to stop their containers: {}",
                names.len(),
                names.join(", ")
            );
            next_report = now + crate::PROGRESS_EVERY;
        }
        if now >= deadline {
            progress.finish();
            let names: Vec<String> = waiting
                .iter()
                .map(|(ns, n, _)| format!("{ns}/{n}"))
                .collect();
            eprintln!(
                "error: timed out after {:?} waiting for {} instance(s) to leave node/{}: {}",
                args.timeout,
                names.len(),
                args.node,
                names.join(", ")
            );
            return Ok(Exit::Failure);
        }
        tokio::time::sleep(polls.next_delay().min(deadline - now)).await;
    }
    progress.finish();
    print(&format!("node/{} drained\n", args.node))?;
    Ok(Exit::Success)
}

/// Every Instance bound to `node`, in all namespaces.
async fn bound_to(api: &Api<Instance>, node: &str) -> Result<Vec<Instance>> {
    let (items, _) = api
        .list_all(ListRequest {
            namespace: String::new(),
            field_selector: format!("spec.nodeName={node}"),
            ..Default::default()
        })
        .await
        .map_err(|s| ServerError::from_status(&s))?;
    Ok(items)
}
