//! Compaction on etcd: [`compact`] on demand, and [`run`], which keeps the last
//! `retain` revisions of history (what `--history-revisions` means on redb). Every
//! apiserver runs it; compacting a revision etcd already compacted is a no-op, so
//! several at once do no harm.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::CompactionOptions;
use tracing::{debug, warn};

use super::{Inner, etcd_error, refresh_revision, to_i64};
use crate::store::StoreError;

/// Drops history below `revision`.
pub(super) async fn compact(inner: &Inner, revision: u64) -> Result<(), StoreError> {
    let result = inner
        .client
        .clone()
        .compact(to_i64(revision), Some(CompactionOptions::new()))
        .await;
    match result.map_err(|e| etcd_error(e, revision)) {
        // Someone (another apiserver) compacted this far or further already.
        Ok(_) | Err(StoreError::Compacted { .. }) => {
            inner
                .compacted_revision
                .fetch_max(revision, Ordering::AcqRel);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Every `interval`, compacts history older than `retain` revisions, until the store
/// is dropped.
pub(super) async fn run(inner: Weak<super::Inner>, retain: u64, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        let current = match refresh_revision(&inner).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "etcd compaction: cannot read the revision");
                continue;
            }
        };
        let target = current.saturating_sub(retain);
        if target == 0 || target <= inner.compacted_revision.load(Ordering::Acquire) {
            continue;
        }
        match compact(&inner, target).await {
            Ok(()) => debug!(revision = target, "etcd history compacted"),
            Err(e) => warn!(error = %e, revision = target, "etcd compaction failed"),
        }
    }
}
