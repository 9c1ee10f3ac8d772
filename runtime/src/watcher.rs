//! A list-then-watch stream for one kind. The state machine is explicit: `Empty`
//! lists everything, `Listed` opens a watch from the list's resource version,
//! `Watching` relays events and remembers the newest version. A broken stream is
//! reopened from that version after a back-off; `OUT_OF_RANGE` (history compacted)
//! goes back to `Empty` and re-lists, announced as [`Event::Restarted`].

use std::time::Duration;

use futures::{Stream, StreamExt};
use hypermesh_api::Api;
use hypermesh_api::Resource;
use hypermesh_api::v1::{ListRequest, WatchEventType, WatchRequest};
use tonic::{Code, Status, Streaming};
use tracing::{debug, warn};

use crate::backoff::{Backoff, Retry};

/// What a watcher yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<K> {
    /// A full listing: the cache should be replaced by exactly these objects.
    Restarted(Vec<K>),
    /// An object was added or changed.
    Applied(K),
    /// An object was deleted (its last state).
    Deleted(K),
}

/// Which objects to watch.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Namespace, or empty for all.
    pub namespace: String,
    /// Label selector.
    pub label_selector: String,
    /// Field selector.
    pub field_selector: String,
    /// Page size for listings (0: one page).
    pub page_size: u32,
}

/// Why a watcher step failed; the watcher itself retries, these are reported for logs.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// Listing failed.
    #[error("list failed: {0}")]
    List(#[source] Status),
    /// Opening or reading the watch failed.
    #[error("watch failed: {0}")]
    Watch(#[source] Status),
}

enum State<K: Resource> {
    Empty,
    Listed {
        resource_version: u64,
    },
    Watching {
        resource_version: u64,
        stream: Box<Streaming<K::WatchEvent>>,
    },
}

/// Delays between failed attempts to list or watch.
pub const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

/// Watches kind `K` forever: yields events, and errors as they happen (then retries).
pub fn watcher<K: Resource>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<Event<K>, WatcherError>> + Send {
    let start = (State::<K>::Empty, api, config, BACKOFF.retry());
    futures::stream::unfold(start, |(state, api, config, mut retry)| async move {
        let (item, next) = step(state, &api, &config, &mut retry).await;
        Some((item, (next, api, config, retry)))
    })
    .filter_map(|item| async move { item })
}

async fn step<K: Resource>(
    state: State<K>,
    api: &Api<K>,
    config: &Config,
    retry: &mut Retry,
) -> (Option<Result<Event<K>, WatcherError>>, State<K>) {
    match state {
        State::Empty => {
            let request = ListRequest {
                namespace: config.namespace.clone(),
                label_selector: config.label_selector.clone(),
                field_selector: config.field_selector.clone(),
                limit: config.page_size,
                continue_token: String::new(),
            };
            match api.list_all(request).await {
                Ok((items, resource_version)) => {
                    retry.reset();
                    (
                        Some(Ok(Event::Restarted(items))),
                        State::Listed { resource_version },
                    )
                }
                Err(status) => {
                    retry.wait().await;
                    (Some(Err(WatcherError::List(status))), State::Empty)
                }
            }
        }
        State::Listed { resource_version } => {
            let request = WatchRequest {
                namespace: config.namespace.clone(),
                label_selector: config.label_selector.clone(),
                field_selector: config.field_selector.clone(),
                resource_version,
                allow_bookmarks: true,
            };
            match api.watch(request).await {
                Ok(stream) => (
                    None,
                    State::Watching {
                        resource_version,
                        stream: Box::new(stream),
                    },
                ),
                Err(status) if status.code() == Code::OutOfRange => {
                    debug!(kind = K::KIND, "watch version too old; re-listing");
                    (None, State::Empty)
                }
                Err(status) => {
                    retry.wait().await;
                    (
                        Some(Err(WatcherError::Watch(status))),
                        State::Listed { resource_version },
                    )
                }
            }
        }
        State::Watching {
            resource_version,
            mut stream,
        } => match stream.message().await {
            Ok(Some(raw)) => {
                let (kind, object) = K::split_event(raw);
                let version = object.meta().resource_version.max(resource_version);
                let event = match kind {
                    WatchEventType::Added | WatchEventType::Modified => {
                        Some(Ok(Event::Applied(object)))
                    }
                    WatchEventType::Deleted => Some(Ok(Event::Deleted(object))),
                    WatchEventType::Bookmark | WatchEventType::Unspecified => None,
                };
                retry.reset();
                (
                    event,
                    State::Watching {
                        resource_version: version,
                        stream,
                    },
                )
            }
            Ok(None) => (None, State::Listed { resource_version }),
            Err(status) if status.code() == Code::OutOfRange => (None, State::Empty),
            Err(status) => {
                warn!(kind = K::KIND, error = %status, "watch stream broke; resuming");
                retry.wait().await;
                (
                    Some(Err(WatcherError::Watch(status))),
                    State::Listed { resource_version },
                )
            }
        },
    }
}
