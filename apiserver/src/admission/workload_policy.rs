//! Workload policy: what an Instance (or a Workload's template) may ask of the host
//! it lands on, by the namespace's policy level (like Kubernetes Pod Security):
//!
//! - `baseline` (every namespace unless an admin says otherwise): no `hostPath`
//!   volumes, and no container `securityContext` asking for `privileged`,
//!   `hostNetwork`, `hostPID` or `hostUsers` (root without a user namespace); the
//!   containers run with the default seccomp profile and capability set, in a user
//!   namespace (the agent's side).
//! - `privileged`: the namespace carries the label `hypermesh.io/policy=privileged`,
//!   which only an admin may set or change; all of the above are allowed there.
//!
//! And everywhere: `spec.nodeName` is set by the scheduler through `Bind`, never by a
//! Create or Update (an admin may still pin an Instance by hand).

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1;
use prost::Message;
use tonic::Status;

use super::{AdmissionRequest, Admit, Findings, ObjectRef, Operation};
use crate::object::store_status;
use crate::store::Store;

/// The namespace label naming its policy level.
pub const POLICY_LABEL: &str = "hypermesh.io/policy";
/// The level that allows host access.
pub const PRIVILEGED: &str = "privileged";
/// The default level.
pub const BASELINE: &str = "baseline";

/// The plugin.
#[derive(Debug)]
pub struct WorkloadPolicy;

/// What a pod-like spec asks of the host, with the field paths.
fn host_access(path: &str, volumes: &[v1::Volume], containers: &[v1::Container]) -> Vec<String> {
    let mut asks: Vec<String> = volumes
        .iter()
        .enumerate()
        .filter(|(_, v)| matches!(v.source, Some(v1::volume::Source::HostPath(_))))
        .map(|(i, v)| format!("{path}.volumes[{i}].hostPath ({:?})", v.name))
        .collect();
    for (i, c) in containers.iter().enumerate() {
        let Some(sc) = c.security_context.as_ref() else {
            continue;
        };
        for (set, field) in [
            (sc.privileged, "privileged"),
            (sc.host_network, "hostNetwork"),
            (sc.host_pid, "hostPID"),
            (sc.host_users, "hostUsers"),
        ] {
            if set {
                asks.push(format!("{path}.containers[{i}].securityContext.{field}"));
            }
        }
    }
    asks
}

async fn namespace_level(store: &dyn Store, namespace: &str) -> Result<String, Status> {
    let key = format!("/namespaces/{namespace}");
    let kv = store.get(&key).await.map_err(|e| store_status(e, &key))?;
    Ok(kv
        .and_then(|kv| v1::Namespace::decode(kv.value.as_slice()).ok())
        .and_then(|ns| ns.metadata)
        .and_then(|m| m.labels.get(POLICY_LABEL).cloned())
        .unwrap_or_else(|| BASELINE.to_string()))
}

fn policy_label(ns: &v1::Namespace) -> Option<&String> {
    ns.metadata
        .as_ref()
        .and_then(|m| m.labels.get(POLICY_LABEL))
}

#[tonic::async_trait]
impl Admit for WorkloadPolicy {
    fn name(&self) -> &'static str {
        "WorkloadPolicy"
    }

    async fn validate(
        &self,
        request: &AdmissionRequest<'_>,
        new: Option<ObjectRef<'_>>,
        _findings: &mut Findings,
    ) -> Result<(), Status> {
        let operation = request.access.operation;
        if !matches!(operation, Operation::Create | Operation::Update) {
            return Ok(());
        }
        let caller = request.access.caller;
        let (asks, namespace) = match new {
            Some(ObjectRef::Namespace(ns)) => {
                let old = match request.old {
                    Some(ObjectRef::Namespace(old)) => policy_label(old),
                    _ => None,
                };
                if policy_label(ns) != old && !caller.is_admin() {
                    return Err(status(
                        Reason::Forbidden,
                        format!(
                            "metadata.labels[{POLICY_LABEL}]: only an admin sets a namespace's workload policy ({} tried)",
                            caller.describe()
                        ),
                    ));
                }
                return Ok(());
            }
            Some(ObjectRef::Instance(instance)) => {
                let spec = instance.spec.clone().unwrap_or_default();
                let was = match request.old {
                    Some(ObjectRef::Instance(old)) => old
                        .spec
                        .as_ref()
                        .map(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                if !spec.node_name.is_empty() && spec.node_name != was && !caller.is_admin() {
                    return Err(status(
                        Reason::PolicyDenied,
                        format!(
                            "spec.nodeName: set by the scheduler when it binds the Instance; {} may not set it (leave it empty; use nodeSelector or affinity to choose nodes)",
                            caller.describe()
                        ),
                    ));
                }
                (
                    host_access("spec", &spec.volumes, &spec.containers),
                    request.access.namespace.to_string(),
                )
            }
            Some(ObjectRef::Workload(workload)) => {
                let template = workload
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.clone())
                    .unwrap_or_default();
                (
                    host_access("spec.template", &template.volumes, &template.containers),
                    request.access.namespace.to_string(),
                )
            }
            _ => return Ok(()),
        };
        if asks.is_empty() {
            return Ok(());
        }
        let level = namespace_level(request.store, &namespace).await?;
        if level == PRIVILEGED {
            return Ok(());
        }
        Err(status(
            Reason::PolicyDenied,
            format!(
                "{}: host access is not allowed in namespace {namespace:?} (policy {level:?}); an admin allows it by labelling the namespace {POLICY_LABEL}={PRIVILEGED} (hmctl apply a Namespace manifest with that label)",
                asks.join(", ")
            ),
        ))
    }
}
