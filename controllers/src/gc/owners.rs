//! Cascading deletion: an object whose owners are all gone is deleted. The caches of
//! different kinds are not in step with each other, so absence from the owner's
//! cache is only a hint, confirmed by reading the owner; and the dependent itself is
//! read again and deleted only at that version, so an object that was orphaned or
//! re-owned meanwhile stays.

use std::time::Duration;

use hypermesh_api::resource::find_kind;
use hypermesh_api::v1::{ObjectMeta, OwnerReference};
use hypermesh_runtime::controller::Action;
use tracing::debug;

use super::{Gc, GcError};

/// The namespace an owner named by `dependent`'s reference lives in: the
/// dependent's own for namespaced kinds, none for cluster-scoped ones.
fn owner_namespace<'a>(owner: &OwnerReference, dependent: &'a ObjectMeta) -> Option<&'a str> {
    let info = find_kind(&owner.kind)?;
    Some(if info.namespaced {
        dependent.namespace.as_str()
    } else {
        ""
    })
}

/// Whether the owner exists now (same uid), by the cache or, failing that, a read.
async fn owner_exists(
    gc: &Gc,
    owner: &OwnerReference,
    dependent: &ObjectMeta,
    live: bool,
) -> Result<bool, GcError> {
    let (Some(namespace), Some(info)) = (owner_namespace(owner, dependent), find_kind(&owner.kind))
    else {
        // A kind this server does not serve owns nothing here.
        return Ok(false);
    };
    let Some(ops) = gc.kind(info.kind) else {
        return Ok(false);
    };
    if !live {
        return Ok(ops.cached_uid(namespace, &owner.name).as_deref() == Some(owner.uid.as_str()));
    }
    let meta = ops
        .live_meta(namespace, &owner.name)
        .await
        .map_err(|source| GcError::Read {
            kind: info.kind.to_string(),
            namespace: namespace.to_string(),
            name: owner.name.clone(),
            source,
        })?;
    Ok(meta.is_some_and(|m| m.uid == owner.uid))
}

/// How soon to look again when an owner's kind is not cached yet (at startup).
const CACHE_WAIT: Duration = Duration::from_millis(500);

/// Deletes the object of `kind` described by `meta` when none of its owners exists.
pub(super) async fn collect_if_orphaned(
    kind: &'static str,
    meta: &ObjectMeta,
    gc: &Gc,
) -> Result<Action, GcError> {
    // While the owners' caches fill (at startup) ask again shortly, rather than read
    // every owner from the API.
    let uncached = meta.owner_references.iter().any(|owner| {
        find_kind(&owner.kind)
            .and_then(|info| gc.kind(info.kind))
            .is_some_and(|ops| !ops.ready())
    });
    if uncached {
        return Ok(Action::requeue(CACHE_WAIT));
    }
    for live in [false, true] {
        for owner in &meta.owner_references {
            if owner_exists(gc, owner, meta, live).await? {
                return Ok(Action::await_change());
            }
        }
    }
    let Some(ops) = gc.kind(kind) else {
        return Ok(Action::await_change());
    };
    let read_error = |source| GcError::Read {
        kind: kind.to_string(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        source,
    };
    let Some(current) = ops
        .live_meta(&meta.namespace, &meta.name)
        .await
        .map_err(read_error)?
    else {
        return Ok(Action::await_change());
    };
    if current.uid != meta.uid
        || current.owner_references != meta.owner_references
        || current.deletion_timestamp.is_some()
    {
        // It changed since it was cached; its own event brings it back here.
        return Ok(Action::await_change());
    }
    ops.delete(&meta.namespace, &meta.name, current.resource_version)
        .await
        .map_err(|source| GcError::Delete {
            kind: kind.to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            source,
        })?;
    debug!(kind, namespace = %meta.namespace, name = %meta.name, "garbage collected");
    Ok(Action::await_change())
}
