//! The `Store` trait: a versioned key-value store with revisions, compare-and-swap
//! writes, snapshot listing and watch — the only thing the apiserver persists through.
//!
//! Semantics follow etcd's, so an etcd backend fits behind the same trait: every write
//! gets the next store-wide `revision`; each key remembers the revision that created
//! it and the one that last modified it; watches replay history after a revision until
//! it is compacted. `conformance` (behind the feature of that name) checks any
//! implementation against these rules.

pub mod backend;
pub mod bounded;
pub mod codec;
/// Test support, not part of the server: built only with the `conformance` feature
/// (a backend's tests enable it).
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod etcd;
pub mod follow;
pub mod redb;
pub mod secrets_at_rest;

use std::fmt;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// One stored key with its value and revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// `/workloads/default/web`.
    pub key: String,
    /// The encoded object.
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: u64,
    /// Revision of the last write to the key.
    pub mod_revision: u64,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreEvent {
    /// Revision of the write.
    pub revision: u64,
    /// The key written.
    pub key: String,
    /// The new state; `None` when the key was deleted.
    pub current: Option<KeyValue>,
    /// The state before the write; `None` when the key was created.
    pub previous: Option<KeyValue>,
}

/// What a watch stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// A change under the watched prefix (shared: every watcher gets the same one).
    Event(std::sync::Arc<StoreEvent>),
    /// Every change up to this revision has been delivered.
    Progress(u64),
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Keys in order.
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: u64,
    /// True when keys remain after the last item.
    pub more: bool,
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {0:?} not found")]
    NotFound(String),
    /// Create found the key already there.
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    /// A compare-and-swap found another revision.
    #[error("key {key:?} is at revision {current}, expected {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: u64,
        /// The revision found.
        current: u64,
    },
    /// The requested revision is older than the oldest kept history.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// Everything at or below this revision is gone.
        compacted: u64,
    },
    /// The requested revision is in the future.
    #[error("revision {requested} is newer than the store's current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: u64,
        /// The store's revision.
        current: u64,
    },
    /// The backend failed (I/O, corruption, closed).
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// Too many writes are waiting for the backend (see [`bounded`]); retry later.
    #[error("store overloaded: {0}")]
    Overloaded(String),
}

/// A stream of watch items; ends when the store shuts down or the receiver is dropped.
pub type WatchStream = mpsc::Receiver<Result<WatchItem, StoreError>>;

/// A versioned key-value store (see the module docs for its rules).
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the current revision.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>>;

    /// Creates `key`; fails with `AlreadyExists`. Returns the write's revision.
    fn create<'a>(&'a self, key: &'a str, value: Vec<u8>)
    -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Replaces `key` if its mod revision is still `expected`; returns the new revision.
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Deletes `key`, if `expected` is given only at that mod revision. Returns the
    /// deletion's revision and the last state of the key.
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<(u64, KeyValue), StoreError>>;

    /// Lists keys starting with `prefix` and sorting after `start_after`, at most
    /// `limit` (0 = all), as of `revision` (0 = now). Past revisions work until compacted.
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: usize,
        revision: u64,
    ) -> BoxFuture<'a, Result<ListPage, StoreError>>;

    /// Streams every change under `prefix` with a revision greater than `after`, in
    /// revision order. With `progress_every`, also emits `Progress(rev)` at that
    /// interval once caught up, promising every change up to `rev` was delivered.
    /// Fails with `Compacted` when `after` is older than the kept history and with
    /// `FutureRevision` when it is newer than the store's revision.
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: u64,
        progress_every: Option<std::time::Duration>,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>>;

    /// The revision of the last committed write.
    fn current_revision(&self) -> u64;

    /// The revision of the last write acknowledged anywhere, asked of the backend
    /// itself: every write acknowledged (by any apiserver) before this call is at or
    /// below it. Costs a round trip on a shared backend.
    fn fresh_revision(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Asks every watch opened with `progress_every` to report its progress now,
    /// after the events queued before the request, and returns true. A store that
    /// cannot do this safely returns false, and its watches report at their interval.
    fn request_progress(&self) -> bool;

    /// Everything at or below this revision has been dropped from history.
    fn compacted_revision(&self) -> u64;

    /// Drops history at or below `revision` (watches and listings before it fail
    /// with `Compacted`). Current values are never dropped.
    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}
