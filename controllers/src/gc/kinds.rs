//! The garbage collector's view of one kind without naming it: its cache (metadata
//! only) and the few API calls the collector makes, behind [`KindOps`] so the
//! collector can follow owner references of any kind.

use futures::FutureExt;
use futures::future::BoxFuture;
use hypermesh_api::v1::{DeleteRequest, ListRequest, ObjectMeta, PropagationPolicy};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::reflector::Store;
use tonic::{Code, Status};

/// One kind, for the collector.
pub(super) trait KindOps: Send + Sync {
    /// `Workload`.
    fn kind(&self) -> &'static str;
    /// False for cluster-scoped kinds.
    fn namespaced(&self) -> bool;
    /// True once the cache holds a listing.
    fn ready(&self) -> bool;
    /// The uid of the cached object `namespace/name`, if cached.
    fn cached_uid(&self, namespace: &str, name: &str) -> Option<String>;
    /// The cached objects in `namespace`: name, and whether it is being deleted.
    fn cached_in(&self, namespace: &str) -> Vec<(String, bool)>;
    /// The object's metadata as stored now (`None`: not found).
    fn live_meta<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, Status>>;
    /// Deletes the object in the background (its own dependents are collected in
    /// turn), only at `resource_version` when not 0; gone already counts as done.
    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        resource_version: u64,
    ) -> BoxFuture<'a, Result<(), Status>>;
    /// Whether anything of this kind is stored in `namespace` now.
    fn any_in<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<bool, Status>>;
}

/// [`KindOps`] for kind `K`.
pub(super) struct KindClient<K: Resource> {
    pub(super) api: Api<K>,
    pub(super) store: Store<K>,
}

impl<K: Resource> KindOps for KindClient<K> {
    fn kind(&self) -> &'static str {
        K::KIND
    }

    fn namespaced(&self) -> bool {
        K::NAMESPACED
    }

    fn ready(&self) -> bool {
        self.store.is_ready()
    }

    fn cached_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.store
            .get(namespace, name)
            .map(|o| o.meta().uid.clone())
    }

    fn cached_in(&self, namespace: &str) -> Vec<(String, bool)> {
        self.store
            .list()
            .into_iter()
            .filter(|o| o.meta().namespace == namespace)
            .map(|o| {
                let meta = o.meta();
                (meta.name.clone(), meta.deletion_timestamp.is_some())
            })
            .collect()
    }

    fn live_meta<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ObjectMeta>, Status>> {
        async move {
            match self.api.get(namespace, name).await {
                Ok(object) => Ok(Some(object.meta().clone())),
                Err(status) if status.code() == Code::NotFound => Ok(None),
                Err(status) => Err(status),
            }
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        resource_version: u64,
    ) -> BoxFuture<'a, Result<(), Status>> {
        async move {
            let request = DeleteRequest {
                namespace: namespace.to_string(),
                name: name.to_string(),
                resource_version,
                propagation_policy: PropagationPolicy::Background as i32,
            };
            match self.api.delete(request).await {
                Ok(_) => Ok(()),
                Err(status) if status.code() == Code::NotFound => Ok(()),
                Err(status) => Err(status),
            }
        }
        .boxed()
    }

    fn any_in<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<bool, Status>> {
        async move {
            let request = ListRequest {
                namespace: namespace.to_string(),
                limit: 1,
                ..Default::default()
            };
            let (items, _, _) = self.api.list(request).await?;
            Ok(!items.is_empty())
        }
        .boxed()
    }
}
