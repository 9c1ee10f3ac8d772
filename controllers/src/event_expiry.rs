//! Event expiry: deletes an Event once [`Config::event_ttl`](crate::Config) has passed
//! since it last happened (default one hour, as Kubernetes keeps events), so repeated
//! and old Events do not pile up in the store. A reconcile function on the runtime's
//! driver that asks to run again exactly when its Event is due.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hypermesh_api::v1::{DeleteRequest, Event};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::controller::{self, Action, Controller, Watched};
use hypermesh_runtime::events::expires_at;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The controller's name (metrics, logs).
pub const NAME: &str = "event-expiry";

/// Deleting an expired Event failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot delete expired event {namespace}/{name}: {source}")]
pub struct ExpiryError {
    /// The Event's namespace.
    pub namespace: String,
    /// The Event's name.
    pub name: String,
    /// The API error.
    #[source]
    pub source: Status,
}

impl controller::ReconcileError for ExpiryError {
    fn is_conflict(&self) -> bool {
        self.source.code() == Code::Aborted
    }
}

/// What reconciles share.
pub struct Ctx {
    events: Api<Event>,
    ttl: Duration,
}

/// The controller over every Event, with its context.
pub fn controller(channel: &Channel, ttl: Duration) -> (Controller<Event>, Arc<Ctx>) {
    let events = Watched::all(Api::<Event>::new(channel.clone()));
    let ctx = Arc::new(Ctx {
        events: Api::new(channel.clone()),
        ttl,
    });
    (Controller::new(NAME, events), ctx)
}

/// Deletes the Event when it is due, else comes back then. The resource version
/// read is the precondition: an Event that happened again meanwhile stays.
pub async fn reconcile(event: Arc<Event>, ctx: Arc<Ctx>) -> Result<Action, ExpiryError> {
    let due = expires_at(&event, ctx.ttl).unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(left) = due.duration_since(SystemTime::now())
        && !left.is_zero()
    {
        return Ok(Action::requeue(left));
    }
    let meta = event.meta();
    match ctx
        .events
        .delete(DeleteRequest {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            resource_version: meta.resource_version,
            ..Default::default()
        })
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(s) if matches!(s.code(), Code::NotFound | Code::Aborted) => Ok(Action::await_change()),
        Err(source) => Err(ExpiryError {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            source,
        }),
    }
}
