//! The `helm` binary for the chart test: where it is (`$HELM`, else `PATH`), and
//! `helm lint` / `helm template` of `charts/hypermesh` with the rendered documents
//! parsed into Kubernetes API types (k8s-openapi), strictly: an object whose fields do
//! not survive a round trip through its type (a misspelt or misplaced field) is an error.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::Value;

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    crate::containerd::workspace_root().join("charts/hypermesh")
}

/// The helm binary, or `None` (with how to install it printed) off CI. Under
/// `CI=true` a missing helm panics: `.ci/run` installs it with scripts/install-helm.sh.
pub fn helm() -> Option<PathBuf> {
    let found = std::env::var_os("HELM")
        .map(PathBuf::from)
        .or_else(|| find_in_path("helm"));
    if found.is_none() {
        let ci = matches!(std::env::var("CI").as_deref(), Ok("true" | "1"));
        assert!(
            !ci,
            "helm not found ($HELM unset, no helm on PATH): CI installs it with \
             scripts/install-helm.sh before the tests"
        );
        eprintln!(
            "SKIPPED: helm not found; install it with `bash scripts/install-helm.sh` \
             (or set HELM=/path/to/helm)"
        );
    }
    found
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What a helm command printed.
#[derive(Debug)]
pub struct HelmOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `helm ARGS` with a private home (no user config or cache involved).
pub fn run(helm: &Path, args: &[&str]) -> HelmOutput {
    let home = tempfile::tempdir().expect("helm home");
    let out = Command::new(helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    HelmOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `helm template hm charts/hypermesh --namespace hypermesh EXTRA…`.
pub fn template(helm: &Path, extra: &[&str]) -> HelmOutput {
    let chart = chart_dir();
    let chart = chart.to_str().expect("utf-8 path");
    let mut args = vec!["template", "hm", chart, "--namespace", "hypermesh"];
    args.extend_from_slice(extra);
    run(helm, &args)
}

/// One rendered object, parsed into its Kubernetes type.
#[derive(Debug, Clone)]
pub enum Object {
    StatefulSet(Box<StatefulSet>),
    Deployment(Box<Deployment>),
    DaemonSet(Box<DaemonSet>),
    Service(Box<Service>),
    Secret(Box<Secret>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    NetworkPolicy(Box<NetworkPolicy>),
}

/// Parses `helm template` output: every document must be a kind listed in
/// [`Object`] and survive a round trip through its type unchanged.
pub fn parse_rendered(text: &str) -> Result<Vec<Object>, String> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("rendered YAML: {e}"))?;
    let mut objects = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let what = format!("{kind} {name}");
        let object = match kind.as_str() {
            "StatefulSet" => Object::StatefulSet(typed(&doc, &what)?),
            "Deployment" => Object::Deployment(typed(&doc, &what)?),
            "DaemonSet" => Object::DaemonSet(typed(&doc, &what)?),
            "Service" => Object::Service(typed(&doc, &what)?),
            "Secret" => Object::Secret(typed(&doc, &what)?),
            "ServiceAccount" => Object::ServiceAccount(typed(&doc, &what)?),
            "ClusterRole" => Object::ClusterRole(typed(&doc, &what)?),
            "ClusterRoleBinding" => Object::ClusterRoleBinding(typed(&doc, &what)?),
            "NetworkPolicy" => Object::NetworkPolicy(typed(&doc, &what)?),
            other => return Err(format!("{what}: kind {other:?} is not expected")),
        };
        objects.push(object);
    }
    Ok(objects)
}

/// `doc` as `T`, refusing a document that loses or changes a field on the way.
fn typed<T>(doc: &Value, what: &str) -> Result<Box<T>, String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let parsed: T = serde_json::from_value(doc.clone()).map_err(|e| format!("{what}: {e}"))?;
    let back = serde_json::to_value(&parsed).map_err(|e| format!("{what}: {e}"))?;
    match lost(&normalize(doc.clone()), &normalize(back), "") {
        Some(path) => Err(format!(
            "{what}: `{path}` is lost or changed by the Kubernetes type (misspelt or misplaced?)"
        )),
        None => Ok(Box::new(parsed)),
    }
}

/// The path of the first value of `rendered` that `typed` lacks or holds differently
/// (`typed` may add fields, e.g. `apiVersion`/`kind` of an embedded claim template).
fn lost(rendered: &Value, typed: &Value, path: &str) -> Option<String> {
    match (rendered, typed) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(k, v)| {
            let here = format!("{path}.{k}");
            match b.get(k) {
                Some(w) => lost(v, w, &here),
                None => Some(here),
            }
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| lost(v, w, &format!("{path}[{i}]"))),
        (a, b) if a == b => None,
        _ => Some(path.to_string()),
    }
}

/// Drops nulls, empty maps and empty lists, which Kubernetes treats as absent.
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, normalize(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misplaced_field_is_refused_with_its_path() {
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n    - port: 80\n      targetPrt: 8080\n";
        let err = parse_rendered(doc).expect_err("targetPrt is not a field");
        assert!(err.contains("`.spec.ports[0].targetPrt`"), "{err}");
        let ok = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n    - port: 80\n      targetPort: 8080\n";
        assert_eq!(parse_rendered(ok).expect("valid").len(), 1);
    }
}
