//! What `hmctl get` shows for each kind: the table columns (normal and `-o wide`) and
//! the conditions `describe` lists. Missing values print as `<none>`, never as made-up
//! defaults.

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
fn readable_bytes(quantity: &str) -> String {
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
            spec.data.len().to_string(),
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
        let mut h = vec!["NAME", "PHASE", "RESTARTS", "NODE", "AGE"];
        if wide {
            h.extend(["ADDRESS", "READY"]);
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let phase = match v1::InstancePhase::try_from(status.phase) {
            Ok(v1::InstancePhase::Unspecified) => NONE.to_string(),
            Ok(p) => title_case(p.as_str_name()),
            Err(_) => status.phase.to_string(),
        };
        let phase = if self.meta().deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            phase
        };
        let restarts: u64 = status
            .container_statuses
            .iter()
            .map(|c| u64::from(c.restart_count))
            .sum();
        let mut c = vec![
            self.meta().name.clone(),
            phase,
            restarts.to_string(),
            or_none(spec.node_name),
            created(self),
        ];
        if wide {
            let ready = status.container_statuses.iter().filter(|c| c.ready).count();
            c.extend([
                or_none(status.address),
                format!("{ready}/{}", spec.containers.len()),
            ]);
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
        let mut h = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
        if wide {
            h.extend(["SOURCE", "COUNT", "FIRST SEEN", "NAME"]);
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut c = vec![
            event_last_seen(self),
            or_none(spec.r#type.clone()),
            or_none(spec.reason.clone()),
            object_ref_text(spec.involved_object.as_ref()),
            spec.message.replace('\n', " "),
        ];
        if wide {
            let first = spec
                .first_timestamp
                .as_ref()
                .or(self.meta().creation_timestamp.as_ref());
            c.extend([
                or_none(spec.source),
                spec.count.max(1).to_string(),
                age(first),
                self.meta().name.clone(),
            ]);
        }
        c
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn byte_quantities_read_well_in_tables() {
        assert_eq!(readable_bytes("24683652Ki"), "23.5Gi");
        assert_eq!(readable_bytes("256Gi"), "256Gi");
        assert_eq!(readable_bytes("512"), "512");
        assert_eq!(readable_bytes("<none>"), "<none>");
    }

    use super::*;
    use hypermesh_api::time::now;

    fn meta(name: &str) -> Option<v1::ObjectMeta> {
        Some(v1::ObjectMeta {
            name: name.into(),
            creation_timestamp: Some(now()),
            ..Default::default()
        })
    }

    #[test]
    fn title_cases_enum_names() {
        assert_eq!(title_case("RUNNING"), "Running");
        assert_eq!(title_case("PRIVATE_NETWORK"), "PrivateNetwork");
    }

    #[test]
    fn workload_row_shows_ready_of_desired() {
        let w = Workload {
            metadata: meta("web"),
            spec: Some(v1::WorkloadSpec {
                replicas: 3,
                ..Default::default()
            }),
            status: Some(v1::WorkloadStatus {
                ready_replicas: 2,
                updated_replicas: 3,
                available_replicas: 2,
                ..Default::default()
            }),
        };
        assert_eq!(w.cells(false), ["web", "2/3", "3", "2", "0s"]);
        assert_eq!(Workload::headers(true).len(), w.cells(true).len());
    }

    #[test]
    fn node_row_reads_ready_condition_role_and_capacity() {
        let mut node = Node {
            metadata: meta("host-1"),
            spec: Some(v1::NodeSpec {
                unschedulable: true,
                ..Default::default()
            }),
            status: Some(v1::NodeStatus {
                capacity: [("cpu".to_string(), "8".to_string())].into(),
                conditions: vec![Condition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        node.meta_mut()
            .labels
            .insert(ROLE_LABEL.into(), "gpu".into());
        let cells = node.cells(false);
        assert_eq!(
            cells,
            [
                "host-1",
                "Ready,SchedulingDisabled",
                "gpu",
                "0s",
                NONE,
                "8",
                NONE,
                NONE
            ]
        );
        assert_eq!(Node::headers(true).len(), node.cells(true).len());
    }

    #[test]
    fn every_kind_has_as_many_cells_as_headers() {
        fn check<K: Columns>() {
            let obj = K::default();
            for wide in [false, true] {
                assert_eq!(K::headers(wide).len(), obj.cells(wide).len(), "{}", K::KIND);
            }
        }
        check::<Namespace>();
        check::<Node>();
        check::<Asset>();
        check::<Secret>();
        check::<Route>();
        check::<Workload>();
        check::<Instance>();
        check::<Lease>();
        check::<Event>();
    }

    #[test]
    fn events_name_their_object() {
        let e = Event {
            metadata: meta("web.1"),
            spec: Some(v1::EventSpec {
                involved_object: Some(v1::ObjectReference {
                    kind: "Workload".into(),
                    name: "web".into(),
                    ..Default::default()
                }),
                reason: "ScalingUp".into(),
                r#type: "Normal".into(),
                message: "created web-abc".into(),
                ..Default::default()
            }),
            status: None,
        };
        assert_eq!(
            e.cells(false),
            [
                "0s",
                "Normal",
                "ScalingUp",
                "workload/web",
                "created web-abc"
            ]
        );
    }
}
