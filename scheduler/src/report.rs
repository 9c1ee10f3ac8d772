//! Tells users why: a pending Instance gets the condition `Scheduled=False` with
//! the reason in its status and a `FailedScheduling` Event; preemption victims get a
//! `Preempted` Event. Writes happen in the background and repeat messages are skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hypermesh_api::v1::{self, Condition, Event, EventSpec, Instance, ObjectMeta, ObjectReference};
use hypermesh_api::{Api, Resource};
use tonic::transport::Channel;
use tracing::debug;

/// Writes conditions and Events for the scheduler.
#[derive(Clone)]
pub struct Reporter {
    instances: Api<Instance>,
    events: Api<Event>,
    last: Arc<Mutex<HashMap<(String, String), String>>>,
}

fn event_name(object: &str) -> String {
    let suffix: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{object}.{suffix:x}")
}

impl Reporter {
    /// A reporter over `channel`.
    pub fn new(channel: &Channel) -> Self {
        Reporter {
            instances: Api::new(channel.clone()),
            events: Api::new(channel.clone()),
            last: Arc::default(),
        }
    }

    /// Records an Event about `inst`.
    pub fn event(&self, inst: &Instance, kind: &str, reason: &str, message: String) {
        let events = self.events.clone();
        let meta = inst.meta().clone();
        let (kind, reason) = (kind.to_string(), reason.to_string());
        tokio::spawn(async move {
            let now = hypermesh_api::time::now();
            let event = Event {
                metadata: Some(ObjectMeta {
                    name: event_name(&meta.name),
                    namespace: meta.namespace.clone(),
                    ..Default::default()
                }),
                spec: Some(EventSpec {
                    involved_object: Some(ObjectReference {
                        kind: "Instance".into(),
                        namespace: meta.namespace,
                        name: meta.name,
                        uid: meta.uid,
                    }),
                    reason,
                    message,
                    r#type: kind,
                    source: "hm-scheduler".into(),
                    count: 1,
                    first_timestamp: Some(now),
                    last_timestamp: Some(now),
                }),
                status: None,
            };
            if let Err(e) = events.create(&event).await {
                debug!(error = %e.message(), "could not record event");
            }
        });
    }

    /// Marks `inst` unschedulable with `message` (once per distinct message).
    pub fn unschedulable(&self, inst: &Instance, message: String) {
        let key = (inst.meta().namespace.clone(), inst.meta().name.clone());
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            if last.get(&key) == Some(&message) {
                return;
            }
            last.insert(key, message.clone());
        }
        self.event(inst, "Warning", "FailedScheduling", message.clone());
        let api = self.instances.clone();
        let mut updated = inst.clone();
        tokio::spawn(async move {
            let status = updated.status.get_or_insert_with(Default::default);
            status.conditions.retain(|c| c.r#type != "Scheduled");
            status.conditions.push(Condition {
                r#type: "Scheduled".into(),
                status: "False".into(),
                reason: "Unschedulable".into(),
                message,
                last_transition_time: Some(hypermesh_api::time::now()),
            });
            if status.phase == v1::InstancePhase::Unspecified as i32 {
                status.phase = v1::InstancePhase::Pending as i32;
            }
            // Compare-and-swap on the version we saw: if the Instance changed since
            // (bound, say), this stale reason must not overwrite it.
            if let Err(e) = api.update_status(&updated).await {
                debug!(error = %e.message(), "could not record pending reason");
            }
        });
    }

    /// Forgets what was said about an Instance (it got bound or went away).
    pub fn forget(&self, key: &(String, String)) {
        if let Ok(mut last) = self.last.lock() {
            last.remove(key);
        }
    }
}
