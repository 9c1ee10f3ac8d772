//! Tells users why: a pending Instance gets the condition `Scheduled=False` with
//! the reason in its status and a `FailedScheduling` Event (the count per filter:
//! `0/3 nodes are available: 2 insufficient cpu, 1 node(s) cordoned.`); a bound one
//! a `Scheduled` Event; preemption victims a `Preempted` Event. Events go through the
//! runtime's aggregating [`EventRecorder`] (a repeat is one Event with a growing
//! count). Writes happen in the background and repeat messages are skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hypermesh_api::v1::{self, Condition, Instance, ObjectMeta};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::events::{EventRecorder, EventType};
use tonic::transport::Channel;
use tracing::debug;

/// The `source` of the scheduler's Events.
pub const SOURCE: &str = "hm-scheduler";

/// Writes conditions and Events for the scheduler.
#[derive(Clone)]
pub struct Reporter {
    instances: Api<Instance>,
    events: EventRecorder,
    last: Arc<Mutex<HashMap<(String, String), String>>>,
}

impl Reporter {
    /// A reporter over `channel`, recording Events as replica `identity`.
    pub fn new(channel: &Channel, identity: &str) -> Self {
        Reporter {
            instances: Api::new(channel.clone()),
            events: EventRecorder::new(Api::new(channel.clone()), SOURCE, identity),
            last: Arc::default(),
        }
    }

    /// Records an Event about `inst` (only its metadata is used).
    pub fn event(&self, inst: &Instance, kind: EventType, reason: &str, message: String) {
        let events = self.events.clone();
        let subject = Instance {
            metadata: Some(ObjectMeta {
                namespace: inst.meta().namespace.clone(),
                name: inst.meta().name.clone(),
                uid: inst.meta().uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let reason = reason.to_string();
        tokio::spawn(async move { events.record(&subject, kind, &reason, message).await });
    }

    /// Records that `inst` was bound to `node`.
    pub fn scheduled(&self, inst: &Instance, node: &str) {
        let meta = inst.meta();
        let message = format!(
            "Successfully assigned {}/{} to {node}",
            meta.namespace, meta.name
        );
        self.event(inst, EventType::Normal, "Scheduled", message);
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
        self.event(
            inst,
            EventType::Warning,
            "FailedScheduling",
            message.clone(),
        );
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
