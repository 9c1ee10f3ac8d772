//! GPU sharing: a fractional GPU request (`500m`) needs some GPU Asset in the cluster
//! that allows sharing, and a request above one GPU must be whole. Checked when a
//! Workload or Instance is created or its spec changes.

use hypermesh_api::Resource;
use hypermesh_api::quantity::Quantity;
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1;
use prost::Message;
use tonic::Status;

use super::{AdmissionRequest, Admit, Findings, ObjectRef, Operation};
use crate::store::Store;

/// The plugin.
#[derive(Debug)]
pub struct GpuSharing;

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

/// GPU requests with their field paths, when the spec is new or changed.
fn changed_requests(
    old: Option<ObjectRef<'_>>,
    new: ObjectRef<'_>,
) -> Option<Vec<(String, String)>> {
    match (old, new) {
        (Some(ObjectRef::Workload(old)), ObjectRef::Workload(new))
            if old.spec_bytes() == new.spec_bytes() =>
        {
            None
        }
        (Some(ObjectRef::Instance(old)), ObjectRef::Instance(new))
            if old.spec_bytes() == new.spec_bytes() =>
        {
            None
        }
        (_, ObjectRef::Workload(w)) => {
            let containers = w
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .map(|t| t.containers.as_slice())
                .unwrap_or_default();
            Some(container_gpus("spec.template", containers))
        }
        (_, ObjectRef::Instance(i)) => {
            let containers = i
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default();
            Some(container_gpus("spec", containers))
        }
        _ => None,
    }
}

#[tonic::async_trait]
impl Admit for GpuSharing {
    fn name(&self) -> &'static str {
        "GpuSharing"
    }

    async fn validate(
        &self,
        request: &AdmissionRequest<'_>,
        new: Option<ObjectRef<'_>>,
        _findings: &mut Findings,
    ) -> Result<(), Status> {
        if !matches!(
            request.access.operation,
            Operation::Create | Operation::Update
        ) {
            return Ok(());
        }
        let Some(new) = new else { return Ok(()) };
        let Some(requests) = changed_requests(request.old, new) else {
            return Ok(());
        };
        check(request.store, &requests).await
    }
}

/// Rejects fractional GPU requests unless some GPU asset allows sharing, and
/// fractions above one GPU always (a request is whole GPUs or part of one).
async fn check(store: &dyn Store, requests: &[(String, String)]) -> Result<(), Status> {
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
