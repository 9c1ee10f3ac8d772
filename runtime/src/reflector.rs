//! An in-memory cache of one kind, fed by a [`crate::watcher`] stream. Readers get
//! cheap snapshots (`Arc`s); one writer applies events.

use std::collections::{HashMap, HashSet};
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

/// What secondary key a [`store_indexed`] cache files each object under (`None`: not
/// filed), e.g. the uid of an Instance's controlling Workload.
pub type IndexKey<K> = fn(&K) -> Option<String>;

/// The objects, and the optional secondary index, behind one lock.
#[derive(Debug)]
struct Cached<K> {
    objects: HashMap<ObjectKey, Arc<K>>,
    index: Option<Index<K>>,
}

/// A secondary index (client-go's indexer): who has each key, so a controller reads
/// the objects of one owner without scanning every object of the kind.
#[derive(Debug)]
struct Index<K> {
    key: IndexKey<K>,
    keyed: HashMap<String, HashSet<ObjectKey>>,
}

impl<K> Index<K> {
    fn add(&mut self, obj: &K, at: &ObjectKey) {
        if let Some(key) = (self.key)(obj) {
            self.keyed.entry(key).or_default().insert(at.clone());
        }
    }

    fn remove(&mut self, obj: &K, at: &ObjectKey) {
        if let Some(key) = (self.key)(obj)
            && let Some(keys) = self.keyed.get_mut(&key)
        {
            keys.remove(at);
            if keys.is_empty() {
                self.keyed.remove(&key);
            }
        }
    }
}

type Shared<K> = Arc<RwLock<Cached<K>>>;

/// A shared, read-only view of the cache.
#[derive(Debug)]
pub struct Store<K> {
    cached: Shared<K>,
    ready: watch::Receiver<bool>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            cached: self.cached.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Resource> Store<K> {
    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.cached
            .read()
            .ok()?
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.cached
            .read()
            .map(|c| c.objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects filed under `key` by the cache's index ([`store_indexed`]); none
    /// when the cache has no index.
    pub fn indexed(&self, key: &str) -> Vec<Arc<K>> {
        let Ok(cached) = self.cached.read() else {
            return Vec::new();
        };
        let Some(keys) = cached.index.as_ref().and_then(|i| i.keyed.get(key)) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|at| cached.objects.get(at).cloned())
            .collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.cached.read().map(|c| c.objects.len()).unwrap_or(0)
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
    cached: Shared<K>,
    ready: watch::Sender<bool>,
}

/// A new empty cache: the writer and a reader.
pub fn store<K: Resource>() -> (Writer<K>, Store<K>) {
    with_index(None)
}

/// A new empty cache that also files each object under `key`'s value, for
/// [`Store::indexed`].
pub fn store_indexed<K: Resource>(key: IndexKey<K>) -> (Writer<K>, Store<K>) {
    with_index(Some(Index {
        key,
        keyed: HashMap::new(),
    }))
}

fn with_index<K: Resource>(index: Option<Index<K>>) -> (Writer<K>, Store<K>) {
    let cached = Arc::new(RwLock::new(Cached {
        objects: HashMap::new(),
        index,
    }));
    let (ready_tx, ready_rx) = watch::channel(false);
    (
        Writer {
            cached: cached.clone(),
            ready: ready_tx,
        },
        Store {
            cached,
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
        let Ok(mut cached) = self.cached.write() else {
            return;
        };
        let Cached { objects, index } = &mut *cached;
        match event {
            Event::Restarted(items) => {
                *objects = items
                    .iter()
                    .map(|o| (key_of(o), Arc::new(o.clone())))
                    .collect();
                if let Some(index) = index {
                    index.keyed.clear();
                    for (at, obj) in objects.iter() {
                        index.add(obj.as_ref(), at);
                    }
                }
                self.ready.send_replace(true);
            }
            Event::Applied(o) => {
                let at = key_of(o);
                let old = objects.insert(at.clone(), Arc::new(o.clone()));
                if let Some(index) = index {
                    if let Some(old) = old {
                        index.remove(old.as_ref(), &at);
                    }
                    index.add(o, &at);
                }
            }
            Event::Deleted(o) => {
                let at = key_of(o);
                if let (Some(old), Some(index)) = (objects.remove(&at), index) {
                    index.remove(old.as_ref(), &at);
                }
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

#[cfg(test)]
mod tests {
    use hypermesh_api::v1::{ObjectMeta, Workload};

    use super::*;

    fn labelled(name: &str, team: &str) -> Workload {
        Workload {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                labels: [("team".to_string(), team.to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn names(mut objects: Vec<Arc<Workload>>) -> Vec<String> {
        objects.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        objects.iter().map(|o| o.meta().name.clone()).collect()
    }

    fn team(w: &Workload) -> Option<String> {
        w.meta().labels.get("team").cloned()
    }

    #[test]
    fn the_index_follows_every_change() {
        let (writer, store) = store_indexed::<Workload>(team);
        writer.apply(&Event::Restarted(vec![
            labelled("a", "red"),
            labelled("b", "red"),
            labelled("c", "blue"),
        ]));
        assert_eq!(names(store.indexed("red")), ["a", "b"]);
        writer.apply(&Event::Applied(labelled("b", "blue")));
        assert_eq!(
            names(store.indexed("red")),
            ["a"],
            "moved out of its old key"
        );
        assert_eq!(names(store.indexed("blue")), ["b", "c"]);
        writer.apply(&Event::Deleted(labelled("c", "blue")));
        assert_eq!(names(store.indexed("blue")), ["b"]);
        writer.apply(&Event::Deleted(labelled("a", "red")));
        assert!(store.indexed("red").is_empty());
        writer.apply(&Event::Restarted(vec![labelled("d", "red")]));
        assert_eq!(
            names(store.indexed("red")),
            ["d"],
            "a new listing replaces the index"
        );
        assert!(store.indexed("blue").is_empty());
    }

    #[test]
    fn a_store_without_an_index_files_nothing() {
        let (writer, store) = super::store::<Workload>();
        writer.apply(&Event::Applied(labelled("a", "red")));
        assert!(store.indexed("red").is_empty());
        assert_eq!(store.len(), 1);
    }
}
