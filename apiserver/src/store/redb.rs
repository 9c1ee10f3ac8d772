//! The embedded store: redb (a single-file, crash-safe B-tree) with etcd-like
//! revisions. Every write is fsynced before it is acknowledged; concurrent writes are
//! group-committed (one transaction, one fsync, for every write waiting at that moment)
//! so throughput grows with concurrency instead of being capped by fsync latency.
//!
//! Tables: `kv` (key → record), `history` (revision → change, for watches and
//! snapshot listing; trimmed by compaction) and `meta` (revision counters).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::codec::{decode_event, decode_record};
use super::{KeyValue, ListPage, Store, StoreError, StoreEvent, WatchStream};

mod watcher;
mod writer;

use watcher::Watcher;
use writer::{WriteOp, WriteOutcome, WriteRequest, run_writer};

const KV: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("kv");
const HISTORY: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Events buffered for live watchers before a slow one falls back to reading history.
const BROADCAST_CAPACITY: usize = 16 * 1024;
/// Events buffered per watch stream.
const WATCH_BUFFER: usize = 1024;

/// Tuning for [`RedbStore`].
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// History revisions kept for watches and paginated listings; older ones are
    /// compacted automatically. 0 disables automatic compaction.
    pub retain_revisions: u64,
    /// Bytes of pages redb caches in memory (its default is 1 GiB).
    pub cache_bytes: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            retain_revisions: 100_000,
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

struct Shared {
    db: Database,
    events: broadcast::Sender<Arc<StoreEvent>>,
    /// Every event at or below this revision has been sent on `events`.
    notified_revision: AtomicU64,
    compacted_revision: AtomicU64,
    /// Bumped by [`Store::request_progress`]; every watch with progress reports then.
    progress_requests: tokio::sync::watch::Sender<u64>,
}

/// The redb-backed [`Store`].
#[derive(Clone)]
pub struct RedbStore {
    shared: Arc<Shared>,
    writer: std::sync::mpsc::Sender<WriteRequest>,
    /// The writer thread, joined by [`RedbStore::close`] on the last handle.
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("revision", &self.current_revision())
            .field("compacted", &self.compacted_revision())
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbStore {
    /// The revision of the last committed batch (which may not be broadcast yet).
    fn committed_revision(&self) -> Result<u64, StoreError> {
        let txn = self.shared.db.begin_read().map_err(backend)?;
        Ok(txn
            .open_table(META)
            .map_err(backend)?
            .get(META_REVISION)
            .map_err(backend)?
            .map_or(0, |g| g.value()))
    }

    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path, options: RedbOptions) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|e| backend(format!("opening {}: {e}", path.display())))?;
        let (revision, compacted) = {
            let txn = db.begin_write().map_err(backend)?;
            let values = {
                txn.open_table(KV).map_err(backend)?;
                txn.open_table(HISTORY).map_err(backend)?;
                let meta = txn.open_table(META).map_err(backend)?;
                let read = |k| {
                    meta.get(k)
                        .map(|v| v.map(|g| g.value()).unwrap_or(0))
                        .map_err(backend)
                };
                (read(META_REVISION)?, read(META_COMPACTED)?)
            };
            txn.commit().map_err(backend)?;
            values
        };
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            db,
            events,
            notified_revision: AtomicU64::new(revision),
            compacted_revision: AtomicU64::new(compacted),
            progress_requests: tokio::sync::watch::channel(0).0,
        });
        let (writer, requests) = std::sync::mpsc::channel();
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || run_writer(writer_shared, requests, revision, options))
            .map_err(backend)?;
        Ok(RedbStore {
            shared,
            writer,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Closes this handle. On the last one (and with no watch open) it waits for the
    /// writer to finish, so the database file is released when this returns and
    /// another process may open it at once; merely dropping the handles releases it
    /// a moment later, from the writer thread.
    pub fn close(self) {
        let RedbStore {
            shared,
            writer,
            thread,
        } = self;
        drop(writer);
        if let Ok(thread) = Arc::try_unwrap(thread)
            && let Some(handle) = thread
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            // The writer stops once every sender is gone; a panicked writer has
            // nothing left to release either.
            let _ = handle.join();
        }
        drop(shared);
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.writer
            .send(WriteRequest { op, reply })
            .map_err(|_| backend("store writer has stopped"))?;
        outcome
            .await
            .map_err(|_| backend("store writer has stopped"))?
    }

    fn list_sync(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: u64,
    ) -> Result<ListPage, StoreError> {
        let txn = self.shared.db.begin_read().map_err(backend)?;
        let now = txn
            .open_table(META)
            .map_err(backend)?
            .get(META_REVISION)
            .map_err(backend)?
            .map_or(0, |g| g.value());
        let kv = txn.open_table(KV).map_err(backend)?;
        let after = |key: &str| start_after.is_none_or(|s| key > s);
        let in_range = |key: &str| key.starts_with(prefix) && after(key);

        // State at `revision` = current state with every later change undone: the
        // first change after `revision` to a key carries the key's state at `revision`.
        let mut overrides: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
        let read_revision = if revision == 0 { now } else { revision };
        if read_revision > now {
            return Err(StoreError::FutureRevision {
                requested: read_revision,
                current: now,
            });
        }
        if read_revision < now {
            let compacted = self.shared.compacted_revision.load(Ordering::Acquire);
            if read_revision < compacted {
                return Err(StoreError::Compacted {
                    requested: read_revision,
                    compacted,
                });
            }
            let history = txn.open_table(HISTORY).map_err(backend)?;
            for entry in history.range(read_revision + 1..=now).map_err(backend)? {
                let (rev, bytes) = entry.map_err(backend)?;
                let event = decode_event(rev.value(), bytes.value())?;
                if in_range(&event.key) {
                    overrides.entry(event.key).or_insert(event.previous);
                }
            }
        }

        let start = match start_after {
            Some(s) if s > prefix => s,
            _ => prefix,
        };
        let mut current = kv.range(start..).map_err(backend)?.peekable();
        let mut overridden = overrides.into_iter().peekable();
        let mut items = Vec::new();
        let wanted = if limit == 0 { usize::MAX } else { limit };
        let mut more = false;
        loop {
            // The next current key in range, skipping `start_after` itself.
            let cur_key = loop {
                let peeked = match current.peek() {
                    None => None,
                    Some(Err(_)) => Some(Err(())),
                    Some(Ok((k, _))) => Some(Ok(k.value().to_string())),
                };
                match peeked {
                    None => break None,
                    Some(Err(())) => {
                        if let Some(Err(e)) = current.next() {
                            return Err(backend(e));
                        }
                    }
                    Some(Ok(k)) if !k.starts_with(prefix) => break None,
                    Some(Ok(k)) if !after(&k) => {
                        current.next();
                    }
                    Some(Ok(k)) => break Some(k),
                }
            };
            let next = match (cur_key, overridden.peek()) {
                (None, None) => break,
                (Some(c), Some((o, _))) if c < *o => {
                    let (k, v) = current
                        .next()
                        .and_then(Result::ok)
                        .ok_or_else(|| backend("range iterator ended early"))?;
                    Some(decode_record(k.value(), v.value())?)
                }
                (Some(c), Some((o, _))) if c == *o => {
                    current.next();
                    overridden.next().and_then(|(_, v)| v)
                }
                (Some(_), None) => {
                    let (k, v) = current
                        .next()
                        .and_then(Result::ok)
                        .ok_or_else(|| backend("range iterator ended early"))?;
                    Some(decode_record(k.value(), v.value())?)
                }
                (_, Some(_)) => overridden.next().and_then(|(_, v)| v),
            };
            if let Some(kv) = next {
                if items.len() == wanted {
                    more = true;
                    break;
                }
                items.push(kv);
            }
        }
        Ok(ListPage {
            items,
            revision: read_revision,
            more,
        })
    }

    /// Reads history events after `after`, oldest first, at most `max`.
    fn history_after(&self, after: u64, max: usize) -> Result<Vec<StoreEvent>, StoreError> {
        let compacted = self.shared.compacted_revision.load(Ordering::Acquire);
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let txn = self.shared.db.begin_read().map_err(backend)?;
        let history = txn.open_table(HISTORY).map_err(backend)?;
        let mut out = Vec::new();
        for entry in history.range(after + 1..).map_err(backend)?.take(max) {
            let (rev, bytes) = entry.map_err(backend)?;
            out.push(decode_event(rev.value(), bytes.value())?);
        }
        Ok(out)
    }
}

impl Store for RedbStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        async move {
            let txn = self.shared.db.begin_read().map_err(backend)?;
            let kv = txn.open_table(KV).map_err(backend)?;
            let value = kv.get(key).map_err(backend)?;
            value.map(|v| decode_record(key, v.value())).transpose()
        }
        .boxed()
    }

    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            match self
                .write(WriteOp::Create {
                    key: key.to_string(),
                    value,
                })
                .await?
            {
                WriteOutcome::Revision(r) => Ok(r),
                _ => Err(backend("unexpected write outcome")),
            }
        }
        .boxed()
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            match self
                .write(WriteOp::Update {
                    key: key.to_string(),
                    value,
                    expected,
                })
                .await?
            {
                WriteOutcome::Revision(r) => Ok(r),
                _ => Err(backend("unexpected write outcome")),
            }
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<(u64, KeyValue), StoreError>> {
        async move {
            match self
                .write(WriteOp::Delete {
                    key: key.to_string(),
                    expected,
                })
                .await?
            {
                WriteOutcome::Deleted(r, kv) => Ok((r, kv)),
                _ => Err(backend("unexpected write outcome")),
            }
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: usize,
        revision: u64,
    ) -> BoxFuture<'a, Result<ListPage, StoreError>> {
        async move { self.list_sync(prefix, start_after, limit, revision) }.boxed()
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: u64,
        progress_every: Option<Duration>,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        async move {
            // Subscribe before reading history so nothing falls between the two.
            let live = self.shared.events.subscribe();
            let compacted = self.compacted_revision();
            if after < compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted,
                });
            }
            // Against the committed revision, not the notified one: a list may read a
            // batch whose events are still being broadcast, and a watch from its
            // revision is valid (the history catch-up delivers what follows it).
            let current = self.committed_revision()?;
            if after > current {
                return Err(StoreError::FutureRevision {
                    requested: after,
                    current,
                });
            }
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            let watcher = Watcher {
                store: self.clone(),
                prefix: prefix.to_string(),
                last: after,
                tx,
            };
            tokio::spawn(watcher.run(live, progress_every));
            Ok(rx)
        }
        .boxed()
    }

    fn current_revision(&self) -> u64 {
        self.shared.notified_revision.load(Ordering::Acquire)
    }

    /// Writes are acknowledged after their events are broadcast, so the notified
    /// revision already covers every acknowledged write.
    fn fresh_revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        std::future::ready(Ok(self.current_revision())).boxed()
    }

    fn request_progress(&self) -> bool {
        self.shared
            .progress_requests
            .send_modify(|n| *n = n.wrapping_add(1));
        true
    }

    fn compacted_revision(&self) -> u64 {
        self.shared.compacted_revision.load(Ordering::Acquire)
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            self.write(WriteOp::Compact { revision }).await?;
            Ok(())
        }
        .boxed()
    }
}
