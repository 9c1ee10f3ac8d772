//! Namespace deletion: a Namespace marked for deletion keeps the
//! [`NAMESPACE_FINALIZER`] until everything in it is gone. Its reconcile deletes what
//! is left (in the background, honouring each object's finalizers); once the caches
//! show nothing and live listings agree, it removes the finalizer and the Namespace
//! goes. Objects of a terminating namespace delete themselves when reconciled and
//! poke the namespace when they are gone.

use std::time::Duration;

use hypermesh_api::v1::{Namespace, ObjectMeta};
use hypermesh_api::{NAMESPACE_FINALIZER, Resource};
use hypermesh_runtime::controller::Action;
use tonic::Code;
use tracing::info;

use super::{Gc, GcError};

/// How soon to look again when a live listing still finds something the caches
/// have not shown yet.
const RECHECK: Duration = Duration::from_secs(1);

/// Reconciles a Namespace.
pub(super) async fn reconcile(ns: &ObjectMeta, gc: &Gc) -> Result<Action, GcError> {
    let name = &ns.name;
    if ns.deletion_timestamp.is_none() {
        gc.terminating().remove(name);
        return Ok(Action::await_change());
    }
    gc.terminating().insert(name.clone());
    if !ns.finalizers.iter().any(|f| f == NAMESPACE_FINALIZER) {
        return Ok(Action::await_change());
    }
    let mut left = false;
    let mut failure = None;
    for ops in gc.kinds.values().filter(|k| k.namespaced()) {
        for (member, deleting) in ops.cached_in(name) {
            left = true;
            if deleting {
                continue;
            }
            if let Err(source) = ops.delete(name, &member, 0).await {
                failure.get_or_insert(GcError::Delete {
                    kind: ops.kind().to_string(),
                    namespace: name.clone(),
                    name: member,
                    source,
                });
            }
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }
    if left {
        // Each deletion brings this namespace back here.
        return Ok(Action::await_change());
    }
    for ops in gc.kinds.values().filter(|k| k.namespaced()) {
        let any = ops.any_in(name).await.map_err(|source| GcError::List {
            kind: ops.kind().to_string(),
            namespace: name.clone(),
            source,
        })?;
        if any {
            return Ok(Action::requeue(RECHECK));
        }
    }
    finalize(gc, name).await?;
    Ok(Action::await_change())
}

/// An object in a terminating namespace: deletes it and pokes the namespace.
pub(super) async fn reconcile_member(
    kind: &'static str,
    meta: &ObjectMeta,
    gc: &Gc,
) -> Result<Action, GcError> {
    gc.trigger(Namespace::KIND, (String::new(), meta.namespace.clone()));
    if meta.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if let Some(ops) = gc.kind(kind) {
        ops.delete(&meta.namespace, &meta.name, 0)
            .await
            .map_err(|source| GcError::Delete {
                kind: kind.to_string(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                source,
            })?;
    }
    Ok(Action::await_change())
}

/// Removes the namespace finalizer (the Namespace is deleted when it was the last).
async fn finalize(gc: &Gc, name: &str) -> Result<(), GcError> {
    let error = |source| GcError::Finalize {
        namespace: name.to_string(),
        source,
    };
    let mut ns = match gc.namespaces.get("", name).await {
        Ok(ns) => ns,
        Err(status) if status.code() == Code::NotFound => return Ok(()),
        Err(source) => return Err(error(source)),
    };
    let meta = ns.metadata.get_or_insert_default();
    if !meta.finalizers.iter().any(|f| f == NAMESPACE_FINALIZER) {
        return Ok(());
    }
    meta.finalizers.retain(|f| f != NAMESPACE_FINALIZER);
    // Carries the resource_version read: a compare-and-swap.
    match gc.namespaces.update(&ns).await {
        Ok(_) => {
            info!(namespace = name, "namespace finalized");
            Ok(())
        }
        Err(status) if status.code() == Code::NotFound => Ok(()),
        Err(source) => Err(error(source)),
    }
}
