//! Per-kind admission hooks beyond field validation: defaults set on create,
//! fields that may not change on update, and what deletion does first.

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1;
use hypermesh_api::validation::Validate;
use prost::Message;
use tonic::Status;

use crate::object::StoredObject;

/// The finalizer a Namespace carries while its contents are deleted.
pub const NAMESPACE_FINALIZER: &str = "hypermesh.io/namespace";

/// Kind-specific admission behaviour; the defaults do nothing.
pub trait Admission: Validate {
    /// Sets server-side defaults on a new object.
    fn on_create(&mut self) {}

    /// Rejects changes to fields that are fixed once set.
    fn check_update(&self, _old: &Self) -> Result<(), Status> {
        Ok(())
    }

    /// Changes the object when deletion is requested, before finalizers are looked at.
    fn on_delete(_object: &mut StoredObject) {}

    /// GPU requests with their field paths, for the sharing check.
    fn gpu_requests(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The object as an Asset, for proof admission (`crate::proofs`).
    fn as_asset(&self) -> Option<&v1::Asset> {
        None
    }

    /// The object as a Node, for identity checks and Byzantine detection.
    fn as_node(&self) -> Option<&v1::Node> {
        None
    }

    /// The object as a mutable Node.
    fn as_node_mut(&mut self) -> Option<&mut v1::Node> {
        None
    }
}

fn container_gpus(path: &str, containers: &[v1::Container]) -> Vec<(String, String)> {
    containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let gpu = c.resources.as_ref()?.gpu.clone();
            (!gpu.is_empty()).then(|| (format!("{path}.containers[{i}].resources.gpu"), gpu))
        })
        .collect()
}

/// Rejects fractional GPU requests unless some GPU asset allows sharing, and
/// fractions above one GPU always (a request is whole GPUs or part of one).
pub async fn check_gpu_sharing(
    store: &dyn crate::store::Store,
    requests: &[(String, String)],
) -> Result<(), Status> {
    use hypermesh_api::quantity::Quantity;
    let mut fractional = None;
    for (path, value) in requests {
        let Ok(q) = value.parse::<Quantity>() else {
            continue;
        };
        if q.is_whole() {
            continue;
        }
        if q.millis() > 1000 {
            return Err(status(
                Reason::FieldInvalid,
                format!(
                    "{path}: {value:?} is more than one GPU but not a whole number; ask for whole GPUs or a fraction of one"
                ),
            ));
        }
        fractional = Some((path.clone(), value.clone()));
    }
    let Some((path, value)) = fractional else {
        return Ok(());
    };
    let page = store
        .list("/assets/", None, 0, 0)
        .await
        .map_err(|e| crate::object::store_status(e, "assets"))?;
    let shareable = page.items.iter().any(|kv| {
        v1::Asset::decode(kv.value.as_slice())
            .ok()
            .and_then(|a| a.spec)
            .is_some_and(|s| {
                s.r#type == v1::AssetType::Gpu as i32 && s.sharing.is_some_and(|sh| sh.allowed)
            })
    });
    if !shareable {
        return Err(status(
            Reason::FieldInvalid,
            format!(
                "{path}: fractional GPU {value:?} needs a GPU asset that allows sharing, and no GPU asset in the cluster does; ask for a whole GPU"
            ),
        ));
    }
    Ok(())
}

fn immutable(field: &str, old: &str, new: &str) -> Result<(), Status> {
    if old != new {
        return Err(status(
            Reason::FieldImmutable,
            format!("{field}: cannot change from {old:?} to {new:?} (field is immutable)"),
        ));
    }
    Ok(())
}

impl Admission for v1::Namespace {
    fn on_create(&mut self) {
        self.status = Some(v1::NamespaceStatus {
            phase: v1::NamespacePhase::Active as i32,
        });
    }

    fn on_delete(object: &mut StoredObject) {
        let meta = object.metadata.get_or_insert_with(Default::default);
        if !meta.finalizers.iter().any(|f| f == NAMESPACE_FINALIZER) {
            meta.finalizers.push(NAMESPACE_FINALIZER.to_string());
        }
        object.status = Some(
            v1::NamespaceStatus {
                phase: v1::NamespacePhase::Terminating as i32,
            }
            .encode_to_vec(),
        );
    }
}

impl Admission for v1::Node {
    fn as_node(&self) -> Option<&v1::Node> {
        Some(self)
    }

    fn as_node_mut(&mut self) -> Option<&mut v1::Node> {
        Some(self)
    }
}

impl Admission for v1::Asset {
    fn as_asset(&self) -> Option<&v1::Asset> {
        Some(self)
    }

    fn check_update(&self, old: &Self) -> Result<(), Status> {
        let node = |a: &v1::Asset| {
            a.spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default()
        };
        immutable("spec.nodeName", &node(old), &node(self))
    }
}

impl Admission for v1::Workload {
    fn gpu_requests(&self) -> Vec<(String, String)> {
        let containers = self
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(|t| t.containers.as_slice())
            .unwrap_or_default();
        container_gpus("spec.template", containers)
    }

    fn check_update(&self, old: &Self) -> Result<(), Status> {
        let selector = |w: &v1::Workload| {
            w.spec
                .as_ref()
                .map(|s| format!("{:?}", s.selector))
                .unwrap_or_default()
        };
        immutable("spec.selector", &selector(old), &selector(self))
    }
}

impl Admission for v1::Instance {
    fn gpu_requests(&self) -> Vec<(String, String)> {
        container_gpus(
            "spec",
            self.spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default(),
        )
    }

    fn on_create(&mut self) {
        let status = self.status.get_or_insert_with(Default::default);
        if status.phase == v1::InstancePhase::Unspecified as i32 {
            status.phase = v1::InstancePhase::Pending as i32;
        }
    }

    fn check_update(&self, old: &Self) -> Result<(), Status> {
        let node = |i: &v1::Instance| {
            i.spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default()
        };
        if node(old).is_empty() {
            return Ok(());
        }
        let assets = |i: &v1::Instance| {
            i.spec
                .as_ref()
                .map(|s| s.assigned_assets.join(","))
                .unwrap_or_default()
        };
        immutable("spec.nodeName", &node(old), &node(self))?;
        immutable("spec.assignedAssets", &assets(old), &assets(self))
    }
}

impl Admission for v1::Route {}
impl Admission for v1::Secret {}
impl Admission for v1::Lease {}
impl Admission for v1::Event {}
