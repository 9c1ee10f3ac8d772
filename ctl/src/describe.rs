//! `hmctl describe`: one object in readable form, as kubectl's — metadata, a summary
//! of the kind (an Instance's node and state, a Workload's replicas), spec and status
//! as labelled sections ([`fields`]), conditions as a table, what runs on a node
//! ([`node`]), and the Events recorded about it.

mod fields;
mod node;

use std::fmt::Write as _;

use anyhow::Result;
use hypermesh_api::time::age;
use hypermesh_api::v1::{Event, ListRequest, ObjectMeta};
use hypermesh_api::{Api, Resource};
use pbjson_types::Timestamp;
use serde_json::Value;
use tonic::transport::Channel;

use crate::cli::DescribeArgs;
use crate::columns::{NONE, event_last_seen, instance_status, or_none};
use crate::error::ServerError;
use crate::kinds::{Kind, KindVisitor, dispatch, request_namespace, resolve_with_names};
use crate::listing::no_resources_message;
use crate::output::print;
use crate::table::Table;
use crate::{Context, Exit};

/// Width of the `Name:` label column.
const LABEL_WIDTH: usize = 18;

/// Runs `hmctl describe`.
pub async fn run(ctx: &Context, args: &DescribeArgs) -> Result<Exit> {
    let (info, names) = resolve_with_names(&args.kind, &args.names)?;
    let all = args.all_namespaces && names.is_empty();
    let namespace = request_namespace(info, ctx.namespace.as_deref(), all);
    let channel = ctx.connect().await?;
    let visitor = DescribeVisitor {
        channel,
        args,
        names,
        namespace,
    };
    dispatch(info.kind, visitor).await?
}

struct DescribeVisitor<'a> {
    channel: Channel,
    args: &'a DescribeArgs,
    names: Vec<String>,
    namespace: String,
}

impl KindVisitor for DescribeVisitor<'_> {
    type Output = Result<Exit>;

    async fn visit<K: Kind>(self) -> Result<Exit> {
        let api = Api::<K>::new(self.channel.clone());
        let events = Api::<Event>::new(self.channel.clone());
        let mut objects = Vec::new();
        let mut exit = Exit::Success;
        if self.names.is_empty() {
            let request = ListRequest {
                namespace: self.namespace.clone(),
                label_selector: self.args.selector.clone().unwrap_or_default(),
                ..Default::default()
            };
            let (items, _) = api
                .list_all(request)
                .await
                .map_err(|s| ServerError::from_status(&s))?;
            if items.is_empty() {
                eprintln!("{}", no_resources_message::<K>(&self.namespace));
            }
            objects = items;
        } else {
            for name in &self.names {
                match api.get(&self.namespace, name).await {
                    Ok(obj) => objects.push(obj),
                    Err(status) => {
                        eprintln!("{}", ServerError::for_object(&status, K::PLURAL, name));
                        exit = Exit::Failure;
                    }
                }
            }
        }
        for (i, obj) in objects.iter().enumerate() {
            let related = events_about(&events, obj).await;
            let extra = match obj.clone().into_dyn() {
                hypermesh_api::DynObject::Node(n) => {
                    let instances = Api::<hypermesh_api::v1::Instance>::new(self.channel.clone());
                    let on_node = node::instances_on(&instances, &n.meta().name).await;
                    node::sections(&n, &on_node)
                }
                _ => String::new(),
            };
            let mut text = describe(obj, &extra, &related);
            if i + 1 < objects.len() {
                text.push('\n');
            }
            print(&text)?;
        }
        Ok(exit)
    }
}

/// Events whose involved object is `obj`, oldest first; an error message when they
/// cannot be listed.
async fn events_about<K: Resource>(api: &Api<Event>, obj: &K) -> Result<Vec<Event>, String> {
    let meta = obj.meta();
    let request = ListRequest {
        // Events about cluster-scoped objects may be recorded in any namespace.
        namespace: meta.namespace.clone(),
        field_selector: format!(
            "spec.involvedObject.name={},spec.involvedObject.kind={}",
            meta.name,
            K::KIND
        ),
        ..Default::default()
    };
    let (mut events, _) = api
        .list_all(request)
        .await
        .map_err(|s| ServerError::from_status(&s).to_string())?;
    events.sort_by_key(|e| {
        let spec = e.spec.as_ref();
        spec.and_then(|s| s.last_timestamp.or(s.first_timestamp))
            .or(e.meta().creation_timestamp)
            .map(|t| (t.seconds, t.nanos))
    });
    Ok(events)
}

/// The full description of `obj`; `extra` (what runs on a node) goes before the
/// events.
pub fn describe<K: Kind>(obj: &K, extra: &str, events: &Result<Vec<Event>, String>) -> String {
    let mut out = String::new();
    describe_meta(&mut out, obj.meta(), K::NAMESPACED);
    let dyn_obj = obj.clone().into_dyn();
    summary(&mut out, &dyn_obj);
    let mut json = dyn_obj.to_json();
    if let hypermesh_api::DynObject::Node(node) = &dyn_obj {
        shorten_node_key(&mut json, node);
    }
    fields::section(&mut out, "Spec", json.get("spec"));
    let mut status = json.get("status").cloned();
    if let Some(Value::Object(fields)) = status.as_mut() {
        // Conditions get their own table below.
        fields.remove("conditions");
    }
    fields::section(&mut out, "Status", status.as_ref());
    describe_conditions(&mut out, obj.conditions());
    out.push_str(extra);
    describe_events(&mut out, events);
    out
}

/// The lines kubectl puts first for its workhorse kinds: where an Instance runs and
/// its state as `get` shows it; a Workload's replica counts.
fn summary(out: &mut String, obj: &hypermesh_api::DynObject) {
    match obj {
        hypermesh_api::DynObject::Instance(i) => {
            let spec = i.spec.clone().unwrap_or_default();
            field(out, "Node", &or_none(spec.node_name));
            field(out, "State", &instance_status::status(i));
            field(out, "Phase", &instance_status::phase(i));
            field(out, "Ready", &instance_status::ready(i));
            let address = i.status.as_ref().map(|s| s.address.clone());
            field(out, "Address", &or_none(address.unwrap_or_default()));
        }
        hypermesh_api::DynObject::Workload(w) => {
            let desired = w.spec.as_ref().map_or(0, |s| s.replicas);
            let s = w.status.clone().unwrap_or_default();
            field(
                out,
                "Replicas",
                &format!(
                    "{desired} desired | {} updated | {} total | {} available | {} unavailable",
                    s.updated_replicas,
                    s.replicas,
                    s.available_replicas,
                    s.replicas.saturating_sub(s.available_replicas)
                ),
            );
        }
        _ => {}
    }
}

fn field(out: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    let _ = writeln!(out, "{label:<LABEL_WIDTH$}{value}");
}

/// `key=value` lines aligned under the first.
fn map_field(out: &mut String, label: &str, map: &std::collections::BTreeMap<String, String>) {
    if map.is_empty() {
        field(out, label, NONE);
        return;
    }
    for (i, (k, v)) in map.iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        if label.is_empty() {
            let _ = writeln!(out, "{:LABEL_WIDTH$}{k}={v}", "");
        } else {
            field(out, label, &format!("{k}={v}"));
        }
    }
}

/// `2025-01-02T03:04:05Z (5m ago)`.
pub fn timestamp_text(t: Option<&Timestamp>) -> String {
    let Some(t) = t else {
        return NONE.to_string();
    };
    let text = match serde_json::to_value(t) {
        Ok(Value::String(s)) => s,
        _ => format!("{}s since the epoch", t.seconds),
    };
    format!("{text} ({} ago)", age(Some(t)))
}

fn describe_meta(out: &mut String, meta: &ObjectMeta, namespaced: bool) {
    field(out, "Name", &meta.name);
    if namespaced {
        field(out, "Namespace", &meta.namespace);
    }
    map_field(out, "Labels", &meta.labels);
    map_field(out, "Annotations", &meta.annotations);
    field(
        out,
        "Created",
        &timestamp_text(meta.creation_timestamp.as_ref()),
    );
    field(out, "UID", &or_none(meta.uid.clone()));
    field(out, "ResourceVersion", &meta.resource_version.to_string());
    field(out, "Generation", &meta.generation.to_string());
    if !meta.finalizers.is_empty() {
        field(out, "Finalizers", &meta.finalizers.join(", "));
    }
    if !meta.owner_references.is_empty() {
        let owners = meta
            .owner_references
            .iter()
            .map(|o| {
                let controller = if o.controller { " (controller)" } else { "" };
                format!("{}/{}{controller}", o.kind, o.name)
            })
            .collect::<Vec<_>>()
            .join(", ");
        field(out, "Owners", &owners);
    }
    if let Some(t) = meta.deletion_timestamp.as_ref() {
        field(out, "Deleting since", &timestamp_text(Some(t)));
    }
}

/// Replaces a Node's FALCON public key (1,793 bytes, some 2,400 characters of base64)
/// with its fingerprint, `sha256:<first 16 hex digits>…`; `-o yaml` keeps the key.
fn shorten_node_key(json: &mut Value, node: &hypermesh_api::v1::Node) {
    use sha2::{Digest, Sha256};
    let Some(key) = node
        .spec
        .as_ref()
        .and_then(|s| s.identity.as_ref())
        .map(|i| &i.public_key)
        .filter(|k| !k.is_empty())
    else {
        return;
    };
    let hex: String = Sha256::digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(slot) = json.pointer_mut("/spec/identity/publicKey") {
        *slot = Value::String(format!(
            "sha256:{}… ({} bytes; hmctl get node -o yaml shows the key)",
            &hex[..16],
            key.len()
        ));
    }
}

fn describe_conditions(out: &mut String, conditions: &[hypermesh_api::v1::Condition]) {
    if conditions.is_empty() {
        field(out, "Conditions", NONE);
        return;
    }
    let _ = writeln!(out, "Conditions:");
    let mut table = Table::new(["TYPE", "STATUS", "REASON", "MESSAGE", "LAST TRANSITION"]);
    for c in conditions {
        table.push(vec![
            c.r#type.clone(),
            c.status.clone(),
            or_none(c.reason.clone()),
            or_none(c.message.replace('\n', " ")),
            c.last_transition_time
                .as_ref()
                .map_or_else(|| NONE.to_string(), |t| format!("{} ago", age(Some(t)))),
        ]);
    }
    out.push_str(&table.render_indented(2));
}

fn describe_events(out: &mut String, events: &Result<Vec<Event>, String>) {
    match events {
        Err(message) => field(out, "Events", &format!("<cannot list: {message}>")),
        Ok(events) if events.is_empty() => field(out, "Events", NONE),
        Ok(events) => {
            let _ = writeln!(out, "Events:");
            let mut table = Table::new(["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]);
            for e in events {
                let spec = e.spec.clone().unwrap_or_default();
                let seen = if spec.count > 1 {
                    format!("{} (x{})", event_last_seen(e), spec.count)
                } else {
                    event_last_seen(e)
                };
                table.push(vec![
                    or_none(spec.r#type),
                    or_none(spec.reason),
                    seen,
                    or_none(spec.source),
                    spec.message.replace('\n', " "),
                ]);
            }
            out.push_str(&table.render_indented(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::time::now;
    use hypermesh_api::v1::{self, Workload};

    fn workload() -> Workload {
        Workload {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u-1".into(),
                resource_version: 12,
                generation: 2,
                labels: [("app".into(), "web".into()), ("tier".into(), "fe".into())].into(),
                creation_timestamp: Some(now()),
                ..Default::default()
            }),
            spec: Some(v1::WorkloadSpec {
                replicas: 3,
                ..Default::default()
            }),
            status: Some(v1::WorkloadStatus {
                ready_replicas: 1,
                conditions: vec![v1::Condition {
                    r#type: "Available".into(),
                    status: "False".into(),
                    reason: "MinimumReplicasUnavailable".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn describes_metadata_spec_status_conditions_and_events() {
        let text = describe(&workload(), "", &Ok(Vec::new()));
        assert!(
            text.starts_with("Name:             web\nNamespace:        default\n"),
            "{text}"
        );
        assert!(
            text.contains("Labels:           app=web\n                  tier=fe\n"),
            "{text}"
        );
        assert!(text.contains("Annotations:      <none>\n"), "{text}");
        assert!(text.contains("ResourceVersion:  12\n"), "{text}");
        assert!(
            text.contains(
                "Replicas:         3 desired | 0 updated | 0 total | 0 available | 0 unavailable\n"
            ),
            "{text}"
        );
        assert!(text.contains("Spec:\n  Replicas:  3\n"), "{text}");
        assert!(text.contains("Status:\n  Ready Replicas:  1\n"), "{text}");
        assert!(!text.contains("conditions:"), "{text}");
        assert!(
            text.contains("Conditions:\n  TYPE        STATUS   REASON"),
            "{text}"
        );
        assert!(text.ends_with("Events:           <none>\n"), "{text}");
    }

    #[test]
    fn lists_events() {
        let event = Event {
            metadata: Some(ObjectMeta {
                name: "web.1".into(),
                creation_timestamp: Some(now()),
                ..Default::default()
            }),
            spec: Some(v1::EventSpec {
                reason: "ScalingUp".into(),
                r#type: "Normal".into(),
                source: "workload-controller".into(),
                message: "created web-x".into(),
                ..Default::default()
            }),
            status: None,
        };
        let text = describe(&workload(), "", &Ok(vec![event]));
        assert!(
            text.contains("Events:\n  TYPE     REASON      AGE   FROM"),
            "{text}"
        );
        assert!(text.contains("ScalingUp"), "{text}");
        let failed = describe(&workload(), "", &Err("boom".into()));
        assert!(
            failed.contains("Events:           <cannot list: boom>"),
            "{failed}"
        );
    }
}
