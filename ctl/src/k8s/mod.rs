//! Kubernetes manifests in `hmctl apply -f` / `hmctl convert -f`: `apps/v1 Deployment`,
//! `v1 Pod`, `v1 Service`, `v1 Secret` and `v1 Namespace`, parsed with the Kubernetes
//! API types (k8s-openapi), become a Workload, Instance, Route, Secret and Namespace.
//! Every field HyperMesh cannot honour is named in a warning (`path: what happens
//! instead`); other Kubernetes kinds are errors. The pod spec's mapping is in [`pod`].

mod pod;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use hypermesh_api::DynObject;
use hypermesh_api::v1;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde_json::Value;

/// The Kubernetes kinds converted, as `apiVersion kind`.
pub const SUPPORTED: &str = "apps/v1 Deployment, v1 Pod, v1 Service, v1 Secret, v1 Namespace";

/// One converted document: the HyperMesh object and what of the original it drops or
/// changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub object: DynObject,
    pub warnings: Vec<String>,
}

/// Whether `doc` is a Kubernetes manifest rather than a HyperMesh one: its apiVersion
/// is `v1` or `GROUP/VERSION` of any group but `hypermesh.io`.
pub fn is_kubernetes(doc: &Value) -> bool {
    let Some(version) = doc.get("apiVersion").and_then(Value::as_str) else {
        return false;
    };
    if version == "v1" {
        return true;
    }
    match version.split_once('/') {
        Some((group, v)) => group != "hypermesh.io" && !group.is_empty() && v.starts_with('v'),
        None => false,
    }
}

/// Converts one Kubernetes document. Errors are `(field path, message)`.
pub fn convert(doc: Value) -> Result<Converted, (String, String)> {
    let version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = doc["kind"].as_str().unwrap_or_default().to_string();
    let mut w = Warnings::default();
    let object = match (version.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment") => DynObject::Workload(deployment(parse(doc)?, &mut w)?),
        ("v1", "Pod") => DynObject::Instance(pod_object(parse(doc)?, &mut w)?),
        ("v1", "Service") => DynObject::Route(service(parse(doc)?, &mut w)?),
        ("v1", "Secret") => DynObject::Secret(secret(parse(doc)?, &mut w)?),
        ("v1", "Namespace") => DynObject::Namespace(namespace(parse(doc)?, &mut w)?),
        _ => {
            let what = if kind.is_empty() {
                "a document without a kind".to_string()
            } else {
                format!("Kubernetes kind {kind:?} of apiVersion {version:?}")
            };
            return Err((
                "kind".into(),
                format!("{what} is not supported: hmctl converts {SUPPORTED}"),
            ));
        }
    };
    Ok(Converted {
        object,
        warnings: w.0,
    })
}

/// A Kubernetes object from its JSON, errors naming the field.
fn parse<T: serde::de::DeserializeOwned>(doc: Value) -> Result<T, (String, String)> {
    hypermesh_api::manifest::deserialize_with_path(doc).map_err(|e| (e.path, e.message))
}

/// Warnings about one document, each `path: message`.
#[derive(Debug, Default)]
pub(crate) struct Warnings(Vec<String>);

impl Warnings {
    pub(crate) fn add(&mut self, path: &str, message: impl std::fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }

    /// Warns about every field `value` sets that is not in `honoured`.
    pub(crate) fn unhonoured<T: Serialize>(&mut self, path: &str, value: &T, honoured: &[&str]) {
        let Ok(Value::Object(fields)) = serde_json::to_value(value) else {
            return;
        };
        for (key, v) in fields {
            let empty = match &v {
                Value::Null => true,
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            if !empty && !honoured.contains(&key.as_str()) {
                self.add(
                    &format!("{path}.{key}"),
                    "not supported by HyperMesh; ignored",
                );
            }
        }
    }
}

/// Name, namespace, labels and annotations; the rest is warned about.
fn meta(m: ObjectMeta, w: &mut Warnings) -> Result<v1::ObjectMeta, (String, String)> {
    w.unhonoured(
        "metadata",
        &m,
        &["name", "namespace", "labels", "annotations"],
    );
    let name = m.name.unwrap_or_default();
    if name.is_empty() {
        return Err((
            "metadata.name".into(),
            "required (generateName is not supported)".into(),
        ));
    }
    Ok(v1::ObjectMeta {
        name,
        namespace: m.namespace.unwrap_or_default(),
        labels: m.labels.unwrap_or_default(),
        annotations: m.annotations.unwrap_or_default(),
        ..Default::default()
    })
}

/// A label selector's `matchLabels`; `matchExpressions` cannot be expressed.
pub(crate) fn match_labels(
    s: Option<LabelSelector>,
    path: &str,
    w: &mut Warnings,
) -> BTreeMap<String, String> {
    let s = s.unwrap_or_default();
    if s.match_expressions.as_ref().is_some_and(|e| !e.is_empty()) {
        w.add(
            &format!("{path}.matchExpressions"),
            "not supported (HyperMesh selectors are label equalities); ignored",
        );
    }
    s.match_labels.unwrap_or_default()
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn deployment(d: Deployment, w: &mut Warnings) -> Result<v1::Workload, (String, String)> {
    let metadata = meta(d.metadata, w)?;
    let spec = d.spec.unwrap_or_default();
    w.unhonoured(
        "spec",
        &spec,
        &[
            "replicas",
            "selector",
            "template",
            "strategy",
            "revisionHistoryLimit",
            "progressDeadlineSeconds",
        ],
    );
    let selector = match_labels(Some(spec.selector.clone()), "spec.selector", w);
    let strategy = spec.strategy.as_ref().map(|s| {
        let rolling = s.rolling_update.clone().unwrap_or_default();
        v1::UpdateStrategy {
            r#type: match s.type_.as_deref() {
                Some("Recreate") => v1::UpdateStrategyType::Recreate as i32,
                _ => v1::UpdateStrategyType::RollingUpdate as i32,
            },
            max_surge: rolling
                .max_surge
                .as_ref()
                .map(int_or_string)
                .unwrap_or_default(),
            max_unavailable: rolling
                .max_unavailable
                .as_ref()
                .map(int_or_string)
                .unwrap_or_default(),
        }
    });
    let template = pod::template(spec.template, "spec.template", w)?;
    Ok(v1::Workload {
        metadata: Some(metadata),
        spec: Some(v1::WorkloadSpec {
            replicas: spec.replicas.unwrap_or(1),
            selector,
            template: Some(template),
            strategy,
            revision_history_limit: spec.revision_history_limit.unwrap_or_default(),
            progress_deadline_seconds: spec.progress_deadline_seconds.unwrap_or_default(),
            ..Default::default()
        }),
        status: None,
    })
}

fn pod_object(p: core::Pod, w: &mut Warnings) -> Result<v1::Instance, (String, String)> {
    let metadata = meta(p.metadata, w)?;
    let t = pod::template(
        core::PodTemplateSpec {
            metadata: None,
            spec: p.spec,
        },
        "",
        w,
    )?;
    Ok(v1::Instance {
        metadata: Some(metadata),
        spec: Some(v1::InstanceSpec {
            containers: t.containers,
            volumes: t.volumes,
            node_selector: t.node_selector,
            affinity: t.affinity,
            tolerations: t.tolerations,
            privacy: t.privacy,
            restart_policy: t.restart_policy,
            priority: t.priority,
            termination_grace_period_seconds: t.termination_grace_period_seconds,
            ..Default::default()
        }),
        status: None,
    })
}

fn service(s: core::Service, w: &mut Warnings) -> Result<v1::Route, (String, String)> {
    let metadata = meta(s.metadata, w)?;
    let spec = s.spec.unwrap_or_default();
    w.unhonoured("spec", &spec, &["selector", "ports", "type"]);
    if let Some(t) = spec.type_.as_deref().filter(|t| *t != "ClusterIP") {
        w.add(
            "spec.type",
            format!(
                "{t} is not supported: the Route gets a global address, reachable through hm-proxy"
            ),
        );
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.unwrap_or_default().into_iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        w.unhonoured(&path, &p, &["name", "port", "targetPort", "protocol"]);
        let port = u32::try_from(p.port)
            .map_err(|_| (format!("{path}.port"), format!("{} is not a port", p.port)))?;
        let target_port = match &p.target_port {
            None => 0,
            Some(IntOrString::Int(t)) => u32::try_from(*t)
                .map_err(|_| (format!("{path}.targetPort"), format!("{t} is not a port")))?,
            Some(IntOrString::String(name)) => {
                w.add(
                    &format!("{path}.targetPort"),
                    format!("named port {name:?} is not supported; using port {port}"),
                );
                0
            }
        };
        ports.push(v1::RoutePort {
            name: p.name.unwrap_or_default(),
            port,
            target_port,
            protocol: pod::protocol(p.protocol.as_deref(), &format!("{path}.protocol"), w)?,
        });
    }
    Ok(v1::Route {
        metadata: Some(metadata),
        spec: Some(v1::RouteSpec {
            selector: spec.selector.unwrap_or_default(),
            ports,
        }),
        status: None,
    })
}

fn secret(s: core::Secret, w: &mut Warnings) -> Result<v1::Secret, (String, String)> {
    let metadata = meta(s.metadata, w)?;
    if s.immutable == Some(true) {
        w.add("immutable", "not supported; the Secret stays mutable");
    }
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // As in Kubernetes, stringData wins over data for the same key.
    for (k, v) in s.string_data.unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    Ok(v1::Secret {
        metadata: Some(metadata),
        spec: Some(v1::SecretSpec {
            r#type: s.type_.unwrap_or_default(),
            data,
            ..Default::default()
        }),
        status: None,
    })
}

fn namespace(n: core::Namespace, w: &mut Warnings) -> Result<v1::Namespace, (String, String)> {
    if n.spec.as_ref().is_some_and(|s| s.finalizers.is_some()) {
        w.add("spec.finalizers", "not supported; ignored");
    }
    Ok(v1::Namespace {
        metadata: Some(meta(n.metadata, w)?),
        spec: Some(v1::NamespaceSpec {}),
        status: None,
    })
}
