//! Garbage collection and namespace deletion, run inside the apiserver.
//!
//! The collector keeps an in-memory index of every object's uid and owner references,
//! built from one listing and kept current by a watch on the whole store. When an
//! object's owners are all gone it is deleted (honouring its finalizers): that is
//! background cascading deletion. A Namespace marked for deletion has everything in it
//! deleted, and once it is empty its finalizer is removed so it goes too.
//!
//! It works on the store directly, kind-agnostically (see `object::StoredObject`),
//! rather than through the gRPC API as the other controllers will: it needs every
//! kind at once and no kind-specific logic. A startup sweep repairs whatever a crash
//! left half-done.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::resource::KIND_INFOS;
use hypermesh_api::v1::ObjectMeta;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::kinds::NAMESPACE_FINALIZER;
use crate::object::{self, StoredObject, kind_of_key, namespace_of_key, object_key, store_status};
use crate::store::{Store, StoreError, StoreEvent, WatchItem};

/// What the index remembers of one object.
#[derive(Debug, Clone)]
struct Entry {
    uid: String,
    owner_uids: Vec<String>,
    deleting: bool,
}

/// Every object's uid and owners, and the reverse edges.
#[derive(Debug, Default)]
struct Index {
    by_key: HashMap<String, Entry>,
    key_of_uid: HashMap<String, String>,
    dependents: HashMap<String, HashSet<String>>,
    namespace_members: HashMap<String, BTreeSet<String>>,
    /// Namespaces marked for deletion.
    terminating: BTreeSet<String>,
    /// Deletes issued whose events have not arrived yet.
    pending_deletes: HashSet<String>,
}

impl Index {
    fn upsert(&mut self, key: &str, meta: &ObjectMeta) {
        self.remove(key);
        let entry = Entry {
            uid: meta.uid.clone(),
            owner_uids: meta
                .owner_references
                .iter()
                .map(|r| r.uid.clone())
                .collect(),
            deleting: meta.deletion_timestamp.is_some(),
        };
        for owner in &entry.owner_uids {
            self.dependents
                .entry(owner.clone())
                .or_default()
                .insert(key.to_string());
        }
        self.key_of_uid.insert(entry.uid.clone(), key.to_string());
        if let Some(ns) = namespace_of_key(key) {
            self.namespace_members
                .entry(ns.to_string())
                .or_default()
                .insert(key.to_string());
        }
        if kind_of_key(key).is_some_and(|k| k.kind == "Namespace") && entry.deleting {
            self.terminating.insert(meta.name.clone());
        }
        self.by_key.insert(key.to_string(), entry);
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.by_key.remove(key)?;
        for owner in &entry.owner_uids {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
        if self.key_of_uid.get(&entry.uid).is_some_and(|k| k == key) {
            self.key_of_uid.remove(&entry.uid);
        }
        if let Some(members) =
            namespace_of_key(key).and_then(|ns| self.namespace_members.get_mut(ns))
        {
            members.remove(key);
        }
        self.pending_deletes.remove(key);
        Some(entry)
    }

    /// True when the object has owners and none of them exists any more.
    fn orphaned(&self, key: &str) -> bool {
        self.by_key.get(key).is_some_and(|e| {
            !e.deleting
                && !e.owner_uids.is_empty()
                && e.owner_uids
                    .iter()
                    .all(|u| !self.key_of_uid.contains_key(u))
        })
    }
}

/// The garbage collector and namespace finalizer.
pub struct GarbageCollector {
    store: Arc<dyn Store>,
    index: Index,
}

impl GarbageCollector {
    /// A collector over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        GarbageCollector {
            store,
            index: Index::default(),
        }
    }

    /// Runs until `shutdown`, rebuilding its index whenever its watch breaks.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            match self.run_once(&shutdown).await {
                Ok(()) => return,
                Err(e) => warn!(error = %e, "garbage collector restarting"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn run_once(&mut self, shutdown: &CancellationToken) -> Result<(), Status> {
        self.index = Index::default();
        let page = self
            .store
            .list("/", None, 0, 0)
            .await
            .map_err(|e| store_status(e, "all objects"))?;
        for kv in &page.items {
            self.index
                .upsert(&kv.key, &StoredObject::decode_kv(kv)?.meta());
        }
        debug!(
            objects = page.items.len(),
            revision = page.revision,
            "garbage collector index built"
        );
        let orphans: Vec<String> = self
            .index
            .by_key
            .keys()
            .filter(|k| self.index.orphaned(k))
            .cloned()
            .collect();
        for key in orphans {
            self.delete(&key).await;
        }
        for ns in self.index.terminating.clone() {
            self.finalize_namespace(&ns).await;
        }
        let mut watch = self
            .store
            .watch("/", page.revision, Some(Duration::from_secs(2)))
            .await
            .map_err(|e| store_status(e, "all objects"))?;
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                item = watch.recv() => item,
            };
            match item {
                None => {
                    return Err(store_status(
                        StoreError::Backend("watch ended".into()),
                        "all objects",
                    ));
                }
                Some(Err(e)) => return Err(store_status(e, "all objects")),
                Some(Ok(WatchItem::Event(event))) => self.handle(&event).await?,
                Some(Ok(WatchItem::Progress(_))) => {
                    for ns in self.index.terminating.clone() {
                        self.finalize_namespace(&ns).await;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, event: &StoreEvent) -> Result<(), Status> {
        let key = event.key.as_str();
        match &event.current {
            Some(kv) => {
                let meta = StoredObject::decode_kv(kv)?.meta();
                self.index.upsert(key, &meta);
                if self.index.orphaned(key) {
                    self.delete(key).await;
                }
                if let Some(ns) =
                    namespace_of_key(key).filter(|ns| self.index.terminating.contains(*ns))
                {
                    let ns = ns.to_string();
                    self.finalize_namespace(&ns).await;
                }
                if kind_of_key(key).is_some_and(|k| k.kind == "Namespace")
                    && meta.deletion_timestamp.is_some()
                {
                    self.finalize_namespace(&meta.name).await;
                }
            }
            None => {
                let Some(entry) = self.index.remove(key) else {
                    return Ok(());
                };
                if kind_of_key(key).is_some_and(|k| k.kind == "Namespace")
                    && let Some(name) = key.rsplit('/').next()
                {
                    self.index.terminating.remove(name);
                }
                let dependents: Vec<String> = self
                    .index
                    .dependents
                    .get(&entry.uid)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                for dependent in dependents {
                    if self.index.orphaned(&dependent) {
                        self.delete(&dependent).await;
                    }
                }
                if let Some(ns) =
                    namespace_of_key(key).filter(|ns| self.index.terminating.contains(*ns))
                {
                    let ns = ns.to_string();
                    self.finalize_namespace(&ns).await;
                }
            }
        }
        Ok(())
    }

    async fn delete(&mut self, key: &str) {
        if !self.index.pending_deletes.insert(key.to_string()) {
            return;
        }
        match object::delete_object(self.store.as_ref(), key, key, None, |_| {}).await {
            Ok(_) => debug!(key, "garbage collected"),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                self.index.pending_deletes.remove(key);
                warn!(key, error = %s.message(), "garbage collection failed; will retry");
            }
        }
    }

    /// Deletes what is left in namespace `ns`; once nothing is, lets the namespace go.
    async fn finalize_namespace(&mut self, ns: &str) {
        let members: Vec<String> = self
            .index
            .namespace_members
            .get(ns)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        if !members.is_empty() {
            for key in members {
                if self.index.by_key.get(&key).is_some_and(|e| !e.deleting) {
                    self.delete(&key).await;
                }
            }
            return;
        }
        let Some(kind) = KIND_INFOS.iter().find(|k| k.kind == "Namespace") else {
            return;
        };
        let key = object_key(kind, "", ns);
        let Ok(Some(kv)) = self.store.get(&key).await else {
            return;
        };
        let Ok(mut obj) = StoredObject::decode_kv(&kv) else {
            return;
        };
        let meta = obj.metadata.get_or_insert_with(ObjectMeta::default);
        if !meta.finalizers.iter().any(|f| f == NAMESPACE_FINALIZER) {
            return;
        }
        meta.finalizers.retain(|f| f != NAMESPACE_FINALIZER);
        let result = if meta.finalizers.is_empty() {
            self.store
                .delete(&key, Some(kv.mod_revision))
                .await
                .map(|_| ())
        } else {
            self.store
                .update(&key, obj.encode_to_vec(), kv.mod_revision)
                .await
                .map(|_| ())
        };
        match result {
            Ok(()) => info!(namespace = ns, "namespace finalized"),
            Err(e) => {
                debug!(namespace = ns, error = %e, "namespace finalization raced; will retry")
            }
        }
    }
}
