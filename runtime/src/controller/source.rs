//! Where a controller's work comes from: [`Watched`] kinds (a watcher feeding a
//! reflector cache that outlives restarts of the controller), the feeds that turn
//! their events into keys on the work queue, and [`Trigger`]s other code pokes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use hypermesh_api::{Api, Resource};
use tracing::warn;

use crate::queue::WorkQueue;
use crate::reflector::{self, ObjectKey, Store, Writer, key_of};
use crate::watcher::{self, Event, WatcherError};

type Projection<K> = Arc<dyn Fn(K) -> K + Send + Sync>;

/// One kind a controller watches: what to watch, and the cache the watch keeps.
/// The cache is created once, so handles taken with [`Watched::store`] stay valid
/// across leader changes and restarts (each run re-lists into it).
pub struct Watched<K: Resource> {
    api: Api<K>,
    config: watcher::Config,
    projection: Option<Projection<K>>,
    writer: Arc<Writer<K>>,
    store: Store<K>,
}

impl<K: Resource> Clone for Watched<K> {
    fn clone(&self) -> Self {
        Watched {
            api: self.api.clone(),
            config: self.config.clone(),
            projection: self.projection.clone(),
            writer: self.writer.clone(),
            store: self.store.clone(),
        }
    }
}

impl<K: Resource> std::fmt::Debug for Watched<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("kind", &K::KIND)
            .field("config", &self.config)
            .finish()
    }
}

impl<K: Resource> Watched<K> {
    /// Objects of kind `K` selected by `config`.
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        let (writer, store) = reflector::store();
        Watched {
            api,
            config,
            projection: None,
            writer: Arc::new(writer),
            store,
        }
    }

    /// Every object of kind `K`.
    pub fn all(api: Api<K>) -> Self {
        Self::new(api, watcher::Config::default())
    }

    /// Also files each cached object under `key`'s value, for
    /// [`Store::indexed`](crate::reflector::Store::indexed). Call it before taking
    /// [`Watched::store`] handles: it starts a new, empty cache.
    pub fn indexed_by(mut self, key: reflector::IndexKey<K>) -> Self {
        let (writer, store) = reflector::store_indexed(key);
        self.writer = Arc::new(writer);
        self.store = store;
        self
    }

    /// Keeps only what `projection` returns of each object in the cache (e.g. the
    /// metadata alone, for a controller that reads nothing else).
    pub fn project(mut self, projection: impl Fn(K) -> K + Send + Sync + 'static) -> Self {
        self.projection = Some(Arc::new(projection));
        self
    }

    /// The cache (read-only), filled while the controller runs.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A fresh watch whose events are projected and applied to the cache.
    fn events(&self) -> impl Stream<Item = Result<Event<K>, WatcherError>> + Send + use<K> {
        let projection = self.projection.clone();
        let writer = self.writer.clone();
        watcher::watcher(self.api.clone(), self.config.clone()).map(move |item| {
            let item = match (&projection, item) {
                (Some(project), Ok(event)) => Ok(match event {
                    Event::Restarted(all) => {
                        Event::Restarted(all.into_iter().map(|o| project(o)).collect())
                    }
                    Event::Applied(o) => Event::Applied(project(o)),
                    Event::Deleted(o) => Event::Deleted(project(o)),
                }),
                (_, item) => item,
            };
            if let Ok(event) = &item {
                writer.apply(event);
            }
            item
        })
    }
}

/// A change seen on a secondary kind, handed to a mapper.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a, C> {
    /// Created or updated (also every object of a fresh listing).
    Applied(&'a C),
    /// Deleted (its last state).
    Deleted(&'a C),
}

impl<'a, C> Change<'a, C> {
    /// The object, whatever happened to it.
    pub fn object(&self) -> &'a C {
        match self {
            Change::Applied(o) | Change::Deleted(o) => o,
        }
    }
}

/// A source of keys for one run of a controller.
pub(super) trait Feed: Send + Sync {
    /// The kind watched, for logs.
    fn kind(&self) -> &'static str;
    /// Watches until dropped, applying events to the cache and queueing keys.
    fn run(&self, queue: WorkQueue<ObjectKey>) -> BoxFuture<'static, ()>;
    /// Resolves once the cache holds a listing made in this run.
    fn ready(&self) -> BoxFuture<'static, ()>;
    /// Marks the cache as not yet listed in this run.
    fn mark_stale(&self);
}

/// A hook called with the last state of a deleted primary object.
pub(super) type OnDelete<K> = Arc<dyn Fn(&K) + Send + Sync>;

/// The primary kind: each object's own key.
pub(super) struct PrimaryFeed<K: Resource> {
    pub(super) watched: Watched<K>,
    pub(super) on_delete: Option<OnDelete<K>>,
}

fn log_watch_error(kind: &str, err: &WatcherError) {
    warn!(kind, error = %err, "watch failed; retrying");
}

impl<K: Resource> Feed for PrimaryFeed<K> {
    fn kind(&self) -> &'static str {
        K::KIND
    }

    fn run(&self, queue: WorkQueue<ObjectKey>) -> BoxFuture<'static, ()> {
        let events = self.watched.events();
        let on_delete = self.on_delete.clone();
        async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(Event::Restarted(all)) => all.iter().for_each(|o| queue.add(key_of(o))),
                    Ok(Event::Applied(o)) => queue.add(key_of(&o)),
                    Ok(Event::Deleted(o)) => {
                        queue.forget(&key_of(&o));
                        if let Some(hook) = &on_delete {
                            hook(&o);
                        }
                    }
                    Err(err) => log_watch_error(K::KIND, &err),
                }
            }
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'static, ()> {
        let store = self.watched.store();
        async move { store.wait_ready().await }.boxed()
    }

    fn mark_stale(&self) {
        self.watched.writer.mark_stale();
    }
}

type Mapper<C> = Arc<dyn Fn(Change<'_, C>) -> Vec<ObjectKey> + Send + Sync>;

/// A secondary kind: its changes map to keys of the primary kind.
pub(super) struct MappedFeed<C: Resource> {
    pub(super) watched: Watched<C>,
    pub(super) mapper: Mapper<C>,
}

impl<C: Resource> Feed for MappedFeed<C> {
    fn kind(&self) -> &'static str {
        C::KIND
    }

    fn run(&self, queue: WorkQueue<ObjectKey>) -> BoxFuture<'static, ()> {
        let events = self.watched.events();
        let mapper = self.mapper.clone();
        async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let keys = match &event {
                    Ok(Event::Restarted(all)) => all
                        .iter()
                        .flat_map(|o| mapper(Change::Applied(o)))
                        .collect(),
                    Ok(Event::Applied(o)) => mapper(Change::Applied(o)),
                    Ok(Event::Deleted(o)) => mapper(Change::Deleted(o)),
                    Err(err) => {
                        log_watch_error(C::KIND, err);
                        Vec::new()
                    }
                };
                keys.into_iter().for_each(|k| queue.add(k));
            }
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'static, ()> {
        let store = self.watched.store();
        async move { store.wait_ready().await }.boxed()
    }

    fn mark_stale(&self) {
        self.watched.writer.mark_stale();
    }
}

/// The key of the object of kind `K` that controls `object` (its controller owner
/// reference), if any: in `object`'s namespace when `K` is namespaced.
pub fn controller_key<K: Resource, C: Resource>(object: &C) -> Option<ObjectKey> {
    let owner = object
        .meta()
        .owner_references
        .iter()
        .find(|r| r.controller && r.kind == K::KIND)?;
    let namespace = if K::NAMESPACED {
        object.meta().namespace.clone()
    } else {
        String::new()
    };
    Some((namespace, owner.name.clone()))
}

/// Queues keys on a controller from outside (another controller, a hook): whatever
/// is triggered while the controller is not running is dropped, since every run
/// starts by reconciling everything anyway.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    queue: Arc<Mutex<Option<WorkQueue<ObjectKey>>>>,
}

impl Trigger {
    /// A trigger not yet attached to a controller.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self) -> MutexGuard<'_, Option<WorkQueue<ObjectKey>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` for a reconcile.
    pub fn trigger(&self, key: ObjectKey) {
        if let Some(queue) = self.slot().as_ref() {
            queue.add(key);
        }
    }

    pub(super) fn attach(&self, queue: WorkQueue<ObjectKey>) {
        *self.slot() = Some(queue);
    }

    pub(super) fn detach(&self) {
        *self.slot() = None;
    }
}
