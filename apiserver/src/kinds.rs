//! Per-kind object semantics beyond field validation: defaults set on create, fields
//! that may not change on update, and what deletion does first. Policy that depends on
//! who calls or on other objects lives in the admission chain (`crate::admission`).

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1;
use hypermesh_api::validation::Validate;
use prost::Message;
use tonic::Status;

use crate::object::StoredObject;

pub use hypermesh_api::{CONTAINERS_FINALIZER, NAMESPACE_FINALIZER};

/// Kind-specific object semantics; the defaults do nothing.
pub trait KindRules: Validate {
    /// Sets server-side defaults on a new object.
    fn on_create(&mut self) {}

    /// Rejects changes to fields that are fixed once set.
    fn check_update(&self, _old: &Self) -> Result<(), Status> {
        Ok(())
    }

    /// Changes the object when deletion is requested, before finalizers are looked at.
    fn on_delete(_object: &mut StoredObject) {}
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

impl KindRules for v1::Namespace {
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

impl KindRules for v1::Node {}

impl KindRules for v1::Asset {
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

impl KindRules for v1::Workload {
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

impl KindRules for v1::Instance {
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
        immutable("spec.nodeName", &node(old), &node(self))
            .and_then(|()| immutable("spec.assignedAssets", &assets(old), &assets(self)))
            .map_err(|err| owned_by_controller(old, err))
    }

    /// An Instance whose node's agent has taken it (bound, reported container
    /// statuses, not finished) is held by [`CONTAINERS_FINALIZER`] until the agent
    /// confirms its containers are gone: it shows `Terminating` meanwhile.
    fn on_delete(object: &mut StoredObject) {
        let Ok(instance) = v1::Instance::decode(object.encode_to_vec().as_slice()) else {
            return;
        };
        if !agent_holds(&instance) {
            return;
        }
        let meta = object.metadata.get_or_insert_with(Default::default);
        if !meta.finalizers.iter().any(|f| f == CONTAINERS_FINALIZER) {
            meta.finalizers.push(CONTAINERS_FINALIZER.to_string());
        }
    }
}

/// `err` about an Instance a controller manages (a Workload's) says so first: the
/// change belongs in the owner, whose template the controller stamps out.
fn owned_by_controller(old: &v1::Instance, err: Status) -> Status {
    let Some(meta) = old.metadata.as_ref() else {
        return err;
    };
    let Some(owner) = meta.owner_references.iter().find(|o| o.controller) else {
        return err;
    };
    status(
        Reason::FieldImmutable,
        format!(
            "instance {} is owned by {} {}; change the {} instead ({})",
            meta.name,
            owner.kind,
            owner.name,
            owner.kind,
            err.message()
        ),
    )
}

/// Whether an agent runs (or may still run) containers for `instance`.
fn agent_holds(instance: &v1::Instance) -> bool {
    let bound = instance
        .spec
        .as_ref()
        .is_some_and(|s| !s.node_name.is_empty());
    let Some(status) = instance.status.as_ref() else {
        return false;
    };
    let finished = status.phase == v1::InstancePhase::Succeeded as i32
        || status.phase == v1::InstancePhase::Failed as i32;
    bound && !finished && !status.container_statuses.is_empty()
}

impl KindRules for v1::Role {}
impl KindRules for v1::RoleBinding {}
impl KindRules for v1::JoinToken {}

impl KindRules for v1::Certificate {
    fn check_update(&self, old: &Self) -> Result<(), Status> {
        let spec = |c: &v1::Certificate| c.spec.clone().unwrap_or_default();
        let (old, new) = (spec(old), spec(self));
        immutable("spec.identity", &old.identity, &new.identity)?;
        immutable("spec.nodeId", &old.node_id, &new.node_id)?;
        if old.revoked && !new.revoked {
            return Err(status(
                Reason::FieldImmutable,
                "spec.revoked: a revoked certificate stays revoked; issue a new one",
            ));
        }
        Ok(())
    }
}

impl KindRules for v1::Route {}
impl KindRules for v1::Secret {}
impl KindRules for v1::Lease {}
impl KindRules for v1::Event {}
