//! One watcher of a [`Cache`]: a position in the shared window, no buffer of its own.
//! It yields the shared encoded bytes of each change its namespace and selectors
//! let through (translating moves into and out of a selection into ADDED/DELETED),
//! BOOKMARKs when caught up, and closes with a status when the window moved past it.
//! It waits on one channel only (shutdown closes the cache), so 10,000 idle watchers
//! register one waker each and nothing else: the cache's head, or, for a watcher that
//! selects one value of the kind's indexed field, that value's log ([`super::trigger`]),
//! which it then reads instead of the whole window.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::WatchEventType;
use tokio::sync::watch;
use tonic::Status;

use super::trigger::TriggerLog;
use super::{Cache, Entry, Object, State, encode_event};
use crate::admission::Kind;
use crate::metrics::WatchGuard;
use crate::selectors::Selectors;

/// Where a watcher starts.
pub enum Start<K> {
    /// With ADDED events for these objects (a snapshot at `revision`), then changes.
    Snapshot {
        /// The objects.
        objects: Vec<Arc<Object<K>>>,
        /// The snapshot's revision.
        revision: u64,
    },
    /// Changes strictly after this revision.
    After(u64),
}

/// One watcher's state.
pub struct CacheWatcher<K> {
    cache: Arc<Cache<K>>,
    prefix: String,
    selectors: Selectors,
    /// Last revision consumed.
    position: u64,
    /// Bytes counted (of the window, or of the trigger's log) when the watcher started
    /// or last consumed an entry.
    consumed: u64,
    initial: std::vec::IntoIter<Arc<Object<K>>>,
    /// The value of the indexed field this watcher selects: it reads and waits on
    /// that value's log, not the whole window.
    trigger: Option<String>,
    /// What wakes the watcher: the cache's head, or the trigger's log.
    head: watch::Receiver<u64>,
    bookmarks: Option<tokio::time::Interval>,
    done: bool,
    _guard: (WatchGuard, super::OpenWatch),
}

/// The stream gRPC sends.
pub type EncodedStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

impl<K: Kind> CacheWatcher<K> {
    /// A watcher of `cache` under `prefix`, from `start`.
    pub(crate) fn new(
        cache: Arc<Cache<K>>,
        prefix: String,
        selectors: Selectors,
        start: Start<K>,
        bookmark_interval: Option<Duration>,
        guard: (WatchGuard, super::OpenWatch),
    ) -> Self {
        let (initial, position) = match start {
            Start::Snapshot { objects, revision } => (objects, revision),
            Start::After(revision) => (Vec::new(), revision),
        };
        let trigger = cache
            .read()
            .triggers
            .field()
            .and_then(|field| selectors.required_field(field))
            .map(str::to_string);
        // Only what is appended after the start counts against the lag limit.
        let (head, consumed) = match &trigger {
            Some(value) => cache.subscribe_value(value),
            None => (cache.subscribe(), cache.read().total),
        };
        let bookmarks = bookmark_interval.map(|every| {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        });
        CacheWatcher {
            cache,
            prefix,
            selectors,
            position,
            consumed,
            initial: initial.into_iter(),
            trigger,
            head,
            bookmarks,
            done: false,
            _guard: guard,
        }
    }

    /// The watcher as a stream of encoded events.
    pub fn into_stream(self) -> EncodedStream {
        Box::pin(futures::stream::unfold(self, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        }))
    }

    async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        if self.done {
            return None;
        }
        for object in self.initial.by_ref() {
            if self.selectors.matches(&object.obj) {
                return Some(Ok(object.encoded(WatchEventType::Added)));
            }
        }
        loop {
            // Mark the head seen before looking, so an append after the look wakes us.
            self.head.borrow_and_update();
            let next = {
                let cache = self.cache.clone();
                let state = cache.read();
                let next = match &self.trigger {
                    None => self.read_window(&state),
                    Some(value) => {
                        let value = value.clone();
                        self.read_log(&state, state.triggers.log(&value))
                    }
                };
                if next.is_err() {
                    self.done = true;
                }
                next
            };
            match next {
                Err(status) => return Some(Err(status)),
                Ok(Some(bytes)) => return Some(Ok(bytes)),
                Ok(None) if self.done => return None,
                Ok(None) => {
                    let bookmark = async {
                        match &mut self.bookmarks {
                            Some(t) => {
                                t.tick().await;
                            }
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        changed = self.head.changed() => {
                            if changed.is_err() {
                                self.done = true;
                                return None;
                            }
                        }
                        () = bookmark => {
                            let revision = self.cache.read().revision.max(self.position);
                            let mut marker = K::default();
                            marker.meta_mut().resource_version = revision;
                            return Some(Ok(encode_event::<K>(WatchEventType::Bookmark, marker)));
                        }
                    }
                }
            }
        }
    }

    /// The next event for this watcher among the window's entries it has not seen,
    /// under one read of the state: with thousands of selective watchers most entries
    /// are not theirs, and a lock, a search and a clone per entry was most of the
    /// apiserver's CPU at 10,000 nodes (docs/scaling.md). `None` when caught up, or the
    /// cache closed (then `done` is set).
    fn read_window(&mut self, state: &State<K>) -> Result<Option<Bytes>, Status> {
        if self.position < state.oldest {
            return Err(self.expired(state.oldest));
        }
        let behind = state.total.saturating_sub(self.consumed);
        self.check_lag(behind)?;
        if state.closed {
            self.done = true;
            return Ok(None);
        }
        for entry in state.events.range(state.after(self.position)..) {
            self.position = entry.revision;
            self.consumed = self.consumed.max(entry.offset);
            if let Some(bytes) = self.translate(entry) {
                return Ok(Some(bytes));
            }
        }
        // Nothing left for us: we are caught up with the window.
        self.consumed = state.total;
        Ok(None)
    }

    /// As [`CacheWatcher::read_window`], over the entries of the trigger's value only.
    fn read_log(
        &mut self,
        state: &State<K>,
        log: Option<&TriggerLog<K>>,
    ) -> Result<Option<Bytes>, Status> {
        if let Some(log) = log {
            if self.position < log.evicted_through {
                return Err(self.expired(state.oldest));
            }
            self.check_lag(log.total.saturating_sub(self.consumed))?;
        }
        if state.closed {
            self.done = true;
            return Ok(None);
        }
        if let Some(log) = log {
            for logged in log.entries.range(log.after(self.position)..) {
                self.position = logged.entry.revision;
                self.consumed = self.consumed.max(logged.offset);
                if let Some(bytes) = self.translate(&logged.entry) {
                    return Ok(Some(bytes));
                }
            }
            self.consumed = log.total;
        }
        // Every change of our value up to the cache's revision is read: later
        // evictions of other values' entries do not concern us.
        self.position = self.position.max(state.revision);
        Ok(None)
    }

    fn expired(&self, oldest: u64) -> Status {
        status(
            Reason::Expired,
            format!(
                "the watch at resource_version {} fell out of the watch cache's window (it starts after {oldest}); list again and watch from the list's resource_version",
                self.position
            ),
        )
    }

    fn check_lag(&self, behind: u64) -> Result<(), Status> {
        let limit = self.cache.options().lag_bytes;
        if behind > limit as u64 {
            return Err(status(
                Reason::WatchTooSlow,
                format!(
                    "the watch fell {behind} bytes of changes behind (limit {limit}) and was closed; resume from the last resource_version received ({}), or list again",
                    self.position
                ),
            ));
        }
        Ok(())
    }

    /// What this watcher sees of `entry`: objects moving into the selection are
    /// ADDED, out of it DELETED.
    fn translate(&self, entry: &Entry<K>) -> Option<Bytes> {
        if !entry.key.starts_with(&self.prefix) {
            return None;
        }
        if self.selectors.is_empty() {
            return entry.plain();
        }
        let was = entry
            .previous
            .as_ref()
            .is_some_and(|p| self.selectors.matches(&p.obj));
        match &entry.current {
            Some(c) => match (was, self.selectors.matches(&c.obj)) {
                (true, true) => Some(c.encoded(WatchEventType::Modified)),
                (false, true) => Some(c.encoded(WatchEventType::Added)),
                (true, false) => Some(c.encoded(WatchEventType::Deleted)),
                (false, false) => None,
            },
            None if was => entry.deleted(),
            None => None,
        }
    }
}

impl<K> Drop for CacheWatcher<K> {
    fn drop(&mut self) {
        if let Some(value) = self.trigger.take() {
            // Let go of the log's channel first, so the log sees no watcher left.
            drop(std::mem::replace(&mut self.head, watch::channel(0).1));
            self.cache.release_value(&value);
        }
    }
}
