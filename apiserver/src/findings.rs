//! Records what admission found ([`Finding`]s) as Warning Events on the Node
//! concerned, written straight to the store as the apiserver's own record of the
//! request. Reactions (marking the node Suspect) are `crate::suspect`'s, which
//! watches these Events.

use hypermesh_api::v1;
use prost::Message;

use crate::admission::Finding;
use crate::store::Store;

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
