//! An in-memory cache of one kind, fed by a [`crate::watcher`] stream. Readers get
//! cheap snapshots (`Arc`s); one writer applies events.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use hypermesh_api::Resource;
use tokio::sync::watch;

use crate::watcher::Event;

/// `(namespace, name)` of an object.
pub type ObjectKey = (String, String);

/// The key of `obj`.
pub fn key_of<K: Resource>(obj: &K) -> ObjectKey {
    (obj.meta().namespace.clone(), obj.meta().name.clone())
}

/// A shared, read-only view of the cache.
#[derive(Debug)]
pub struct Store<K> {
    objects: Arc<RwLock<HashMap<ObjectKey, Arc<K>>>>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Resource> Store<K> {
    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.objects
            .read()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.objects
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.objects.read().map(|m| m.len()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once a listing has been applied (and not marked stale since).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first listing has been applied.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }
}

/// The writing half: applies watcher events to the cache.
#[derive(Debug)]
pub struct Writer<K> {
    objects: Arc<RwLock<HashMap<ObjectKey, Arc<K>>>>,
    ready: watch::Sender<bool>,
}

/// A new empty cache: the writer and a reader.
pub fn store<K: Resource>() -> (Writer<K>, Store<K>) {
    let objects = Arc::new(RwLock::new(HashMap::new()));
    let (ready_tx, ready_rx) = watch::channel(false);
    (
        Writer {
            objects: objects.clone(),
            ready: ready_tx,
        },
        Store {
            objects,
            ready: ready_rx,
        },
    )
}

impl<K: Resource> Writer<K> {
    /// Marks the cache as not listed yet (a new watch starts): readers waiting with
    /// [`Store::wait_ready`] wait for its first listing. The objects stay until it
    /// replaces them.
    pub fn mark_stale(&self) {
        self.ready.send_replace(false);
    }

    /// Applies one event.
    pub fn apply(&self, event: &Event<K>) {
        let Ok(mut objects) = self.objects.write() else {
            return;
        };
        match event {
            Event::Restarted(items) => {
                *objects = items
                    .iter()
                    .map(|o| (key_of(o), Arc::new(o.clone())))
                    .collect();
                self.ready.send_replace(true);
            }
            Event::Applied(o) => {
                objects.insert(key_of(o), Arc::new(o.clone()));
            }
            Event::Deleted(o) => {
                objects.remove(&key_of(o));
            }
        }
    }
}

/// Passes `events` through, applying each to `writer` first.
pub fn reflector<K: Resource, E>(
    writer: Writer<K>,
    events: impl Stream<Item = Result<Event<K>, E>>,
) -> impl Stream<Item = Result<Event<K>, E>> {
    events.map(move |item| {
        if let Ok(event) = &item {
            writer.apply(event);
        }
        item
    })
}
