//! One watch stream on the redb store: history first, then live events from the
//! broadcast, re-reading history whenever the stream falls behind it; progress at its
//! interval and whenever [`Store::request_progress`](crate::store::Store) asks.

use crate::store::{StoreError, StoreEvent, WatchItem};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

use super::*;

/// Feeds one watch stream: history first, then live events, re-reading history
/// whenever it falls behind the live broadcast.
pub(super) struct Watcher {
    pub(super) store: RedbStore,
    pub(super) prefix: String,
    pub(super) last: u64,
    pub(super) tx: mpsc::Sender<Result<WatchItem, StoreError>>,
}

impl Watcher {
    pub(super) async fn run(
        mut self,
        mut live: broadcast::Receiver<Arc<StoreEvent>>,
        progress_every: Option<Duration>,
    ) {
        if self.catch_up().await.is_err() {
            return;
        }
        let mut ticker = tokio::time::interval(progress_every.unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut requests = self.store.shared.progress_requests.subscribe();
        loop {
            let step = tokio::select! {
                received = live.recv() => match received {
                    Ok(event) => self.deliver(&event).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => Err(()),
                },
                _ = ticker.tick(), if progress_every.is_some() => self.progress(&mut live).await,
                Ok(()) = requests.changed(), if progress_every.is_some() => self.progress(&mut live).await,
                () = self.tx.closed() => Err(()),
            };
            if step.is_err() {
                return;
            }
        }
    }

    pub(super) async fn deliver(&mut self, event: &Arc<StoreEvent>) -> Result<(), ()> {
        if event.revision <= self.last {
            return Ok(());
        }
        self.last = event.revision;
        if event.key.starts_with(&self.prefix) {
            self.tx
                .send(Ok(WatchItem::Event(event.clone())))
                .await
                .map_err(|_| ())?;
        }
        Ok(())
    }

    pub(super) async fn catch_up(&mut self) -> Result<(), ()> {
        loop {
            match self.store.history_after(self.last, 1024) {
                Ok(events) if events.is_empty() => return Ok(()),
                Ok(events) => {
                    for event in events {
                        self.deliver(&Arc::new(event)).await?;
                    }
                }
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return Err(());
                }
            }
        }
    }

    pub(super) async fn progress(
        &mut self,
        live: &mut broadcast::Receiver<Arc<StoreEvent>>,
    ) -> Result<(), ()> {
        let notified = self.store.shared.notified_revision.load(Ordering::Acquire);
        loop {
            match live.try_recv() {
                Ok(event) => self.deliver(&event).await?,
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.catch_up().await?,
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Closed) => return Err(()),
            }
        }
        self.last = self.last.max(notified);
        self.tx
            .send(Ok(WatchItem::Progress(self.last)))
            .await
            .map_err(|_| ())
    }
}
