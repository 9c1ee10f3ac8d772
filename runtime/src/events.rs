//! [`EventRecorder`]: records Events about objects for `hmctl describe`, aggregated (a
//! repeat increments `count` and `last_timestamp` of one object per occurrence key) and
//! kept [`DEFAULT_EVENT_TTL`] after they last happened. Every component records through
//! it. Recording is best effort: a failure is logged, never fails the reconcile that
//! reported it.

use hypermesh_api::v1::{Event, EventSpec, ObjectMeta, ObjectReference};
use hypermesh_api::validation::shorten_name;
use hypermesh_api::{Api, Resource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tonic::{Code, Status};
use tracing::debug;

/// Annotation naming the controller replica (its leader-election identity) that
/// recorded an Event.
pub const REPORTING_INSTANCE_ANNOTATION: &str = "hypermesh.io/reporting-instance";

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    /// `Normal` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// How long an Event is kept after it last happened, unless configured otherwise
/// (the events controller deletes it then).
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

/// How many aggregated Events a recorder remembers (to update them without reading
/// first); beyond it the memory starts over.
const REMEMBERED: usize = 1024;

/// Creates Events from one component (`source`) and replica (`reporter`).
///
/// Events are aggregated: one object per (involved object, type, reason, message,
/// source), named after a hash of that key, so the same thing happening again —
/// from this recorder or another replica — increments `count` and moves
/// `last_timestamp` instead of creating a new object.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    api: Api<Event>,
    source: String,
    reporter: String,
    /// Events this recorder wrote last, by name.
    written: Arc<Mutex<HashMap<String, Event>>>,
}

impl EventRecorder {
    /// A recorder for `source` (e.g. `workload-controller`) run by `reporter`.
    pub fn new(api: Api<Event>, source: impl Into<String>, reporter: impl Into<String>) -> Self {
        EventRecorder {
            api,
            source: source.into(),
            reporter: reporter.into(),
            written: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn remembered(&self, name: &str) -> Option<Event> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn remember(&self, event: Event) {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if written.len() >= REMEMBERED {
            written.clear();
        }
        written.insert(event.meta().name.clone(), event);
    }

    fn forget(&self, name: &str) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// Records `reason: message` about `object`, in the object's namespace: a new
    /// Event, or one more occurrence of the same Event.
    pub async fn record<K: Resource>(
        &self,
        object: &K,
        kind: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let meta = object.meta();
        let namespace = if meta.namespace.is_empty() {
            "default".to_string()
        } else {
            meta.namespace.clone()
        };
        let message = message.into();
        let involved = ObjectReference {
            kind: K::KIND.to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
        };
        let name = event_name(&involved, kind, reason, &message, &self.source);
        let now = hypermesh_api::time::now();
        let event = Event {
            metadata: Some(ObjectMeta {
                name: name.clone(),
                namespace: namespace.clone(),
                annotations: [(
                    REPORTING_INSTANCE_ANNOTATION.to_string(),
                    self.reporter.clone(),
                )]
                .into(),
                ..Default::default()
            }),
            spec: Some(EventSpec {
                involved_object: Some(involved),
                reason: reason.to_string(),
                message,
                r#type: kind.as_str().to_string(),
                source: self.source.clone(),
                count: 1,
                first_timestamp: Some(now),
                last_timestamp: Some(now),
            }),
            status: None,
        };
        if let Err(status) = self.write(&namespace, &name, event).await {
            debug!(
                kind = K::KIND,
                namespace = %namespace,
                name = %meta.name,
                %reason,
                error = %status,
                "cannot record event"
            );
        }
    }

    /// Increments the Event called `name` (remembered, or read), or creates `fresh`.
    async fn write(&self, namespace: &str, name: &str, fresh: Event) -> Result<(), Status> {
        let mut known = self.remembered(name);
        for _ in 0..4 {
            let result = match known.take() {
                Some(mut existing) => {
                    if let Some(spec) = existing.spec.as_mut() {
                        spec.count = spec.count.saturating_add(1);
                        spec.last_timestamp = fresh.spec.as_ref().and_then(|s| s.last_timestamp);
                    }
                    self.api.update(&existing).await
                }
                None => self.api.create(&fresh).await,
            };
            match result {
                Ok(written) => {
                    self.remember(written);
                    return Ok(());
                }
                // Someone else wrote it (or it expired): read it and try again.
                Err(s) if matches!(s.code(), Code::AlreadyExists | Code::Aborted) => {
                    self.forget(name);
                    match self.api.get(namespace, name).await {
                        Ok(current) => known = Some(current),
                        Err(s) if s.code() == Code::NotFound => {}
                        Err(s) => return Err(s),
                    }
                }
                Err(s) if s.code() == Code::NotFound => self.forget(name),
                Err(s) => return Err(s),
            }
        }
        Err(Status::aborted(format!(
            "event {namespace}/{name} kept changing"
        )))
    }
}

/// `<object>.<hash>`: the same for every occurrence of the same thing (the name
/// aggregated Events are stored under; components that write Events without a
/// recorder, such as the apiserver into its own store, use it too).
pub fn event_name(
    involved: &ObjectReference,
    kind: EventType,
    reason: &str,
    message: &str,
    source: &str,
) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [
        involved.kind.as_str(),
        involved.namespace.as_str(),
        involved.name.as_str(),
        involved.uid.as_str(),
        kind.as_str(),
        reason,
        message,
        source,
    ] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let suffix = format!(".{}", &hasher.finalize().to_hex()[..16]);
    format!("{}{suffix}", shorten_name(&involved.name, suffix.len()))
}

/// When `event` (last seen at `last_timestamp`) is due for deletion, `ttl` after it
/// last happened; `None` when it has no time (then it is due now).
pub fn expires_at(event: &Event, ttl: Duration) -> Option<SystemTime> {
    let spec = event.spec.as_ref()?;
    let last = spec.last_timestamp.or(spec.first_timestamp)?;
    hypermesh_api::time::to_system_time(&last).checked_add(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_occurrence_has_the_same_name() {
        let obj = ObjectReference {
            kind: "Instance".into(),
            namespace: "default".into(),
            name: "web-1".into(),
            uid: "u1".into(),
        };
        let a = event_name(
            &obj,
            EventType::Warning,
            "BackOff",
            "restarting",
            "hm-agent",
        );
        assert_eq!(
            a,
            event_name(
                &obj,
                EventType::Warning,
                "BackOff",
                "restarting",
                "hm-agent"
            )
        );
        assert!(a.starts_with("web-1."));
        assert_ne!(
            a,
            event_name(&obj, EventType::Warning, "BackOff", "other", "hm-agent")
        );
        assert_ne!(
            a,
            event_name(&obj, EventType::Normal, "BackOff", "restarting", "hm-agent")
        );
    }
}
