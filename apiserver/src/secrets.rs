//! `SecretService`: what each reader gets of a Secret.
//!
//! - A node (the agent's identity) gets the data sealed to its ML-KEM-1024 key
//!   (`spec.sealed`, bound to node, namespace, name and resourceVersion), never
//!   plaintext; a node that published no ML-KEM key gets `FAILED_PRECONDITION`
//!   (`NodeKemKeyMissing`). Node restriction already limits it to Secrets its bound
//!   Instances use; sealing happens at read time, for the reading node only.
//! - Anyone else gets keys and sizes (`spec.dataSizes`), not values, unless the request
//!   carries `x-hypermesh-reveal: true` and the caller may `get secrets/data` (admins
//!   may); otherwise `PERMISSION_DENIED` naming that permission.
//! - Writes drop the server-filled fields; an update that carries sizes but no values
//!   (a withheld copy written back, e.g. to change a label) keeps the stored values.
//!
//! The store never holds plaintext either: [`crate::store::secrets_at_rest`].

use hypermesh_api::Resource;
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::{self, DeleteRequest, GetRequest, ListRequest, WatchRequest};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::admission::Operation;
use crate::call::Call;
use crate::caller::Caller;
use crate::registry::{EventStream, Registry};

/// Request metadata asking for a Secret's values: `x-hypermesh-reveal: true`.
pub const REVEAL_METADATA: &str = "x-hypermesh-reveal";

fn wants_reveal<T>(request: &Request<T>) -> bool {
    request
        .metadata()
        .get(REVEAL_METADATA)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// The Secret with its values withheld: keys and sizes only.
pub fn withhold(mut secret: v1::Secret) -> v1::Secret {
    if let Some(spec) = secret.spec.as_mut() {
        spec.data_sizes = spec
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect();
        spec.data.clear();
        spec.sealed.clear();
    }
    secret
}

/// Drops what only the server fills in from a Secret sent to be written.
fn strip_server_fields(secret: &mut v1::Secret) {
    if let Some(spec) = secret.spec.as_mut() {
        spec.sealed.clear();
        spec.data_sizes.clear();
    }
}

/// Seals `secret`'s data to `node`, whose ML-KEM public key is `kem_public_key`.
pub fn seal_for_node(
    secret: &v1::Secret,
    node: &str,
    node_id: &str,
    kem_public_key: &[u8],
) -> Result<v1::Secret, Status> {
    let meta = secret.meta();
    let spec = secret.spec.clone().unwrap_or_default();
    let plain = v1::SecretSpec {
        r#type: spec.r#type.clone(),
        data: spec.data,
        ..Default::default()
    }
    .encode_to_vec();
    let aad = hypermesh_trust::sealing::secret_aad(
        node,
        &meta.namespace,
        &meta.name,
        meta.resource_version,
    );
    let sealed = hypermesh_trust::sealing::seal(kem_public_key, &aad, &plain).map_err(|e| {
        status(
            Reason::NodeKemKeyMissing,
            format!("node {node:?}: spec.identity.kemPublicKey: {e}"),
        )
    })?;
    Ok(v1::Secret {
        metadata: secret.metadata.clone(),
        spec: Some(v1::SecretSpec {
            r#type: spec.r#type,
            data: Default::default(),
            sealed: vec![v1::SealedData {
                node_id: node_id.to_string(),
                kem_ciphertext: sealed.kem_ciphertext,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
            }],
            data_sizes: Default::default(),
        }),
        status: secret.status,
    })
}

impl Registry<v1::Secret> {
    /// The copy of `secret` `caller` may see (see the module docs).
    async fn present(
        &self,
        caller: &Caller,
        reveal: bool,
        secret: v1::Secret,
    ) -> Result<v1::Secret, Status> {
        if let Some(node) = caller.node_name() {
            return self.seal_for(node, &secret).await;
        }
        if reveal {
            let meta = secret.meta();
            self.authorize(caller, Operation::Reveal, &meta.namespace, &meta.name)
                .await?;
            return Ok(secret);
        }
        Ok(withhold(secret))
    }

    async fn seal_for(&self, node: &str, secret: &v1::Secret) -> Result<v1::Secret, Status> {
        let key = format!("/nodes/{node}");
        let stored = self
            .store()
            .get(&key)
            .await
            .map_err(|e| crate::object::store_status(e, &key))?;
        let identity = stored
            .and_then(|kv| v1::Node::decode(kv.value.as_slice()).ok())
            .and_then(|n| n.spec)
            .and_then(|s| s.identity)
            .unwrap_or_default();
        if identity.kem_public_key.is_empty() {
            return Err(status(
                Reason::NodeKemKeyMissing,
                format!(
                    "node {node:?} has published no ML-KEM-1024 key (spec.identity.kemPublicKey), so Secret {:?} in namespace {:?} cannot be sealed to it; restart its hm-agent (a current agent publishes one) or rejoin the node",
                    secret.meta().name,
                    secret.meta().namespace
                ),
            ));
        }
        seal_for_node(secret, node, &identity.node_id, &identity.kem_public_key)
    }

    /// Keeps the stored values when `next` is a withheld copy written back.
    async fn keep_withheld_values(&self, next: &mut v1::Secret) -> Result<(), Status> {
        let Some(spec) = next.spec.as_mut() else {
            return Ok(());
        };
        if !spec.data.is_empty() || spec.data_sizes.is_empty() {
            return Ok(());
        }
        let meta = next.metadata.clone().unwrap_or_default();
        let namespace = if meta.namespace.is_empty() {
            "default"
        } else {
            &meta.namespace
        };
        let current = self.read(namespace, &meta.name).await?;
        if let Some(stored) = current.spec {
            spec.data = stored
                .data
                .into_iter()
                .filter(|(k, _)| spec.data_sizes.contains_key(k))
                .collect();
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl v1::secret_service_server::SecretService for Registry<v1::Secret> {
    async fn create(&self, request: Request<v1::Secret>) -> Result<Response<v1::Secret>, Status> {
        let reveal = wants_reveal(&request);
        crate::call!(self, "Create", request, |caller, object| async {
            let mut object = object;
            strip_server_fields(&mut object);
            let created = Registry::create(self, &caller, object).await?;
            self.present(&caller, reveal, created).await
        })
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<v1::Secret>, Status> {
        let reveal = wants_reveal(&request);
        crate::call!(self, "Get", request, |caller, r| async {
            let secret = Registry::get(self, &caller, &r.namespace, &r.name).await?;
            self.present(&caller, reveal, secret).await
        })
    }

    async fn list(
        &self,
        request: Request<ListRequest>,
    ) -> Result<Response<v1::SecretList>, Status> {
        let reveal = wants_reveal(&request);
        crate::call!(self, "List", request, |caller, r| async {
            if reveal {
                self.authorize(&caller, Operation::Reveal, &r.namespace, "")
                    .await?;
            }
            let mut list = Registry::list(self, &caller, r).await?;
            if !reveal {
                list.items = list.items.into_iter().map(withhold).collect();
            }
            Ok(list)
        })
    }

    async fn update(&self, request: Request<v1::Secret>) -> Result<Response<v1::Secret>, Status> {
        let reveal = wants_reveal(&request);
        crate::call!(self, "Update", request, |caller, object| async {
            let mut object = object;
            self.keep_withheld_values(&mut object).await?;
            strip_server_fields(&mut object);
            let updated = Registry::update(self, &caller, object).await?;
            self.present(&caller, reveal, updated).await
        })
    }

    async fn update_status(
        &self,
        request: Request<v1::Secret>,
    ) -> Result<Response<v1::Secret>, Status> {
        crate::call!(self, "UpdateStatus", request, |caller, object| async {
            let updated = Registry::update_status(self, &caller, object).await?;
            Ok(withhold(updated))
        })
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<v1::Secret>, Status> {
        crate::call!(self, "Delete", request, |caller, r| async {
            Ok(withhold(Registry::delete(self, &caller, r).await?))
        })
    }

    type WatchStream = EventStream<v1::Secret>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let reveal = wants_reveal(&request);
        crate::call!(self, "Watch", request, |caller, r| async {
            if reveal {
                self.authorize(&caller, Operation::Reveal, &r.namespace, "")
                    .await?;
            }
            let events = Registry::watch(self, &caller, r).await?;
            if reveal {
                return Ok(events);
            }
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            tokio::spawn(async move {
                let mut events = events.map(|event| {
                    event.map(|mut e| {
                        e.object = e.object.map(withhold);
                        e
                    })
                });
                while let Some(event) = events.next().await {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            });
            Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
        })
    }
}
