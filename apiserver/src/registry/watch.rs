//! Watches of one kind: from the watch cache (encoded once, shared by every watcher) or,
//! with `--watch-cache=false`, straight from the store with per-watcher encoding and
//! selector translation.

use crate::admission::{Kind, Operation};
use crate::caller::Caller;
use crate::object::{kind_prefix, store_status};
use crate::store::{StoreError, WatchItem};
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::{WatchEventType, WatchRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Status;

use super::*;

impl<K: Kind> Registry<K> {
    /// This kind's watch cache, started on first use; `None` when caching is off.
    pub fn watch_cache(&self) -> Option<Arc<crate::watch_cache::Cache<K>>> {
        self.options.watch_caches.as_ref().map(|c| c.get::<K>())
    }

    /// Streams changes after `request.resource_version` (0: current objects as ADDED
    /// first) from the watch cache, as encoded `<Kind>WatchEvent`s shared by every
    /// watcher.
    pub async fn watch_cached(
        &self,
        caller: &Caller,
        request: WatchRequest,
    ) -> Result<crate::watch_cache::watcher::EncodedStream, Status> {
        use crate::watch_cache::watcher::{CacheWatcher, Start};
        let caches = self
            .options
            .watch_caches
            .as_ref()
            .ok_or_else(|| status(Reason::InternalError, "the watch cache is off"))?;
        let cache = caches.get::<K>();
        self.authorize(caller, Operation::Watch, &request.namespace, "")
            .await?;
        let open = caches.open_watch().ok_or_else(|| {
            status(
                Reason::Overloaded,
                format!(
                    "{} watches are open, the most this server allows (--max-watches); retry later",
                    caches.options().max_watches
                ),
            )
        })?;
        let selectors = Selectors::parse::<K>(&request.label_selector, &request.field_selector)?;
        let prefix = kind_prefix(Self::info(), &request.namespace);
        if !cache.ready(Duration::from_secs(10)).await {
            return Err(status(
                Reason::Unavailable,
                format!(
                    "the watch cache of {} is still filling; try again",
                    K::PLURAL
                ),
            ));
        }
        let start = match request.resource_version {
            0 => {
                let state = cache.read();
                let objects = state
                    .objects
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, o)| o.clone())
                    .collect();
                Start::Snapshot {
                    objects,
                    revision: state.revision,
                }
            }
            after => {
                // A version from a listing may be committed a moment before the store
                // announces it; only a version still ahead after that is refused.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while after > self.store.current_revision() {
                    if tokio::time::Instant::now() > deadline {
                        return Err(store_status(
                            StoreError::FutureRevision {
                                requested: after,
                                current: self.store.current_revision(),
                            },
                            K::PLURAL,
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let oldest = cache.read().oldest;
                if after < oldest {
                    return Err(status(
                        Reason::Expired,
                        format!(
                            "resource_version {after} is older than the watch cache's window of {} (it starts after {oldest}); list again and watch from the list's resource_version",
                            K::PLURAL
                        ),
                    ));
                }
                Start::After(after)
            }
        };
        let bookmarks = request
            .allow_bookmarks
            .then_some(self.options.bookmark_interval);
        Ok(CacheWatcher::new(
            cache,
            prefix,
            selectors,
            start,
            bookmarks,
            (self.options.metrics.watch_opened(K::KIND), open),
        )
        .into_stream())
    }

    /// Streams changes after `request.resource_version` (0: current objects as ADDED
    /// first) straight from the store, decoding and encoding each event for this
    /// watcher alone: the path of `--watch-cache=false`.
    pub async fn watch(
        &self,
        caller: &Caller,
        request: WatchRequest,
    ) -> Result<EventStream<K>, Status> {
        self.authorize(caller, Operation::Watch, &request.namespace, "")
            .await?;
        let selectors = Selectors::parse::<K>(&request.label_selector, &request.field_selector)?;
        let prefix = kind_prefix(Self::info(), &request.namespace);
        let (tx, rx) = mpsc::channel(256);
        let mut after = request.resource_version;
        let mut initial = Vec::new();
        if after == 0 {
            let page = self
                .store
                .list(&prefix, None, 0, 0)
                .await
                .map_err(|e| store_status(e, K::PLURAL))?;
            for kv in &page.items {
                let obj = Self::decode(kv)?;
                if selectors.matches(&obj) {
                    initial.push(K::make_event(WatchEventType::Added, obj));
                }
            }
            after = page.revision;
        }
        let progress = request
            .allow_bookmarks
            .then_some(self.options.bookmark_interval);
        let mut stream = self
            .store
            .watch(&prefix, after, progress)
            .await
            .map_err(|e| store_status(e, K::PLURAL))?;
        let shutdown = self.options.shutdown.clone();
        let open_watch = self.options.metrics.watch_opened(K::KIND);
        tokio::spawn(async move {
            let _open_watch = open_watch;
            for event in initial {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let item = tokio::select! {
                    () = shutdown.cancelled() => return,
                    item = stream.recv() => item,
                };
                let Some(item) = item else { return };
                let out = match item {
                    Ok(WatchItem::Event(event)) => match translate::<K>(&selectors, &event) {
                        Ok(Some(e)) => Ok(e),
                        Ok(None) => continue,
                        Err(s) => Err(s),
                    },
                    Ok(WatchItem::Progress(revision)) => {
                        let mut marker = K::default();
                        marker.meta_mut().resource_version = revision;
                        Ok(K::make_event(WatchEventType::Bookmark, marker))
                    }
                    Err(e) => Err(store_status(e, K::PLURAL)),
                };
                let stop = out.is_err();
                if tx.send(out).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Turns a store change into the event a selective watcher sees: objects moving into
/// the selection are ADDED, out of it DELETED.
fn translate<K: Kind>(
    selectors: &Selectors,
    event: &crate::store::StoreEvent,
) -> Result<Option<K::WatchEvent>, Status> {
    let filtered = !selectors.is_empty();
    let current = event
        .current
        .as_ref()
        .map(Registry::<K>::decode)
        .transpose()?;
    // The previous state only matters for deletions and for selectors (an object can
    // move into or out of the selection); otherwise its presence is enough.
    let previous = match (&event.previous, &current) {
        (Some(kv), None) => Some(Registry::<K>::decode(kv)?),
        (Some(kv), Some(_)) if filtered => Some(Registry::<K>::decode(kv)?),
        _ => None,
    };
    let existed = event.previous.is_some();
    let was = existed && previous.as_ref().is_none_or(|p| selectors.matches(p));
    let out = match (previous, current) {
        (_, Some(c)) => {
            let is = selectors.matches(&c);
            match (was, is) {
                (true, true) => Some((WatchEventType::Modified, c)),
                (false, true) => Some((WatchEventType::Added, c)),
                (true, false) => Some((WatchEventType::Deleted, c)),
                (false, false) => None,
            }
        }
        (Some(mut p), None) if was => {
            p.meta_mut().resource_version = event.revision;
            Some((WatchEventType::Deleted, p))
        }
        _ => None,
    };
    Ok(out.map(|(kind, obj)| K::make_event(kind, obj)))
}
