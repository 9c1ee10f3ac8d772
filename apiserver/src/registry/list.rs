//! Paginated List of one kind: a snapshot at one revision, pages cut by count and
//! bytes, continue tokens authenticated and bound to the listing
//! ([`super::continue_token`]). A selective List (one with a selector) is answered
//! from the watch cache when the cache has caught up with the store and the matches
//! fit one page, so finding a node's few Assets does not decode every Asset.

use super::continue_token::Listing;
use crate::admission::{Kind, Operation};
use crate::caller::Caller;
use crate::object::{kind_prefix, store_status};
use crate::selectors::Selectors;
use crate::store::StoreError;
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::ListRequest;
use std::time::Duration;
use tonic::Status;

/// How long a selective List waits for the watch cache to catch up with the store's
/// current revision before it reads the store instead.
const CACHE_CATCH_UP: Duration = Duration::from_millis(100);

use super::*;

impl<K: Kind> Registry<K> {
    /// Lists objects matching the request's selectors, one page at a time.
    pub async fn list(&self, caller: &Caller, request: ListRequest) -> Result<K::List, Status> {
        self.authorize(caller, Operation::List, &request.namespace, "")
            .await?;
        let selectors = Selectors::parse::<K>(&request.label_selector, &request.field_selector)?;
        let prefix = kind_prefix(Self::info(), &request.namespace);
        let limit = match request.limit as usize {
            0 => MAX_PAGE_ITEMS,
            n => n.min(MAX_PAGE_ITEMS),
        };
        if request.continue_token.is_empty()
            && !selectors.is_empty()
            && let Some(list) = self.list_from_cache(&prefix, &selectors, limit).await?
        {
            self.options.metrics.list_page(K::KIND, true);
            return Ok(list);
        }
        self.options.metrics.list_page(K::KIND, false);
        let listing = Listing {
            prefix: &prefix,
            label_selector: &request.label_selector,
            field_selector: &request.field_selector,
        };
        let tokens = &self.options.continue_tokens;
        let encode_continue = |revision: u64, key: &str| tokens.issue(&listing, revision, key);
        let (mut revision, mut start_after) = if request.continue_token.is_empty() {
            (0, None)
        } else {
            let (rev, key) = tokens.check(&request.continue_token, &listing)?;
            (rev, Some(key))
        };
        let fetch_cap = (LIST_FETCH_BYTES / self.options.max_object_bytes.max(1)).max(1);
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut last_examined = start_after.clone();
        loop {
            let fetch = (limit - items.len())
                .max(if selectors.is_empty() { 0 } else { 256 })
                .min(fetch_cap);
            let page = self
                .store
                .list(&prefix, start_after.as_deref(), fetch, revision)
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } => status(Reason::Expired, "the continue token has expired (its snapshot was compacted); list again from the start"),
                    other => store_status(other, K::PLURAL),
                })?;
            revision = page.revision;
            let count = page.items.len();
            for (i, kv) in page.items.iter().enumerate() {
                let obj = Self::decode(kv)?;
                if selectors.matches(&obj) {
                    // Cut the page before it outgrows one gRPC message.
                    if !items.is_empty() && bytes + kv.value.len() > PAGE_BYTES {
                        let resume = last_examined.unwrap_or_default();
                        return Ok(K::make_list(
                            items,
                            revision,
                            encode_continue(revision, &resume),
                        ));
                    }
                    bytes += kv.value.len();
                    items.push(obj);
                }
                last_examined = Some(kv.key.clone());
                if items.len() == limit {
                    let more = i + 1 < count || page.more;
                    let token = if more {
                        encode_continue(revision, &kv.key)
                    } else {
                        String::new()
                    };
                    return Ok(K::make_list(items, revision, token));
                }
            }
            if !page.more || count == 0 {
                return Ok(K::make_list(items, revision, String::new()));
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
    }

    /// A selective List answered from the watch cache, or `None` when it cannot be:
    /// the cache has not caught up with the store's fresh revision within
    /// [`CACHE_CATCH_UP`] (so it might miss an acknowledged write), or the matches do
    /// not fit one page (the store path pages them from one snapshot), or the watch
    /// cache is off.
    async fn list_from_cache(
        &self,
        prefix: &str,
        selectors: &Selectors,
        limit: usize,
    ) -> Result<Option<K::List>, Status> {
        let Some(cache) = self.watch_cache() else {
            return Ok(None);
        };
        let revision = self
            .store
            .fresh_revision()
            .await
            .map_err(|e| store_status(e, K::PLURAL))?;
        // A cache of a quiet kind learns the store's revision from progress reports;
        // a store that cannot report on request (etcd) is read unless the cache has
        // already caught up.
        let caught_up = cache.has_reached(revision)
            || (self.store.request_progress() && cache.reached(revision, CACHE_CATCH_UP).await);
        if !caught_up {
            return Ok(None);
        }
        let state = cache.read();
        let mut items = Vec::new();
        let mut bytes = 0;
        let objects = state.objects.range(prefix.to_string()..);
        for (_, object) in objects.take_while(|(key, _)| key.starts_with(prefix)) {
            if selectors.matches(&object.obj) {
                bytes += object.stored_bytes();
                if items.len() == limit || bytes > PAGE_BYTES {
                    return Ok(None);
                }
                items.push(object.obj.clone());
            }
        }
        Ok(Some(K::make_list(items, state.revision, String::new())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{RedbOptions, RedbStore};
    use crate::store::{KeyValue, ListPage, Store, WatchStream};
    use crate::watch_cache::{WatchCacheOptions, WatchCaches};
    use futures::FutureExt;
    use futures::future::BoxFuture;
    use hypermesh_api::v1::{Namespace, NamespaceList, ObjectMeta};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    /// A store whose watches deliver every item `lag` late: a watch cache behind it
    /// trails every write, as one on a busy apiserver (or a second one) can.
    struct LaggingWatches {
        inner: RedbStore,
        lag: Duration,
    }

    impl Store for LaggingWatches {
        fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
            self.inner.get(key)
        }
        fn create<'a>(
            &'a self,
            key: &'a str,
            value: Vec<u8>,
        ) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.inner.create(key, value)
        }
        fn update<'a>(
            &'a self,
            key: &'a str,
            value: Vec<u8>,
            expected: u64,
        ) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.inner.update(key, value, expected)
        }
        fn delete<'a>(
            &'a self,
            key: &'a str,
            expected: Option<u64>,
        ) -> BoxFuture<'a, Result<(u64, KeyValue), StoreError>> {
            self.inner.delete(key, expected)
        }
        fn list<'a>(
            &'a self,
            prefix: &'a str,
            start_after: Option<&'a str>,
            limit: usize,
            revision: u64,
        ) -> BoxFuture<'a, Result<ListPage, StoreError>> {
            self.inner.list(prefix, start_after, limit, revision)
        }
        fn watch<'a>(
            &'a self,
            prefix: &'a str,
            after: u64,
            progress_every: Option<Duration>,
        ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
            async move {
                let mut inner = self.inner.watch(prefix, after, progress_every).await?;
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                let lag = self.lag;
                tokio::spawn(async move {
                    while let Some(item) = inner.recv().await {
                        tokio::time::sleep(lag).await;
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                });
                Ok(rx)
            }
            .boxed()
        }
        fn current_revision(&self) -> u64 {
            self.inner.current_revision()
        }
        fn fresh_revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
            self.inner.fresh_revision()
        }
        fn request_progress(&self) -> bool {
            self.inner.request_progress()
        }
        fn compacted_revision(&self) -> u64 {
            self.inner.compacted_revision()
        }
        fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
            self.inner.compact(revision)
        }
    }

    fn namespace(name: &str, app: &str) -> Namespace {
        Namespace {
            metadata: Some(ObjectMeta {
                name: name.into(),
                labels: [("app".to_string(), app.to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(list: &NamespaceList) -> Vec<&str> {
        list.items.iter().map(|l| l.meta().name.as_str()).collect()
    }

    /// A cache that trails the store never answers a List with what it has not seen:
    /// the List reads the store instead, and the cache answers again once caught up.
    #[tokio::test]
    async fn a_trailing_cache_does_not_answer_selective_lists() {
        let dir = tempfile::tempdir().expect("dir");
        let redb =
            RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).expect("open");
        let lag = CACHE_CATCH_UP * 3;
        let store: Arc<dyn Store> = Arc::new(LaggingWatches { inner: redb, lag });
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let caches = WatchCaches::new(
            store.clone(),
            WatchCacheOptions::default(),
            CancellationToken::new(),
        );
        let registry = Registry::<Namespace>::new(
            store,
            Arc::new(RegistryOptions {
                watch_caches: Some(Arc::new(caches)),
                metrics: metrics.clone(),
                ..Default::default()
            }),
        );
        let caller = Caller::insecure_dev();
        let select = |app: &str| ListRequest {
            label_selector: format!("app={app}"),
            ..Default::default()
        };
        let cache = registry.watch_cache().expect("cache on");
        assert!(cache.ready(Duration::from_secs(5)).await, "filled");

        for i in 0..5 {
            let name = format!("l-{i}");
            registry
                .create(&caller, namespace(&name, "web"))
                .await
                .expect("create");
            let listed = registry.list(&caller, select("web")).await.expect("list");
            assert!(
                names(&listed).contains(&name.as_str()),
                "{name} listed right after its create: {:?}",
                names(&listed)
            );
        }
        let mut body = String::new();
        metrics.write(&mut body, registry.store());
        assert!(
            body.contains(
                "hypermesh_apiserver_list_pages_total{kind=\"Namespace\",source=\"store\"} 5"
            ),
            "the trailing cache answered none of them:\n{body}"
        );

        let latest = registry
            .create(&caller, namespace("last", "db"))
            .await
            .expect("create");
        assert!(
            cache
                .reached(latest.meta().resource_version, lag * 10)
                .await,
            "the cache catches up"
        );
        let listed = registry.list(&caller, select("db")).await.expect("list");
        assert_eq!(names(&listed), ["last"]);
        let mut body = String::new();
        metrics.write(&mut body, registry.store());
        assert!(
            body.contains(
                "hypermesh_apiserver_list_pages_total{kind=\"Namespace\",source=\"cache\"} 1"
            ),
            "the caught-up cache answered:\n{body}"
        );
    }
}
