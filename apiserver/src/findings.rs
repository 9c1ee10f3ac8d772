//! Records what admission found ([`Finding`]s) as Warning Events on the Node
//! concerned, written straight to the store as the apiserver's own record of the
//! request. Reactions (marking the node Suspect) are `crate::suspect`'s, which
//! watches these Events. Also [`record_node_event`]: the apiserver's other Events
//! about Nodes, aggregated like every component's.

use hypermesh_api::v1;
use hypermesh_runtime::events::{EventType, event_name};
use prost::Message;

use crate::admission::Finding;
use crate::store::{Store, StoreError};

/// Where Events about (cluster-scoped) Nodes are recorded.
pub const EVENT_NAMESPACE: &str = "default";
/// The `source` of Events recorded from admission findings.
pub const SOURCE: &str = "hm-apiserver/admission";

/// Writes one Warning Event per finding. Failures are logged: the request's outcome
/// stands either way.
pub async fn record(store: &dyn Store, findings: &[Finding]) {
    for finding in findings {
        tracing::warn!(node = %finding.node, reason = %finding.reason, "{}", finding.message);
        let node_uid = match store.get(&format!("/nodes/{}", finding.node)).await {
            Ok(Some(kv)) => crate::object::StoredObject::decode_kv(&kv)
                .map(|o| o.meta().uid)
                .unwrap_or_default(),
            _ => String::new(),
        };
        let suffix: u64 = rand::random();
        let now = hypermesh_api::time::now();
        let name = format!(
            "{}.{}.{suffix:016x}",
            finding.node,
            finding.reason.to_ascii_lowercase()
        );
        let event = v1::Event {
            metadata: Some(v1::ObjectMeta {
                name: name.clone(),
                namespace: EVENT_NAMESPACE.into(),
                uid: crate::object::uid(),
                generation: 1,
                creation_timestamp: Some(now),
                ..Default::default()
            }),
            spec: Some(v1::EventSpec {
                involved_object: Some(v1::ObjectReference {
                    kind: "Node".into(),
                    namespace: String::new(),
                    name: finding.node.clone(),
                    uid: node_uid,
                }),
                reason: finding.reason.clone(),
                message: finding.message.clone(),
                r#type: "Warning".into(),
                source: SOURCE.into(),
                count: 1,
                first_timestamp: Some(now),
                last_timestamp: Some(now),
            }),
            status: None,
        };
        let key = format!("/events/{EVENT_NAMESPACE}/{name}");
        if let Err(e) = store.create(&key, event.encode_to_vec()).await {
            tracing::warn!(node = %finding.node, error = %e, "cannot record the admission finding as an Event");
        }
    }
}

/// Records `reason: message` about Node `node` (uid `uid`) from `source`, aggregated:
/// the same occurrence again increments `count` and moves `last_timestamp` of one
/// Event. Failures are logged.
pub async fn record_node_event(
    store: &dyn Store,
    node: &str,
    uid: &str,
    kind: EventType,
    reason: &str,
    message: &str,
    source: &str,
) {
    let involved = v1::ObjectReference {
        kind: "Node".into(),
        namespace: String::new(),
        name: node.into(),
        uid: uid.into(),
    };
    let name = event_name(&involved, kind, reason, message, source);
    let key = format!("/events/{EVENT_NAMESPACE}/{name}");
    let now = hypermesh_api::time::now();
    let fresh = v1::Event {
        metadata: Some(v1::ObjectMeta {
            name,
            namespace: EVENT_NAMESPACE.into(),
            uid: crate::object::uid(),
            generation: 1,
            creation_timestamp: Some(now),
            ..Default::default()
        }),
        spec: Some(v1::EventSpec {
            involved_object: Some(involved),
            reason: reason.into(),
            message: message.into(),
            r#type: kind.as_str().into(),
            source: source.into(),
            count: 1,
            first_timestamp: Some(now),
            last_timestamp: Some(now),
        }),
        status: None,
    };
    for _ in 0..4 {
        let result = match store.get(&key).await {
            Ok(Some(kv)) => {
                let Ok(mut event) = v1::Event::decode(kv.value.as_slice()) else {
                    return;
                };
                if let Some(spec) = event.spec.as_mut() {
                    spec.count = spec.count.saturating_add(1);
                    spec.last_timestamp = Some(now);
                }
                if let Some(meta) = event.metadata.as_mut() {
                    meta.resource_version = 0;
                }
                store
                    .update(&key, event.encode_to_vec(), kv.mod_revision)
                    .await
            }
            Ok(None) => store.create(&key, fresh.encode_to_vec()).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => return,
            Err(StoreError::AlreadyExists(_) | StoreError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!(%node, %reason, error = %e, "cannot record an Event about the node");
                return;
            }
        }
    }
}
