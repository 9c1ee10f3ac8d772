//! [`EventRecorder`]: records Events about objects for `hmctl describe`. Recording is
//! best effort: a failure is logged, never fails the reconcile that reported it.

use hypermesh_api::v1::{Event, EventSpec, ObjectMeta, ObjectReference};
use hypermesh_api::validation::shorten_name;
use hypermesh_api::{Api, Resource};
use rand::Rng;
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
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Creates Events from one component (`source`) and replica (`reporter`).
#[derive(Debug, Clone)]
pub struct EventRecorder {
    api: Api<Event>,
    source: String,
    reporter: String,
}

impl EventRecorder {
    /// A recorder for `source` (e.g. `workload-controller`) run by `reporter`.
    pub fn new(api: Api<Event>, source: impl Into<String>, reporter: impl Into<String>) -> Self {
        EventRecorder {
            api,
            source: source.into(),
            reporter: reporter.into(),
        }
    }

    /// Records `reason: message` about `object`, in the object's namespace.
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
        let suffix: u64 = rand::rng().random();
        let suffix = format!(".{suffix:016x}");
        let now = hypermesh_api::time::now();
        let event = Event {
            metadata: Some(ObjectMeta {
                name: format!("{}{suffix}", shorten_name(&meta.name, suffix.len())),
                namespace: namespace.clone(),
                annotations: [(
                    REPORTING_INSTANCE_ANNOTATION.to_string(),
                    self.reporter.clone(),
                )]
                .into(),
                ..Default::default()
            }),
            spec: Some(EventSpec {
                involved_object: Some(ObjectReference {
                    kind: K::KIND.to_string(),
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone(),
                    uid: meta.uid.clone(),
                }),
                reason: reason.to_string(),
                message: message.into(),
                r#type: kind.as_str().to_string(),
                source: self.source.clone(),
                count: 1,
                first_timestamp: Some(now),
                last_timestamp: Some(now),
            }),
            status: None,
        };
        if let Err(status) = self.api.create(&event).await {
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
}
