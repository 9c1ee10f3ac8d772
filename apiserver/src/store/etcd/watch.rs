//! Store watches on etcd: one etcd watch (its own gRPC stream) per [`Store::watch`]
//! call, from `after + 1` with previous values, turned into [`WatchItem`]s.
//!
//! Progress comes from etcd's progress notifications (`progress_notify`): etcd sends
//! them through the watcher's own event channel and only once the watcher has caught
//! up, so everything up to their revision has been delivered. Their interval is etcd's
//! `--experimental-watch-progress-notify-interval` (10 minutes by default; run etcd
//! with a few seconds for timely BOOKMARKs). etcd 3.4's on-demand progress request is
//! not used: it can overtake events still queued for the watcher.

use std::sync::Arc;

use etcd_client::{EventType, WatchOptions, WatchResponse};
use tokio::sync::mpsc;
use tracing::debug;

use super::{EtcdStore, convert, etcd_error, note_revision, prefix_end, to_i64};
use crate::store::{StoreError, StoreEvent, WatchItem, WatchStream};

/// Events buffered per watch stream.
const WATCH_BUFFER: usize = 1024;

/// Opens an etcd watch of `prefix` after revision `after` and feeds it to a channel.
pub(super) async fn start(
    store: &EtcdStore,
    prefix: &str,
    after: u64,
    progress: bool,
) -> Result<WatchStream, StoreError> {
    let key = store.full(prefix);
    let mut options = WatchOptions::new()
        .with_range(prefix_end(key.as_bytes()))
        .with_start_revision(to_i64(after.saturating_add(1)))
        .with_prev_key();
    if progress {
        options = options.with_progress_notify();
    }
    let mut stream = store
        .client()
        .watch(key, Some(options))
        .await
        .map_err(|e| etcd_error(e, after))?;
    // The first response says whether the watch exists.
    let first = stream
        .message()
        .await
        .map_err(|e| etcd_error(e, after))?
        .ok_or_else(|| StoreError::Backend("etcd closed the watch stream".into()))?;
    if let Some(error) = cancellation(&first, after) {
        return Err(error);
    }
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let mut feed = Feed {
        store: store.clone(),
        tx,
        last: after,
        progress,
    };
    tokio::spawn(async move {
        // `stream` is dropped when the feed ends, which cancels the etcd watch.
        if feed.deliver(first).await.is_err() {
            return;
        }
        loop {
            let message = tokio::select! {
                () = feed.tx.closed() => return,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => {
                    let _ = feed
                        .tx
                        .send(Err(StoreError::Backend("etcd closed the watch".into())))
                        .await;
                    return;
                }
                Err(e) => {
                    debug!(error = %e, "etcd watch broke");
                    let _ = feed.tx.send(Err(etcd_error(e, feed.last))).await;
                    return;
                }
            };
            if feed.deliver(response).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Why etcd cancelled a watch, if it did.
fn cancellation(response: &WatchResponse, after: u64) -> Option<StoreError> {
    if !response.canceled() {
        return None;
    }
    let compacted = u64::try_from(response.compact_revision()).unwrap_or(0);
    Some(if compacted > 0 {
        StoreError::Compacted {
            requested: after,
            compacted,
        }
    } else {
        StoreError::Backend(format!(
            "etcd cancelled the watch: {}",
            response.cancel_reason()
        ))
    })
}

/// Feeds one watch stream.
struct Feed {
    store: EtcdStore,
    tx: mpsc::Sender<Result<WatchItem, StoreError>>,
    /// The revision everything up to has been delivered.
    last: u64,
    progress: bool,
}

impl Feed {
    /// Sends what one etcd response says; `Err` ends the feed.
    async fn deliver(&mut self, response: WatchResponse) -> Result<(), ()> {
        let revision = note_revision(&self.store.inner, response.header());
        if let Some(error) = cancellation(&response, self.last) {
            let _ = self.tx.send(Err(error)).await;
            return Err(());
        }
        if response.events().is_empty() {
            // A progress notification (or the creation response, which promises
            // nothing about delivery).
            if self.progress && !response.created() && revision > 0 {
                self.last = self.last.max(revision);
                return self
                    .tx
                    .send(Ok(WatchItem::Progress(self.last)))
                    .await
                    .map_err(|_| ());
            }
            return Ok(());
        }
        for event in response.events() {
            let item = match self.event(event) {
                Ok(event) => {
                    self.last = self.last.max(event.revision);
                    Ok(WatchItem::Event(Arc::new(event)))
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if self.tx.send(item).await.is_err() || failed {
                return Err(());
            }
        }
        Ok(())
    }

    fn event(&self, event: &etcd_client::Event) -> Result<StoreEvent, StoreError> {
        let prefix = &self.store.inner.prefix;
        let kv = event
            .kv()
            .ok_or_else(|| StoreError::Backend("etcd watch event without a key".into()))?;
        let changed = convert(prefix, kv)?;
        let previous = event.prev_kv().map(|p| convert(prefix, p)).transpose()?;
        Ok(match event.event_type() {
            EventType::Put => StoreEvent {
                revision: changed.mod_revision,
                key: changed.key.clone(),
                current: Some(changed),
                previous,
            },
            EventType::Delete => StoreEvent {
                revision: changed.mod_revision,
                key: changed.key,
                current: None,
                previous,
            },
        })
    }
}
