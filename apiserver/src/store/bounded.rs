//! Back-pressure on writes, for any [`Store`]: writes waiting for the backend may hold
//! at most a fixed number of bytes (keys and values); a write that finds no room
//! within a short wait fails with [`StoreError::Overloaded`] (`RESOURCE_EXHAUSTED`,
//! reason `Overloaded`) instead of queueing without bound.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{KeyValue, ListPage, Store, StoreError, WatchStream};

/// Budget unit: bytes are counted in KiB so a 32-bit permit count covers 4 TiB.
const UNIT: usize = 1024;
/// What a write costs beyond its key and value (the request, its reply, the event).
const WRITE_OVERHEAD: usize = 512;

/// A [`Store`] whose pending writes are bounded by bytes.
pub struct BoundedWrites {
    inner: Arc<dyn Store>,
    budget: Arc<Semaphore>,
    max_bytes: usize,
    wait: Duration,
}

impl BoundedWrites {
    /// `inner` with at most `max_bytes` of writes pending; a write waits up to `wait`
    /// for room.
    pub fn new(inner: Arc<dyn Store>, max_bytes: usize, wait: Duration) -> Self {
        let units = (max_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        BoundedWrites {
            inner,
            budget: Arc::new(Semaphore::new(units)),
            max_bytes,
            wait,
        }
    }

    async fn admit(&self, bytes: usize) -> Result<OwnedSemaphorePermit, StoreError> {
        let total = self.max_bytes / UNIT;
        let units = ((bytes + WRITE_OVERHEAD).div_ceil(UNIT)).clamp(1, total.max(1));
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.wait, self.budget.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(StoreError::Overloaded(format!(
                "more than {} MiB of writes are waiting for the store; retry after a short pause",
                self.max_bytes / (1024 * 1024)
            ))),
        }
    }
}

impl Store for BoundedWrites {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        self.inner.get(key)
    }

    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let _permit = self.admit(key.len() + value.len()).await?;
            self.inner.create(key, value).await
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
            let _permit = self.admit(key.len() + value.len()).await?;
            self.inner.update(key, value, expected).await
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<(u64, KeyValue), StoreError>> {
        async move {
            let _permit = self.admit(key.len()).await?;
            self.inner.delete(key, expected).await
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
        self.inner.list(prefix, start_after, limit, revision)
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: u64,
        progress_every: Option<Duration>,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        self.inner.watch(prefix, after, progress_every)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{RedbOptions, RedbStore};

    #[tokio::test]
    async fn writes_beyond_the_budget_are_refused_not_queued() {
        let dir = tempfile::tempdir().expect("dir");
        let redb =
            RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).expect("open");
        let store = Arc::new(BoundedWrites::new(
            Arc::new(redb),
            64 * 1024,
            Duration::from_millis(50),
        ));
        // Hold the whole budget, as writes stuck behind a slow disk would.
        let held = store.admit(64 * 1024).await.expect("budget");
        let err = store
            .create("/a/1", vec![0; 10])
            .await
            .expect_err("no room");
        assert!(matches!(err, StoreError::Overloaded(_)), "{err:?}");
        drop(held);
        store.create("/a/1", vec![0; 10]).await.expect("room again");
    }
}
