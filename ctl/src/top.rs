//! `hmctl top nodes|instances`: live usage the agents report (`UsageService.List`), as
//! a table: NAME, CPU(cores), CPU%, MEMORY(bytes), MEMORY%. Percentages are of a
//! node's allocatable cpu and memory, and of an Instance's resources (the sum over its
//! containers; `<none>` when it sets none).

use std::collections::HashMap;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use hypermesh_api::quantity::Quantity;
use hypermesh_api::v1::usage_service_client::UsageServiceClient;
use hypermesh_api::v1::{Instance, ListRequest, Node, ResourceUsage, UsageListRequest};
use hypermesh_api::{Api, Resource};

use crate::error::ServerError;
use crate::output::print;
use crate::table::Table;
use crate::{Context, Exit};

/// What `top` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopKind {
    /// Hosts.
    #[value(alias = "node", alias = "no")]
    Nodes,
    /// Instances.
    #[value(alias = "instance", alias = "inst")]
    Instances,
}

/// `hmctl top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// nodes or instances
    #[arg(value_enum, value_name = "KIND")]
    pub kind: TopKind,

    /// Only these objects (default: all that report)
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Instances in every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// (cpu millicores, memory bytes) an object may use; `None` where it sets nothing.
type Limits = (Option<u128>, Option<u128>);

fn quantity(text: &str) -> Option<u128> {
    (!text.is_empty())
        .then(|| text.parse::<Quantity>().ok())
        .flatten()
        .map(Quantity::millis)
}

fn node_limits(node: &Node) -> Limits {
    let Some(status) = node.status.as_ref() else {
        return (None, None);
    };
    let get = |key: &str| {
        status
            .allocatable
            .get(key)
            .or_else(|| status.capacity.get(key))
            .and_then(|v| quantity(v))
    };
    (get("cpu"), get("memory").map(|m| m / 1000))
}

fn instance_limits(instance: &Instance) -> Limits {
    let containers = instance
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    let sum = |pick: fn(&hypermesh_api::v1::ResourceRequirements) -> &str| {
        let mut total = 0u128;
        for c in containers {
            // One container without a limit leaves the Instance unlimited.
            total += quantity(pick(c.resources.as_ref()?))?;
        }
        (!containers.is_empty()).then_some(total)
    };
    (sum(|r| &r.cpu), sum(|r| &r.memory).map(|m| m / 1000))
}

fn percent(used: u128, of: Option<u128>) -> String {
    match of {
        Some(of) if of > 0 => format!("{}%", used * 100 / of),
        _ => "<none>".to_string(),
    }
}

/// The table of `usage`, with percentages from `limits` (by `namespace/name`).
pub fn table(
    usage: &[ResourceUsage],
    limits: &HashMap<(String, String), Limits>,
    namespaced: bool,
) -> Table {
    let mut headers = vec!["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"];
    if namespaced {
        headers.insert(0, "NAMESPACE");
    }
    let mut table = Table::new(headers);
    for u in usage {
        let (cpu_limit, memory_limit) = limits
            .get(&(u.namespace.clone(), u.name.clone()))
            .copied()
            .unwrap_or((None, None));
        let (cpu, cpu_percent) = match u.cpu_millicores {
            Some(m) => (format!("{m}m"), percent(u128::from(m), cpu_limit)),
            None => ("<unknown>".to_string(), "<unknown>".to_string()),
        };
        let mut row = vec![
            u.name.clone(),
            cpu,
            cpu_percent,
            format!("{}Mi", u.memory_bytes / (1 << 20)),
            percent(u128::from(u.memory_bytes), memory_limit),
        ];
        if namespaced {
            row.insert(0, u.namespace.clone());
        }
        table.push(row);
    }
    table
}

/// Runs `hmctl top`.
pub async fn run(ctx: &Context, args: &TopArgs) -> Result<Exit> {
    let channel = ctx.connect().await?;
    let namespace = match args.kind {
        TopKind::Nodes => String::new(),
        TopKind::Instances if args.all_namespaces => String::new(),
        TopKind::Instances => ctx
            .namespace
            .clone()
            .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.to_string()),
    };
    let kind = match args.kind {
        TopKind::Nodes => "nodes",
        TopKind::Instances => "instances",
    };
    let mut usage = UsageServiceClient::new(channel.clone())
        .list(UsageListRequest {
            kind: kind.into(),
            namespace: namespace.clone(),
        })
        .await
        .map_err(|s| ServerError::from_status(&s))?
        .into_inner()
        .items;
    if !args.names.is_empty() {
        usage.retain(|u| args.names.contains(&u.name));
        if let Some(missing) = args
            .names
            .iter()
            .find(|n| !usage.iter().any(|u| &u.name == *n))
        {
            bail!(
                "no usage reported for {kind} {missing:?} (yet: agents report every --usage-interval)"
            );
        }
    }
    usage.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let list = ListRequest {
        namespace: namespace.clone(),
        ..Default::default()
    };
    let limits: HashMap<(String, String), Limits> = match args.kind {
        TopKind::Nodes => Api::<Node>::new(channel)
            .list_all(list)
            .await
            .map_err(|s| ServerError::from_status(&s))?
            .0
            .iter()
            .map(|n| ((String::new(), n.meta().name.clone()), node_limits(n)))
            .collect(),
        TopKind::Instances => Api::<Instance>::new(channel)
            .list_all(list)
            .await
            .map_err(|s| ServerError::from_status(&s))?
            .0
            .iter()
            .map(|i| {
                let m = i.meta();
                ((m.namespace.clone(), m.name.clone()), instance_limits(i))
            })
            .collect(),
    };
    if usage.is_empty() {
        eprintln!("No usage reported yet (agents report every --usage-interval)");
        return Ok(Exit::Success);
    }
    let namespaced = args.kind == TopKind::Instances && args.all_namespaces;
    print(&table(&usage, &limits, namespaced).render())?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_of_the_limits_and_unknown_cpu_says_so() {
        let usage = [
            ResourceUsage {
                namespace: "default".into(),
                name: "web".into(),
                cpu_millicores: Some(250),
                memory_bytes: 64 << 20,
                ..Default::default()
            },
            ResourceUsage {
                namespace: "default".into(),
                name: "new".into(),
                cpu_millicores: None,
                memory_bytes: 1 << 20,
                ..Default::default()
            },
        ];
        let limits = HashMap::from([(
            ("default".to_string(), "web".to_string()),
            (Some(500), Some(128 << 20)),
        )]);
        let text = table(&usage, &limits, false).render();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
        );
        assert_eq!(lines[1], ["web", "250m", "50%", "64Mi", "50%"]);
        assert_eq!(lines[2], ["new", "<unknown>", "<unknown>", "1Mi", "<none>"]);
    }
}
