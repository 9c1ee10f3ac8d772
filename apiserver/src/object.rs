//! Kind-agnostic view of a stored object and the operations that need no kind:
//! store keys, deletion honouring finalizers, and orphaning dependents.
//!
//! Every kind's message is `{1: metadata, 2: spec, 3: status}`, and an embedded
//! message is encoded exactly like a `bytes` field, so [`StoredObject`] decodes and
//! re-encodes any kind losslessly while exposing only its metadata.

use std::sync::Arc;

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::resource::{KIND_INFOS, KindInfo, find_kind};
use hypermesh_api::v1::ObjectMeta;
use prost::Message;
use tonic::Status;

use crate::store::{KeyValue, Store, StoreError};

/// Any object, with spec and status kept as their encoded bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredObject {
    /// The object's metadata.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    /// The encoded spec, if present.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub spec: Option<Vec<u8>>,
    /// The encoded status, if present.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub status: Option<Vec<u8>>,
}

impl StoredObject {
    /// Decodes a stored value.
    pub fn decode_kv(kv: &KeyValue) -> Result<Self, Status> {
        StoredObject::decode(kv.value.as_slice()).map_err(|e| corrupt(&kv.key, &e))
    }

    /// The metadata (empty when unset).
    pub fn meta(&self) -> ObjectMeta {
        self.metadata.clone().unwrap_or_default()
    }
}

/// A new random object uid (UUID v4 form); also names relay sessions.
pub fn uid() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Where a kind's objects live: `/{plural}/{namespace}/{name}` or `/{plural}/{name}`.
pub fn object_key(kind: &KindInfo, namespace: &str, name: &str) -> String {
    if kind.namespaced {
        format!("/{}/{namespace}/{name}", kind.plural)
    } else {
        format!("/{}/{name}", kind.plural)
    }
}

/// The prefix listing a kind's objects, in one namespace or (empty `namespace`) all.
pub fn kind_prefix(kind: &KindInfo, namespace: &str) -> String {
    if kind.namespaced && !namespace.is_empty() {
        format!("/{}/{namespace}/", kind.plural)
    } else {
        format!("/{}/", kind.plural)
    }
}

/// The kind a store key belongs to.
pub fn kind_of_key(key: &str) -> Option<&'static KindInfo> {
    let plural = key.strip_prefix('/')?.split('/').next()?;
    KIND_INFOS.iter().find(|k| k.plural == plural)
}

/// The namespace part of a namespaced kind's key.
pub fn namespace_of_key(key: &str) -> Option<&str> {
    let kind = kind_of_key(key)?;
    kind.namespaced.then(|| key.split('/').nth(2)).flatten()
}

/// The store key of the owner a reference points to, from a dependent in `namespace`.
pub fn owner_key(owner_kind: &str, owner_name: &str, dependent_namespace: &str) -> Option<String> {
    let kind = find_kind(owner_kind)?;
    Some(object_key(kind, dependent_namespace, owner_name))
}

fn corrupt(key: &str, e: &prost::DecodeError) -> Status {
    status(
        Reason::InternalError,
        format!("stored object {key} does not decode: {e}"),
    )
}

/// Maps a store error to the API status users see, naming the object.
pub fn store_status(e: StoreError, what: &str) -> Status {
    match e {
        StoreError::NotFound(_) => status(Reason::NotFound, format!("{what} not found")),
        StoreError::AlreadyExists(_) => {
            status(Reason::AlreadyExists, format!("{what} already exists"))
        }
        StoreError::Conflict {
            expected, current, ..
        } => status(
            Reason::Conflict,
            format!(
                "operation cannot be fulfilled on {what}: the object has been modified (resource_version {current}, request had {expected}); get the latest version and try again"
            ),
        ),
        StoreError::Compacted {
            requested,
            compacted,
        } => status(
            Reason::Expired,
            format!(
                "resource_version {requested} is too old (history starts after {compacted}); list again and watch from the list's resource_version"
            ),
        ),
        StoreError::FutureRevision { requested, current } => status(
            Reason::FieldInvalid,
            format!("resource_version {requested} is newer than the server's {current}"),
        ),
        StoreError::Backend(msg) => status(
            Reason::InternalError,
            format!("storage failure on {what}: {msg}"),
        ),
        StoreError::Overloaded(msg) => status(Reason::Overloaded, format!("{what}: {msg}")),
    }
}

/// What a deletion did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// The object is gone; this was its last state, at the deletion's revision.
    Deleted(StoredObject, u64),
    /// Finalizers hold it: `deletion_timestamp` is set, written at this revision.
    Pending(StoredObject, u64),
}

/// Deletes the object at `key` (with `expected` as the precondition when given), or,
/// while it has finalizers, marks it with `deletion_timestamp`. `prepare` may change
/// the object first (e.g. a Namespace adds its own finalizer).
pub async fn delete_object(
    store: &dyn Store,
    key: &str,
    what: &str,
    expected: Option<u64>,
    prepare: impl Fn(&mut StoredObject),
) -> Result<Deletion, Status> {
    for _ in 0..16 {
        let kv = store
            .get(key)
            .await
            .map_err(|e| store_status(e, what))?
            .ok_or_else(|| status(Reason::NotFound, format!("{what} not found")))?;
        if let Some(expected) = expected.filter(|&e| e != kv.mod_revision) {
            return Err(store_status(
                StoreError::Conflict {
                    key: key.into(),
                    expected,
                    current: kv.mod_revision,
                },
                what,
            ));
        }
        let current = StoredObject::decode_kv(&kv)?;
        if current.meta().deletion_timestamp.is_some() {
            return Ok(Deletion::Pending(current, kv.mod_revision));
        }
        let mut next = current.clone();
        prepare(&mut next);
        let result = if next.meta().finalizers.is_empty() {
            store
                .delete(key, Some(kv.mod_revision))
                .await
                .map(|(rev, _)| Deletion::Deleted(current, rev))
        } else {
            let meta = next.metadata.get_or_insert_with(ObjectMeta::default);
            meta.deletion_timestamp = Some(hypermesh_api::time::now());
            store
                .update(key, next.encode_to_vec(), kv.mod_revision)
                .await
                .map(|rev| Deletion::Pending(next, rev))
        };
        match result {
            Ok(deletion) => return Ok(deletion),
            // Changed under us: try again unless the caller pinned a version.
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) if expected.is_none() => {
                continue;
            }
            Err(e) => return Err(store_status(e, what)),
        }
    }
    Err(status(
        Reason::Conflict,
        format!("{what} kept changing while being deleted; try again"),
    ))
}

/// Removes the owner reference to `owner_uid` from one object, retrying when the
/// object changes under us. True when a reference was removed.
async fn strip_owner(store: &dyn Store, mut kv: KeyValue, owner_uid: &str) -> Result<bool, Status> {
    for _ in 0..32 {
        let mut obj = StoredObject::decode_kv(&kv)?;
        let meta = obj.metadata.get_or_insert_with(ObjectMeta::default);
        let before = meta.owner_references.len();
        meta.owner_references.retain(|r| r.uid != owner_uid);
        if meta.owner_references.len() == before {
            return Ok(false);
        }
        match store
            .update(&kv.key, obj.encode_to_vec(), kv.mod_revision)
            .await
        {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict { .. }) => match store
                .get(&kv.key)
                .await
                .map_err(|e| store_status(e, &kv.key))?
            {
                Some(latest) => kv = latest,
                None => return Ok(false),
            },
            Err(StoreError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(store_status(e, &kv.key)),
        }
    }
    Err(status(
        Reason::Conflict,
        format!(
            "{} kept changing while its owner reference was being removed; the owner was not deleted, try again",
            kv.key
        ),
    ))
}

/// Removes owner references to `owner_uid` from every object in `namespace` (all
/// objects when the owner is cluster-scoped), so deleting the owner leaves them.
pub async fn orphan_dependents(
    store: &Arc<dyn Store>,
    owner_uid: &str,
    namespace: &str,
) -> Result<usize, Status> {
    let mut orphaned = 0;
    for kind in KIND_INFOS {
        if !namespace.is_empty() && !kind.namespaced {
            continue;
        }
        let prefix = kind_prefix(kind, namespace);
        let page = store
            .list(&prefix, None, 0, 0)
            .await
            .map_err(|e| store_status(e, &prefix))?;
        for kv in page.items {
            if strip_owner(store.as_ref(), kv, owner_uid).await? {
                orphaned += 1;
            }
        }
    }
    Ok(orphaned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1;

    #[test]
    fn stored_object_round_trips_any_kind() {
        let w = v1::Workload {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                ..Default::default()
            }),
            spec: Some(v1::WorkloadSpec {
                replicas: 3,
                ..Default::default()
            }),
            status: Some(v1::WorkloadStatus::default()),
        };
        let any = StoredObject::decode(w.encode_to_vec().as_slice()).unwrap();
        assert_eq!(any.meta().name, "web");
        assert_eq!(
            v1::Workload::decode(any.encode_to_vec().as_slice()).unwrap(),
            w
        );
    }

    #[test]
    fn keys_name_kind_and_namespace() {
        let wl = find_kind("Workload").unwrap();
        let node = find_kind("Node").unwrap();
        assert_eq!(object_key(wl, "default", "web"), "/workloads/default/web");
        assert_eq!(object_key(node, "", "n1"), "/nodes/n1");
        assert_eq!(
            kind_of_key("/workloads/default/web").map(|k| k.kind),
            Some("Workload")
        );
        assert_eq!(namespace_of_key("/workloads/default/web"), Some("default"));
        assert_eq!(namespace_of_key("/nodes/n1"), None);
    }
}
