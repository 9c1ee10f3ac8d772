//! Node restriction: a node identity (`node:<name>`, from its certificate) writes only
//! its own objects and reads only the Secrets its Instances use.
//!
//! - its Node (name), with the FALCON key its certificate binds (NodeId), and not its
//!   own cordon (`spec.unschedulable` is the admin's);
//! - its Lease (`hypermesh-system/node-<name>`; checked by authorization);
//! - Assets whose `spec.nodeName` is itself, before and after the write;
//! - the status of Instances bound to it, and their [`CONTAINERS_FINALIZER`] (removed
//!   once their containers are gone; nothing else of the object);
//! - Events about itself or about Instances bound to it;
//! - a Secret only when an Instance bound to it uses it (volume or env).

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::{CONTAINERS_FINALIZER, Resource, v1};
use prost::Message;
use tonic::Status;

use super::node_identity::public_key;
use super::{Access, AdmissionRequest, Admit, Findings, ObjectRef, Operation};
use crate::object::store_status;
use crate::store::Store;

/// The plugin.
#[derive(Debug)]
pub struct NodeRestriction;

fn refuse(node: &str, what: String) -> Status {
    status(Reason::Forbidden, format!("node {node:?} cannot {what}"))
}

fn instance_uses_secret(instance: &v1::Instance, secret: &str) -> bool {
    let Some(spec) = instance.spec.as_ref() else {
        return false;
    };
    let in_volumes = spec.volumes.iter().any(
        |v| matches!(&v.source, Some(v1::volume::Source::Secret(s)) if s.secret_name == secret),
    );
    let in_env = spec.containers.iter().any(|c| {
        c.env
            .iter()
            .any(|e| e.secret_key_ref.as_ref().is_some_and(|r| r.name == secret))
    });
    in_volumes || in_env
}

async fn instances_bound_to(
    store: &dyn Store,
    namespace: &str,
    node: &str,
) -> Result<Vec<v1::Instance>, Status> {
    let prefix = format!("/instances/{namespace}/");
    let page = store
        .list(&prefix, None, 0, 0)
        .await
        .map_err(|e| store_status(e, "instances"))?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| v1::Instance::decode(kv.value.as_slice()).ok())
        .filter(|i| i.spec.as_ref().is_some_and(|s| s.node_name == node))
        .collect())
}

async fn instance_node(store: &dyn Store, namespace: &str, name: &str) -> Result<String, Status> {
    let key = format!("/instances/{namespace}/{name}");
    let kv = store.get(&key).await.map_err(|e| store_status(e, &key))?;
    Ok(kv
        .and_then(|kv| v1::Instance::decode(kv.value.as_slice()).ok())
        .and_then(|i| i.spec)
        .map(|s| s.node_name)
        .unwrap_or_default())
}

fn asset_node(asset: &v1::Asset) -> &str {
    asset.spec.as_ref().map_or("", |s| s.node_name.as_str())
}

#[tonic::async_trait]
impl Admit for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    async fn authorize(&self, access: &Access<'_>, store: &dyn Store) -> Result<(), Status> {
        let Some(node) = access.caller.node_name() else {
            return Ok(());
        };
        if access.kind.plural != "secrets" || access.operation != Operation::Get {
            return Ok(());
        }
        let used = instances_bound_to(store, access.namespace, node)
            .await?
            .iter()
            .any(|i| instance_uses_secret(i, access.name));
        if used {
            Ok(())
        } else {
            Err(refuse(
                node,
                format!(
                    "get secret {:?} in namespace {:?}: no Instance bound to it uses that Secret",
                    access.name, access.namespace
                ),
            ))
        }
    }

    async fn validate(
        &self,
        request: &AdmissionRequest<'_>,
        new: Option<ObjectRef<'_>>,
        _findings: &mut Findings,
    ) -> Result<(), Status> {
        let caller = request.access.caller;
        let Some(node) = caller.node_name() else {
            return Ok(());
        };
        match (new, request.old) {
            (Some(ObjectRef::Node(n)), old) => {
                if let Some(bound) = caller.node_id.as_deref() {
                    let key = public_key(n);
                    if key.is_empty() || hypermesh_trust::node_id_of(key) != bound {
                        return Err(status(
                            Reason::NodeKeyMismatch,
                            format!(
                                "spec.identity.publicKey: node {node:?} is bound to NodeId {bound} by its certificate; \
                                 its key is fixed at join (an admin rekeys with hmctl node rekey)"
                            ),
                        ));
                    }
                }
                let cordon = |n: &v1::Node| n.spec.as_ref().is_some_and(|s| s.unschedulable);
                if let Some(ObjectRef::Node(old)) = old
                    && cordon(old) != cordon(n)
                {
                    return Err(refuse(
                        node,
                        "change spec.unschedulable: cordoning is an admin's (hmctl cordon/uncordon)"
                            .into(),
                    ));
                }
                Ok(())
            }
            (new, old) if request.access.kind.plural == "assets" => {
                let mine = |o: Option<ObjectRef<'_>>| match o {
                    Some(ObjectRef::Asset(a)) => asset_node(a) == node,
                    None => true,
                    _ => false,
                };
                if mine(new) && mine(old) {
                    Ok(())
                } else {
                    Err(refuse(
                        node,
                        format!(
                            "write asset {:?}: it belongs to another node (spec.nodeName)",
                            request.access.name
                        ),
                    ))
                }
            }
            (new, Some(ObjectRef::Instance(old))) => {
                let bound = old.spec.as_ref().map_or("", |s| s.node_name.as_str());
                if bound != node {
                    Err(refuse(
                        node,
                        format!(
                            "update the status of instance {:?} in namespace {:?}: it is not bound to this node",
                            request.access.name, request.access.namespace
                        ),
                    ))
                } else if request.access.operation == Operation::Update
                    && !drops_containers_finalizer(old, new)
                {
                    Err(refuse(
                        node,
                        format!(
                            "update instance {:?} in namespace {:?}: a node may only remove the {CONTAINERS_FINALIZER:?} finalizer",
                            request.access.name, request.access.namespace
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
            (Some(ObjectRef::Event(event)), _) => {
                let involved = event
                    .spec
                    .as_ref()
                    .and_then(|s| s.involved_object.clone())
                    .unwrap_or_default();
                let ok = match involved.kind.as_str() {
                    "Node" => involved.name == node,
                    "Instance" => {
                        instance_node(request.store, &involved.namespace, &involved.name).await?
                            == node
                    }
                    _ => false,
                };
                if ok {
                    Ok(())
                } else {
                    Err(refuse(
                        node,
                        format!(
                            "record an event about {} {:?}: only about itself and the Instances bound to it",
                            involved.kind, involved.name
                        ),
                    ))
                }
            }
            _ => Ok(()),
        }
    }
}

/// Whether `new` is `old` with only [`CONTAINERS_FINALIZER`] removed (the agent's
/// confirmation that the Instance's containers are gone).
fn drops_containers_finalizer(old: &v1::Instance, new: Option<ObjectRef<'_>>) -> bool {
    let Some(ObjectRef::Instance(new)) = new else {
        return false;
    };
    let (o, n) = (old.meta(), new.meta());
    let mut expected = o.finalizers.clone();
    expected.retain(|f| f != CONTAINERS_FINALIZER);
    o.finalizers.len() != expected.len()
        && n.finalizers == expected
        && n.labels == o.labels
        && n.annotations == o.annotations
        && n.owner_references == o.owner_references
        && new.spec == old.spec
}
