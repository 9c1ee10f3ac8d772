//! What `describe node` adds, as kubectl's does: the Instances bound to the node that
//! have not finished, with their requests, and the node's allocated resources
//! (requests against allocatable, with percentages).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hypermesh_api::quantity::Quantity;
use hypermesh_api::time::age;
use hypermesh_api::v1::{Instance, InstancePhase, ListRequest, Node};
use hypermesh_api::{Api, Resource};

use crate::columns::{NONE, readable_bytes};
use crate::error::ServerError;
use crate::table::Table;

/// Resources shown per Instance and in the allocation summary.
const RESOURCES: &[&str] = &["cpu", "memory", "gpu"];

/// The Instances bound to `node` in every namespace that have not finished.
pub async fn instances_on(api: &Api<Instance>, node: &str) -> Result<Vec<Instance>, String> {
    let request = ListRequest {
        field_selector: format!("spec.nodeName={node}"),
        ..Default::default()
    };
    let (instances, _) = api
        .list_all(request)
        .await
        .map_err(|s| ServerError::from_status(&s).to_string())?;
    Ok(instances
        .into_iter()
        .filter(|i| {
            let phase = i.status.as_ref().map_or(0, |s| s.phase);
            !matches!(
                InstancePhase::try_from(phase),
                Ok(InstancePhase::Succeeded | InstancePhase::Failed)
            )
        })
        .collect())
}

/// The sum of `resource` requested by the containers of `instance`.
fn requested(instance: &Instance, resource: &str) -> Quantity {
    let containers = instance.spec.as_ref().map_or(&[][..], |s| &s.containers);
    containers
        .iter()
        .filter_map(|c| c.resources.as_ref())
        .filter_map(|r| match resource {
            "cpu" => Some(&r.cpu),
            "memory" => Some(&r.memory),
            "gpu" => Some(&r.gpu),
            _ => None,
        })
        .filter_map(|q| q.parse::<Quantity>().ok())
        .fold(Quantity::ZERO, Quantity::saturating_add)
}

/// `600m`, `2`, `23.5Gi`: a quantity of `resource` as `get` shows it.
fn quantity_text(resource: &str, q: Quantity) -> String {
    match resource {
        "memory" => readable_bytes(&format!("{}", q.units_ceil())),
        _ if q.is_whole() => q.units_ceil().to_string(),
        _ => format!("{}m", q.millis()),
    }
}

/// `600m (15%)`: the share of `allocatable`, when known.
fn with_share(resource: &str, q: Quantity, allocatable: Option<Quantity>) -> String {
    let text = quantity_text(resource, q);
    match allocatable.filter(|a| a.millis() > 0) {
        Some(a) => format!("{text} ({}%)", q.millis() * 100 / a.millis()),
        None => text,
    }
}

/// The `Non-terminated Instances` and `Allocated resources` sections of `node`.
pub fn sections(node: &Node, instances: &Result<Vec<Instance>, String>) -> String {
    let mut out = String::new();
    let instances = match instances {
        Ok(instances) => instances,
        Err(message) => {
            super::field(&mut out, "Instances", &format!("<cannot list: {message}>"));
            return out;
        }
    };
    let allocatable: BTreeMap<&str, Option<Quantity>> = RESOURCES
        .iter()
        .map(|r| {
            let status = node.status.as_ref();
            let value = status
                .and_then(|s| s.allocatable.get(*r).or_else(|| s.capacity.get(*r)))
                .and_then(|q| q.parse().ok());
            (*r, value)
        })
        .collect();
    let _ = writeln!(
        out,
        "Non-terminated Instances:  ({} in total)",
        instances.len()
    );
    let mut totals: BTreeMap<&str, Quantity> = BTreeMap::new();
    if !instances.is_empty() {
        let mut table = Table::new(["NAMESPACE", "NAME", "CPU", "MEMORY", "GPU", "AGE"]);
        for i in instances {
            let mut row = vec![i.meta().namespace.clone(), i.meta().name.clone()];
            for r in RESOURCES {
                let q = requested(i, r);
                let total = totals.entry(r).or_insert(Quantity::ZERO);
                *total = total.saturating_add(q);
                row.push(if q.millis() == 0 {
                    "0".to_string()
                } else {
                    with_share(r, q, allocatable[r])
                });
            }
            row.push(age(i.meta().creation_timestamp.as_ref()));
            table.push(row);
        }
        out.push_str(&table.render_indented(2));
    }
    let _ = writeln!(out, "Allocated resources:");
    let mut table = Table::new(["RESOURCE", "REQUESTS", "ALLOCATABLE"]);
    for r in RESOURCES {
        let total = totals.get(r).copied().unwrap_or(Quantity::ZERO);
        table.push(vec![
            (*r).to_string(),
            with_share(r, total, allocatable[r]),
            allocatable[r].map_or_else(|| NONE.to_string(), |a| quantity_text(r, a)),
        ]);
    }
    out.push_str(&table.render_indented(2));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::{self, ObjectMeta};

    fn instance(name: &str, cpu: &str, memory: &str) -> Instance {
        Instance {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::InstanceSpec {
                containers: vec![v1::Container {
                    name: "main".into(),
                    resources: Some(v1::ResourceRequirements {
                        cpu: cpu.into(),
                        memory: memory.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn sums_requests_against_allocatable() {
        let node = Node {
            status: Some(v1::NodeStatus {
                allocatable: [("cpu".into(), "4".into()), ("memory".into(), "1Gi".into())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = sections(
            &node,
            &Ok(vec![
                instance("a", "500m", "256Mi"),
                instance("b", "1", "256Mi"),
            ]),
        );
        assert!(
            text.starts_with("Non-terminated Instances:  (2 in total)\n"),
            "{text}"
        );
        assert!(
            text.contains("  default     a      500m (12%)   256Mi (25%)   0"),
            "{text}"
        );
        assert!(text.contains("\n  cpu        1500m (37%)   4\n"), "{text}");
        assert!(
            text.contains("\n  memory     512Mi (50%)   1Gi\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  gpu        0             <none>\n"),
            "{text}"
        );
    }
}
