//! Following prefixes of the store from inside the apiserver: list them, then watch
//! their changes from the listing's revision, and start over (after a short pause)
//! whenever the watch breaks. The in-memory views that must track the store — revoked
//! certificates, roles and bindings, the Suspect reaction — are [`Follower`]s of it,
//! so that loop exists once.

use std::time::Duration;

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Store, StoreError, WatchItem};

/// How long a follower waits before listing again after its watch broke.
const RESTART_DELAY: Duration = Duration::from_millis(500);

/// What a follower is shown of one key.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// In the listing a (re)start begins with.
    Listed(&'a [u8]),
    /// Created after the listing.
    Created(&'a [u8]),
    /// Changed after the listing.
    Updated(&'a [u8]),
    /// Deleted after the listing.
    Deleted,
}

/// Something kept current from the store.
#[tonic::async_trait]
pub trait Follower: Send + Sync {
    /// Called before each listing: forget what was built from the previous one.
    fn reset(&self) {}

    /// One key seen.
    async fn seen(&self, key: &str, seen: Seen<'_>);
}

/// Follows `prefixes` for `follower` until `shutdown`; `what` names it in logs.
pub async fn follow(
    store: &dyn Store,
    prefixes: &[&str],
    what: &str,
    follower: &dyn Follower,
    shutdown: &CancellationToken,
) {
    loop {
        match follow_once(store, prefixes, follower, shutdown).await {
            Ok(()) => return,
            Err(e) => warn!(error = %e, "{what}: store watch broke; listing again"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RESTART_DELAY) => {}
        }
    }
}

async fn follow_once(
    store: &dyn Store,
    prefixes: &[&str],
    follower: &dyn Follower,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    follower.reset();
    let mut revision = 0;
    for prefix in prefixes {
        let page = store.list(prefix, None, 0, revision).await?;
        revision = page.revision;
        for kv in &page.items {
            follower.seen(&kv.key, Seen::Listed(&kv.value)).await;
        }
    }
    let mut watches = Vec::new();
    for prefix in prefixes {
        watches.push(ReceiverStream::new(
            store.watch(prefix, revision, None).await?,
        ));
    }
    let mut changes = futures::stream::select_all(watches);
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            item = changes.next() => item,
        };
        match item {
            None => return Err(StoreError::Backend("watch ended".into())),
            Some(Err(e)) => return Err(e),
            Some(Ok(WatchItem::Event(event))) => {
                let seen = match (&event.previous, &event.current) {
                    (_, None) => Seen::Deleted,
                    (None, Some(kv)) => Seen::Created(&kv.value),
                    (Some(_), Some(kv)) => Seen::Updated(&kv.value),
                };
                follower.seen(&event.key, seen).await;
            }
            Some(Ok(WatchItem::Progress(_))) => {}
        }
    }
}
