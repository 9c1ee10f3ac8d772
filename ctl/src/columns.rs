//! What `hmctl get` shows for each kind: the table columns (normal and `-o wide`) and
//! the conditions `describe` lists. Missing values print as `<none>`, never as made-up
//! defaults.

pub mod instance_status;
mod security;

use std::collections::BTreeMap;

use hypermesh_api::Resource;
use hypermesh_api::time::age;
use hypermesh_api::v1::{
    self, Asset, Condition, Event, Instance, Lease, Namespace, Node, Route, Secret, Workload,
};

/// Printed for a value the object does not have.
pub const NONE: &str = "<none>";

/// The node label `hmctl get nodes` shows as ROLES.
pub const ROLE_LABEL: &str = "hypermesh.io/role";

/// How one kind prints as a table row.
pub trait Columns: Resource {
    /// Column headers (without NAMESPACE, which `get -A` puts first).
    fn headers(wide: bool) -> Vec<&'static str>;
    /// The cells of this object's row, one per header.
    fn cells(&self, wide: bool) -> Vec<String>;
    /// Conditions in the status, for `describe`.
    fn conditions(&self) -> &[Condition] {
        &[]
    }
    /// Puts a listing in the order `get` prints it (default: as the server sent it,
    /// by name).
    fn sort_listing(_objects: &mut [Self])
    where
        Self: Sized,
    {
    }
}

/// `value`, or `<none>` when empty.
pub fn or_none(value: impl Into<String>) -> String {
    let value = value.into();
    if value.is_empty() {
        NONE.to_string()
    } else {
        value
    }
}

/// `RUNNING` → `Running`, `PRIVATE_NETWORK` → `PrivateNetwork`.
pub fn title_case(upper: &str) -> String {
    upper
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// `k=v,k2=v2`, or `<none>`.
pub fn map_text(map: &BTreeMap<String, String>) -> String {
    or_none(
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// The proto name of an enum value (`GPU`), the number when unknown, `<none>` when unset.
fn enum_text<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> String {
    if value == 0 {
        return NONE.to_string();
    }
    E::try_from(value).map_or_else(|_| value.to_string(), |e| name(e).to_string())
}

fn created<K: Resource>(obj: &K) -> String {
    age(obj.meta().creation_timestamp.as_ref())
}

fn capacity(map: &BTreeMap<String, String>, key: &str) -> String {
    or_none(map.get(key).cloned().unwrap_or_default())
}

/// A byte quantity in the largest binary unit it reaches, for tables:
/// `24683652Ki` → `23.5Gi`. Anything else is shown as given.
pub fn readable_bytes(quantity: &str) -> String {
    let Ok(q) = quantity.parse::<hypermesh_api::quantity::Quantity>() else {
        return quantity.to_string();
    };
    let bytes = q.units_ceil() as f64;
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        let value = bytes / size as f64;
        if value >= 1.0 {
            let text = format!("{value:.1}");
            return format!("{}{unit}", text.strip_suffix(".0").unwrap_or(&text));
        }
    }
    quantity.to_string()
}

/// `k=v` pairs with memory and storage amounts made readable.
fn capacity_text(map: &BTreeMap<String, String>) -> String {
    or_none(
        map.iter()
            .map(|(k, v)| match k.as_str() {
                "memory" | "storage" => format!("{k}={}", readable_bytes(v)),
                _ => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(","),
    )
}

impl Columns for Namespace {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "STATUS", "AGE"]
    }

    fn cells(&self, _wide: bool) -> Vec<String> {
        let phase = self.status.as_ref().map_or(0, |s| s.phase);
        let status = match v1::NamespacePhase::try_from(phase) {
            Ok(v1::NamespacePhase::Active) => "Active".to_string(),
            Ok(v1::NamespacePhase::Terminating) => "Terminating".to_string(),
            _ if self.meta().deletion_timestamp.is_some() => "Terminating".to_string(),
            _ => "Unknown".to_string(),
        };
        vec![self.meta().name.clone(), status, created(self)]
    }
}

/// `Ready`, `NotReady` or `Unknown` from the Ready condition, plus
/// `,SchedulingDisabled` when cordoned.
pub fn node_status(node: &Node) -> String {
    let ready = node
        .conditions()
        .iter()
        .find(|c| c.r#type == "Ready")
        .map(|c| c.status.as_str());
    let mut status = match ready {
        Some("True") => "Ready",
        Some("False") => "NotReady",
        _ => "Unknown",
    }
    .to_string();
    if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

impl Columns for Node {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "NAME", "STATUS", "ROLES", "AGE", "VERSION", "CPU", "MEMORY", "GPU",
        ];
        if wide {
            h.extend([
                "INTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ]);
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let status = self.status.clone().unwrap_or_default();
        let info = status.node_info.clone().unwrap_or_default();
        let mut c = vec![
            self.meta().name.clone(),
            node_status(self),
            or_none(
                self.meta()
                    .labels
                    .get(ROLE_LABEL)
                    .cloned()
                    .unwrap_or_default(),
            ),
            created(self),
            or_none(info.agent_version.clone()),
            capacity(&status.capacity, "cpu"),
            readable_bytes(&capacity(&status.capacity, "memory")),
            capacity(&status.capacity, "gpu"),
        ];
        if wide {
            let internal_ip = status
                .addresses
                .iter()
                .find(|a| a.r#type == "InternalIP")
                .map(|a| a.address.clone())
                .unwrap_or_default();
            c.extend([
                or_none(internal_ip),
                or_none(info.os_image),
                or_none(info.kernel_version),
                or_none(info.container_runtime_version),
            ]);
        }
        c
    }

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Columns for Asset {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "NAME", "TYPE", "NODE", "CAPACITY", "PRIVACY", "ADDRESS", "AGE",
        ];
        if wide {
            h.extend(["ALLOCATED", "MODEL"]);
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let mut c = vec![
            self.meta().name.clone(),
            enum_text(spec.r#type, |t: v1::AssetType| t.as_str_name()),
            or_none(spec.node_name),
            capacity_text(&spec.capacity),
            enum_text(spec.privacy, |p: v1::PrivacyLevel| p.as_str_name()),
            or_none(status.address),
            created(self),
        ];
        if wide {
            c.extend([
                map_text(&status.allocated),
                capacity(&spec.attributes, "model"),
            ]);
        }
        c
    }

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Columns for Secret {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "TYPE", "DATA", "AGE"]
    }

    fn cells(&self, _wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        vec![
            self.meta().name.clone(),
            or_none(spec.r#type),
            // Values are withheld unless revealed; their sizes still count the keys.
            spec.data.len().max(spec.data_sizes.len()).to_string(),
            created(self),
        ]
    }
}

impl Columns for Route {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "ADDRESS", "PORTS", "ENDPOINTS", "AGE"];
        if wide {
            h.push("SELECTOR");
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let ports = spec
            .ports
            .iter()
            .map(|p| {
                let protocol =
                    v1::Protocol::try_from(p.protocol).map_or("TCP", |proto| match proto {
                        v1::Protocol::Unspecified => "TCP",
                        other => other.as_str_name(),
                    });
                let target = if p.target_port == 0 || p.target_port == p.port {
                    String::new()
                } else {
                    format!(":{}", p.target_port)
                };
                format!("{}{target}/{protocol}", p.port)
            })
            .collect::<Vec<_>>()
            .join(",");
        let ready = status.endpoints.iter().filter(|e| e.ready).count();
        let mut c = vec![
            self.meta().name.clone(),
            or_none(status.address),
            or_none(ports),
            format!("{ready}/{}", status.endpoints.len()),
            created(self),
        ];
        if wide {
            c.push(map_text(&spec.selector));
        }
        c
    }
}

impl Columns for Workload {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
        if wide {
            h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let mut c = vec![
            self.meta().name.clone(),
            format!("{}/{}", status.ready_replicas, spec.replicas),
            status.updated_replicas.to_string(),
            status.available_replicas.to_string(),
            created(self),
        ];
        if wide {
            let containers = spec.template.map(|t| t.containers).unwrap_or_default();
            c.extend([
                or_none(
                    containers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                or_none(
                    containers
                        .iter()
                        .map(|c| c.image.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                map_text(&spec.selector),
            ]);
        }
        c
    }

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Columns for Instance {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "READY", "STATUS", "RESTARTS", "NODE", "AGE"];
        if wide {
            h.extend(["PHASE", "ADDRESS"]);
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let restarts: u64 = status
            .container_statuses
            .iter()
            .map(|c| u64::from(c.restart_count))
            .sum();
        let mut c = vec![
            self.meta().name.clone(),
            instance_status::ready(self),
            instance_status::status(self),
            restarts.to_string(),
            or_none(spec.node_name),
            created(self),
        ];
        if wide {
            c.extend([instance_status::phase(self), or_none(status.address)]);
        }
        c
    }

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Columns for Lease {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "HOLDER", "AGE"];
        if wide {
            h.extend(["DURATION", "RENEWED"]);
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut c = vec![
            self.meta().name.clone(),
            or_none(spec.holder_identity),
            created(self),
        ];
        if wide {
            c.extend([
                format!("{}s", spec.lease_duration_seconds),
                spec.renew_time
                    .as_ref()
                    .map_or_else(|| NONE.to_string(), |t| format!("{} ago", age(Some(t)))),
            ]);
        }
        c
    }
}

/// `workload/web`, as events print the object they are about.
pub fn object_ref_text(r: Option<&v1::ObjectReference>) -> String {
    match r {
        Some(r) if !r.kind.is_empty() || !r.name.is_empty() => {
            format!("{}/{}", r.kind.to_ascii_lowercase(), r.name)
        }
        _ => NONE.to_string(),
    }
}

/// When an event was last seen: its last timestamp, else first, else creation.
pub fn event_last_seen(event: &Event) -> String {
    let spec = event.spec.as_ref();
    let t = spec
        .and_then(|s| s.last_timestamp.as_ref())
        .or_else(|| spec.and_then(|s| s.first_timestamp.as_ref()))
        .or(event.meta().creation_timestamp.as_ref());
    age(t)
}

impl Columns for Event {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"];
        if wide {
            h.extend(["SOURCE", "FIRST SEEN", "NAME"]);
        }
        h
    }

    /// Oldest first by when each last happened (the newest at the bottom, where a
    /// following `-w` continues), then by name.
    fn sort_listing(objects: &mut [Self]) {
        objects.sort_by_cached_key(|e| {
            let spec = e.spec.as_ref();
            let t = spec
                .and_then(|s| s.last_timestamp.or(s.first_timestamp))
                .or(e.meta().creation_timestamp)
                .map_or((i64::MIN, 0), |t| (t.seconds, t.nanos));
            (t, e.meta().namespace.clone(), e.meta().name.clone())
        });
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut c = vec![
            event_last_seen(self),
            or_none(spec.r#type.clone()),
            or_none(spec.reason.clone()),
            object_ref_text(spec.involved_object.as_ref()),
            spec.count.max(1).to_string(),
            spec.message.replace('\n', " "),
        ];
        if wide {
            let first = spec
                .first_timestamp
                .as_ref()
                .or(self.meta().creation_timestamp.as_ref());
            c.extend([or_none(spec.source), age(first), self.meta().name.clone()]);
        }
        c
    }
}

#[cfg(test)]
mod tests;
