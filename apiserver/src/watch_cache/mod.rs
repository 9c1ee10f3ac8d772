//! The watch cache: one store watch per kind per apiserver, whose changes every
//! watcher of that kind reads from memory (like kube-apiserver's cacher), so 10,000
//! watchers cost one store watch, and each change is decoded once and encoded once
//! per event type — the bytes are shared by every watcher that receives them.
//!
//! A [`Cache`] keeps the current objects of its kind (for a watch from version 0,
//! which starts with ADDED events) and a window of recent changes bounded by bytes
//! ([`WatchCacheOptions::window_bytes`]); a watch resumes from any version inside the
//! window and gets `OUT_OF_RANGE` (reason `Expired`) before it, so the client lists
//! again. Watchers hold no buffer of their own: each is a position in the shared
//! window ([`watcher`]), and one that falls more than
//! [`WatchCacheOptions::lag_bytes`] behind is closed with `RESOURCE_EXHAUSTED`
//! (reason `WatchTooSlow`). [`grpc`] sends the shared bytes as they are.
//! [`trigger`] indexes the window by one field, so a watcher of one node's Instances
//! reads and wakes on that node's changes only.

pub mod grpc;
pub mod trigger;
pub mod watcher;

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::Duration;

use bytes::Bytes;
use hypermesh_api::v1::WatchEventType;
use prost::Message;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::admission::Kind;
use crate::store::{KeyValue, Store, StoreError, StoreEvent, WatchItem};
use trigger::TriggerIndex;

/// How often the store reports progress to a cache (for bookmarks).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Pause before a cache whose store watch broke lists again.
const RESTART_DELAY: Duration = Duration::from_millis(500);
/// Keys per store page while a cache fills.
const FILL_PAGE: usize = 500;
/// What an entry costs beyond its objects (key, revision, pointers), as counted.
const ENTRY_OVERHEAD: usize = 256;

/// Tuning of the watch cache (`--watch-cache`, `--watch-cache-window-mib`, …).
#[derive(Debug, Clone)]
pub struct WatchCacheOptions {
    /// Serve watches from the cache; off, every watch reads the store itself.
    pub enabled: bool,
    /// Bytes of recent changes each kind keeps for watchers to read and resume from.
    pub window_bytes: usize,
    /// Bytes of changes a watcher may fall behind (after it started) before it is
    /// closed with `RESOURCE_EXHAUSTED`.
    pub lag_bytes: usize,
    /// Watches open at once across every kind; more get `RESOURCE_EXHAUSTED`.
    pub max_watches: usize,
}

impl Default for WatchCacheOptions {
    fn default() -> Self {
        WatchCacheOptions {
            enabled: true,
            window_bytes: 8 * 1024 * 1024,
            lag_bytes: 8 * 1024 * 1024,
            max_watches: 20_000,
        }
    }
}

/// One object as the cache holds it: decoded once, encoded at most once per event
/// type, shared by the current state, the window and every watcher.
pub struct Object<K> {
    /// The object, with `metadata.resource_version` set.
    pub obj: K,
    /// Bytes counted for it (stored size, decoded and encoded copies).
    charge: usize,
    added: OnceLock<Bytes>,
    modified: OnceLock<Bytes>,
    gone: OnceLock<Bytes>,
}

impl<K: Kind> Object<K> {
    fn decode(kv: &KeyValue) -> Result<Self, prost::DecodeError> {
        let mut obj = K::decode(kv.value.as_slice())?;
        obj.meta_mut().resource_version = kv.mod_revision;
        Ok(Object {
            obj,
            // The stored bytes, and about as much again for each decoded copy.
            charge: 3 * kv.value.len(),
            added: OnceLock::new(),
            modified: OnceLock::new(),
            gone: OnceLock::new(),
        })
    }

    /// The size of the object as stored.
    pub fn stored_bytes(&self) -> usize {
        self.charge / 3
    }

    /// The `<Kind>WatchEvent` of this object with `kind`, encoded once.
    pub fn encoded(&self, kind: WatchEventType) -> Bytes {
        let cell = match kind {
            WatchEventType::Added => &self.added,
            WatchEventType::Deleted => &self.gone,
            _ => &self.modified,
        };
        cell.get_or_init(|| encode_event::<K>(kind, self.obj.clone()))
            .clone()
    }
}

fn encode_event<K: Kind>(kind: WatchEventType, obj: K) -> Bytes {
    Bytes::from(K::make_event(kind, obj).encode_to_vec())
}

/// One change in the window.
pub struct Entry<K> {
    /// The store revision of the change.
    pub revision: u64,
    /// The key changed.
    pub key: String,
    /// The state after the change; `None` when the object was deleted.
    pub current: Option<Arc<Object<K>>>,
    /// The state before; `None` when the object was created.
    pub previous: Option<Arc<Object<K>>>,
    deleted: OnceLock<Bytes>,
    /// The values of the indexed field ([`trigger`]) of `previous` and `current`.
    pub triggers: Vec<String>,
    /// Bytes counted for the window up to and including this entry.
    pub offset: u64,
    /// Bytes counted for this entry.
    charge: usize,
}

impl<K: Kind> Entry<K> {
    /// DELETED with the last state, at the deletion's revision.
    pub fn deleted(&self) -> Option<Bytes> {
        let previous = self.previous.as_ref()?;
        Some(
            self.deleted
                .get_or_init(|| {
                    let mut obj = previous.obj.clone();
                    obj.meta_mut().resource_version = self.revision;
                    encode_event::<K>(WatchEventType::Deleted, obj)
                })
                .clone(),
        )
    }

    /// The event every unfiltered watcher gets.
    pub fn plain(&self) -> Option<Bytes> {
        match (&self.previous, &self.current) {
            (_, None) => self.deleted(),
            (None, Some(c)) => Some(c.encoded(WatchEventType::Added)),
            (Some(_), Some(c)) => Some(c.encoded(WatchEventType::Modified)),
        }
    }
}

/// What a cache holds, behind one lock.
pub struct State<K> {
    /// Current objects by key.
    pub objects: BTreeMap<String, Arc<Object<K>>>,
    /// Recent changes, oldest first.
    pub events: VecDeque<Arc<Entry<K>>>,
    /// Bytes counted in `events`.
    bytes: usize,
    /// Bytes ever appended (entry offsets count from here).
    pub total: u64,
    /// Every change after this revision is in `events`.
    pub oldest: u64,
    /// The cache has applied every change up to this revision.
    pub revision: u64,
    /// False until the first fill and while refilling after a broken store watch.
    pub ready: bool,
    /// The server is shutting down: watchers end.
    pub closed: bool,
    /// The window's entries by the value of the kind's indexed field.
    pub triggers: TriggerIndex<K>,
}

impl<K> State<K> {
    /// Index of the first entry after `revision`.
    pub fn after(&self, revision: u64) -> usize {
        self.events.partition_point(|e| e.revision <= revision)
    }
}

/// The cache of one kind.
pub struct Cache<K> {
    state: RwLock<State<K>>,
    /// Bumped (to the cache revision) whenever entries are appended: what watchers
    /// wait on.
    head: watch::Sender<u64>,
    /// The cache revision, bumped on every change and progress report alike: what a
    /// List waiting for the cache to catch up waits on (progress alone does not wake
    /// the watchers).
    revision: watch::Sender<u64>,
    options: WatchCacheOptions,
    prefix: String,
}

/// The state's locks, and what needs no knowledge of the kind (a watcher's drop).
impl<K> Cache<K> {
    /// Reads the state.
    pub fn read(&self) -> RwLockReadGuard<'_, State<K>> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State<K>> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets `value`'s log if no watcher waits on it any more and it is empty.
    pub fn release_value(&self, value: &str) {
        self.write().triggers.release(value);
    }
}

impl<K: Kind> Cache<K> {
    fn new(prefix: String, options: WatchCacheOptions) -> Self {
        Cache {
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                events: VecDeque::new(),
                bytes: 0,
                total: 0,
                oldest: 0,
                revision: 0,
                ready: false,
                closed: false,
                triggers: TriggerIndex::new(trigger::indexed_field(K::KIND)),
            }),
            head: watch::channel(0).0,
            revision: watch::channel(0).0,
            options,
            prefix,
        }
    }

    /// Wakes when entries are appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Wakes when entries touching `value` of the indexed field are appended (or the
    /// window is dropped, or the cache closes); with the bytes its log holds so far.
    pub fn subscribe_value(&self, value: &str) -> (watch::Receiver<u64>, u64) {
        let mut state = self.write();
        let oldest = state.oldest;
        state.triggers.subscribe(value, oldest)
    }

    /// The cache's tuning.
    pub fn options(&self) -> &WatchCacheOptions {
        &self.options
    }

    /// Waits until the cache has filled once (or `deadline` passes).
    pub async fn ready(&self, deadline: Duration) -> bool {
        self.reached(0, deadline).await
    }

    /// Whether the cache is ready and has applied every change up to `revision`.
    pub fn has_reached(&self, revision: u64) -> bool {
        let state = self.read();
        state.ready && state.revision >= revision
    }

    /// Waits until [`Cache::has_reached`] `revision` (or `deadline` passes). Returns
    /// whether it has.
    pub async fn reached(&self, revision: u64, deadline: Duration) -> bool {
        // Subscribe before looking, so a change after the look wakes the wait.
        let mut changes = self.revision.subscribe();
        let wait = async {
            while !self.has_reached(revision) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.has_reached(revision)
    }

    /// Keeps the cache current until `shutdown`: fill, follow, fill again on breaks.
    async fn run(self: Arc<Self>, store: Arc<dyn Store>, shutdown: CancellationToken) {
        self.keep_current(store, &shutdown).await;
        let revision = {
            let mut state = self.write();
            state.closed = true;
            state.triggers.wake_all(state.revision);
            state.revision
        };
        self.head.send_replace(revision);
        self.revision.send_replace(revision);
    }

    async fn keep_current(&self, store: Arc<dyn Store>, shutdown: &CancellationToken) {
        loop {
            match self.follow(store.as_ref(), shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    warn!(prefix = %self.prefix, error = %e, "watch cache: store watch broke; filling again")
                }
            }
            self.write().ready = false;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RESTART_DELAY) => {}
            }
        }
    }

    async fn follow(
        &self,
        store: &dyn Store,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        let mut objects = BTreeMap::new();
        let mut revision = 0;
        let mut start_after: Option<String> = None;
        loop {
            let page = store
                .list(&self.prefix, start_after.as_deref(), FILL_PAGE, revision)
                .await?;
            revision = page.revision;
            for kv in &page.items {
                match Object::<K>::decode(kv) {
                    Ok(o) => {
                        objects.insert(kv.key.clone(), Arc::new(o));
                    }
                    Err(e) => {
                        warn!(key = %kv.key, error = %e, "watch cache: stored object does not decode")
                    }
                }
            }
            match page.items.last() {
                Some(last) if page.more => start_after = Some(last.key.clone()),
                _ => break,
            }
        }
        let mut stream = store
            .watch(&self.prefix, revision, Some(PROGRESS_EVERY))
            .await?;
        {
            let mut state = self.write();
            state.objects = objects;
            state.events.clear();
            state.bytes = 0;
            state.oldest = revision;
            state.revision = revision;
            state.ready = true;
            state.triggers.reset(revision);
        }
        debug!(prefix = %self.prefix, revision, "watch cache filled");
        self.head.send_replace(revision);
        self.revision.send_replace(revision);
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                item = stream.recv() => item,
            };
            let mut batch = vec![item];
            while batch.len() < 256 {
                match stream.try_recv() {
                    Ok(item) => batch.push(Some(item)),
                    Err(_) => break,
                }
            }
            let (revision, appended) = {
                let mut state = self.write();
                let mut appended = false;
                for item in batch {
                    match item {
                        None => return Err(StoreError::Backend("store watch ended".into())),
                        Some(Err(e)) => return Err(e),
                        Some(Ok(WatchItem::Event(event))) => {
                            self.apply(&mut state, &event);
                            appended = true;
                        }
                        Some(Ok(WatchItem::Progress(r))) => {
                            state.revision = state.revision.max(r);
                        }
                    }
                }
                let revision = state.revision;
                state.triggers.wake_touched(revision);
                (revision, appended)
            };
            if appended {
                self.head.send_replace(revision);
            }
            self.revision.send_replace(revision);
        }
    }

    fn apply(&self, state: &mut State<K>, event: &StoreEvent) {
        let decode = |kv: &KeyValue| match Object::<K>::decode(kv) {
            Ok(o) => Some(Arc::new(o)),
            Err(e) => {
                warn!(key = %kv.key, error = %e, "watch cache: stored object does not decode");
                None
            }
        };
        let previous = event
            .previous
            .as_ref()
            .and_then(|kv| match state.objects.get(&event.key) {
                Some(o) if o.obj.meta().resource_version == kv.mod_revision => Some(o.clone()),
                _ => decode(kv),
            });
        let current = event.current.as_ref().and_then(decode);
        let triggers = state
            .triggers
            .values_of(previous.as_ref(), current.as_ref());
        match &current {
            Some(c) => state.objects.insert(event.key.clone(), c.clone()),
            None => state.objects.remove(&event.key),
        };
        let mut entry = Entry {
            revision: event.revision,
            key: event.key.clone(),
            current,
            previous,
            deleted: OnceLock::new(),
            triggers,
            offset: 0,
            charge: 0,
        };
        // Encode the common event now, once, on the cache's task.
        let plain = entry.plain().map_or(0, |b| b.len());
        let charge = ENTRY_OVERHEAD
            + plain
            + entry.key.len()
            + entry.triggers.iter().map(String::len).sum::<usize>()
            + entry.current.as_ref().map_or(0, |o| o.charge)
            + entry.previous.as_ref().map_or(0, |o| o.charge);
        state.total += charge as u64;
        entry.offset = state.total;
        entry.charge = charge;
        let entry = Arc::new(entry);
        let oldest = state.oldest;
        state.triggers.append(&entry, oldest);
        state.events.push_back(entry);
        state.bytes += charge;
        state.revision = state.revision.max(event.revision);
        while state.bytes > self.options.window_bytes && state.events.len() > 1 {
            if let Some(old) = state.events.pop_front() {
                state.bytes -= old.charge;
                state.oldest = old.revision;
                state.triggers.evict(&old);
            }
        }
    }
}

/// Every kind's cache in one apiserver, started on first use.
pub struct WatchCaches {
    store: Arc<dyn Store>,
    options: WatchCacheOptions,
    shutdown: CancellationToken,
    caches: Mutex<HashMap<&'static str, Arc<dyn Any + Send + Sync>>>,
    open: Arc<AtomicUsize>,
}

/// One open watch, counted against [`WatchCacheOptions::max_watches`] until dropped.
#[derive(Debug)]
pub struct OpenWatch(Arc<AtomicUsize>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for WatchCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCaches")
            .field("options", &self.options)
            .finish()
    }
}

impl WatchCaches {
    /// Caches over `store`, running until `shutdown`.
    pub fn new(
        store: Arc<dyn Store>,
        options: WatchCacheOptions,
        shutdown: CancellationToken,
    ) -> Self {
        WatchCaches {
            store,
            options,
            shutdown,
            caches: Mutex::new(HashMap::new()),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Counts a new watch, or refuses it when `max_watches` are open.
    pub fn open_watch(&self) -> Option<OpenWatch> {
        let max = self.options.max_watches;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| OpenWatch(self.open.clone()))
    }

    /// The tuning every cache shares.
    pub fn options(&self) -> &WatchCacheOptions {
        &self.options
    }

    /// The cache of kind `K`, started (filling in the background) if it was not.
    pub fn get<K: Kind>(&self) -> Arc<Cache<K>> {
        let mut caches = self
            .caches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cache) = caches
            .get(K::KIND)
            .and_then(|c| c.clone().downcast::<Cache<K>>().ok())
        {
            return cache;
        }
        let info = hypermesh_api::resource::find_kind(K::KIND)
            .unwrap_or_else(|| unreachable!("every Resource is in KIND_INFOS"));
        let cache = Arc::new(Cache::<K>::new(
            crate::object::kind_prefix(info, ""),
            self.options.clone(),
        ));
        caches.insert(K::KIND, cache.clone());
        tokio::spawn(
            cache
                .clone()
                .run(self.store.clone(), self.shutdown.child_token()),
        );
        cache
    }
}
