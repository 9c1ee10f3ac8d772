//! Byzantine reaction: a node the admission chain reported (a failed proof sent by
//! the node itself, an attempt to change its key) becomes Suspect: condition
//! `Suspect=True` with the finding's reason and message, and the `NoSchedule` taint
//! `hypermesh.io/suspect`, until an admin trusts it again (`hmctl node trust`).
//!
//! It reacts to the Warning Events `crate::findings` records (source
//! `hm-apiserver/admission`), so admission never writes a Node itself. An Event is
//! acted on only when it is newer than the node's last Suspect transition, so
//! replaying the history after a restart does not undo an admin's decision.

use std::sync::Arc;

use hypermesh_api::Resource;
use hypermesh_api::v1::{self, Condition};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::admission::node_identity::{SUSPECT_CONDITION, has_suspect_taint, suspect_taint};
use crate::findings::{EVENT_NAMESPACE, SOURCE, record_node_event};
use hypermesh_runtime::events::EventType;

/// The `source` of the `NodeSuspect` Event (not [`SOURCE`]: this reaction does not
/// react to its own Events).
pub const SUSPECT_SOURCE: &str = "hm-apiserver/suspect";
use crate::store::follow::{Follower, Seen, follow};
use crate::store::{Store, StoreError};

/// Watches admission findings and marks their nodes Suspect.
pub struct SuspectReaction {
    store: Arc<dyn Store>,
}

#[tonic::async_trait]
impl Follower for SuspectReaction {
    async fn seen(&self, _key: &str, seen: Seen<'_>) {
        // Findings are recorded once and never changed: act on each as it appears.
        if let Seen::Listed(value) | Seen::Created(value) = seen {
            self.handle(value).await;
        }
    }
}

impl SuspectReaction {
    /// A reaction over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        SuspectReaction { store }
    }

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let prefix = format!("/events/{EVENT_NAMESPACE}/");
        let store = self.store.clone();
        follow(
            store.as_ref(),
            &[&prefix],
            "suspect reaction",
            &self,
            &shutdown,
        )
        .await;
    }

    async fn handle(&self, value: &[u8]) {
        let Ok(event) = v1::Event::decode(value) else {
            return;
        };
        let Some(spec) = event.spec.as_ref() else {
            return;
        };
        let involved = spec.involved_object.clone().unwrap_or_default();
        if spec.source != SOURCE || involved.kind != "Node" || involved.name.is_empty() {
            return;
        }
        if let Err(e) = self.mark(&involved.name, spec).await {
            warn!(node = %involved.name, error = %e, "cannot mark the node Suspect");
        }
    }

    async fn mark(&self, node_name: &str, finding: &v1::EventSpec) -> Result<(), StoreError> {
        let key = format!("/nodes/{node_name}");
        let at = finding
            .first_timestamp
            .map(|t| hypermesh_api::time::to_system_time(&t));
        for _ in 0..16 {
            let Some(kv) = self.store.get(&key).await? else {
                debug!(node = node_name, "finding about a node that does not exist");
                return Ok(());
            };
            let Ok(mut node) = v1::Node::decode(kv.value.as_slice()) else {
                return Ok(());
            };
            let status = node.status.get_or_insert_with(Default::default);
            let existing = status
                .conditions
                .iter()
                .position(|c| c.r#type == SUSPECT_CONDITION);
            if let (Some(i), Some(at)) = (existing, at) {
                let since = status.conditions[i]
                    .last_transition_time
                    .map(|t| hypermesh_api::time::to_system_time(&t));
                if since.is_some_and(|since| since > at) {
                    // An admin (or an earlier reaction) decided after this finding.
                    return Ok(());
                }
            }
            let became_suspect = existing.is_none_or(|i| status.conditions[i].status != "True");
            let now = hypermesh_api::time::now();
            let condition = Condition {
                r#type: SUSPECT_CONDITION.into(),
                status: "True".into(),
                reason: finding.reason.clone(),
                message: finding.message.clone(),
                last_transition_time: Some(now),
            };
            match existing {
                Some(i) => {
                    let c = &mut status.conditions[i];
                    if c.status == "True" {
                        c.reason = condition.reason;
                        c.message = condition.message;
                    } else {
                        *c = condition;
                    }
                }
                None => status.conditions.push(condition),
            }
            if !has_suspect_taint(&node) {
                node.spec
                    .get_or_insert_with(Default::default)
                    .taints
                    .push(suspect_taint());
                node.meta_mut().generation += 1;
            }
            node.meta_mut().resource_version = 0;
            match self
                .store
                .update(&key, node.encode_to_vec(), kv.mod_revision)
                .await
            {
                Ok(_) => {
                    if became_suspect {
                        let message = format!(
                            "node marked Suspect after {}: {}; tainted {}:NoSchedule until an admin trusts it (hmctl node trust)",
                            finding.reason,
                            finding.message,
                            suspect_taint().key
                        );
                        let uid = node.meta().uid.clone();
                        record_node_event(
                            self.store.as_ref(),
                            node_name,
                            &uid,
                            EventType::Warning,
                            "NodeSuspect",
                            &message,
                            SUSPECT_SOURCE,
                        )
                        .await;
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Backend(format!(
            "node {node_name:?} kept changing"
        )))
    }
}
