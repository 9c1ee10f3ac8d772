//! Reading a Secret as this node: the apiserver answers a node only with the data
//! sealed to its ML-KEM-1024 key (`spec.sealed`); this opens it with the node's key
//! (bound to this node, the Secret's namespace, name and resourceVersion) and never
//! accepts a plaintext answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use hypermesh_api::v1::{self, Secret};
use hypermesh_api::{Api, Resource};
use hypermesh_trust::sealing::{NodeKem, Sealed, secret_aad};
use prost::Message;

use super::VolumeError;

/// Reads Secrets sealed to this node and opens them.
#[derive(Clone)]
pub struct SealedSecrets {
    secrets: Api<Secret>,
    node: String,
    kem: Arc<NodeKem>,
}

impl std::fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecrets")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl SealedSecrets {
    /// Secrets read through `secrets` as node `node`, opened with `kem`.
    pub fn new(secrets: Api<Secret>, node: impl Into<String>, kem: Arc<NodeKem>) -> Self {
        SealedSecrets {
            secrets,
            node: node.into(),
            kem,
        }
    }

    /// The values of Secret `name` in `namespace`.
    pub async fn read(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
        let secret = match self.secrets.get(namespace, name).await {
            Ok(secret) => secret,
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Err(VolumeError::SecretNotFound(name.to_string()));
            }
            Err(source) => {
                return Err(VolumeError::Api {
                    name: name.to_string(),
                    source,
                });
            }
        };
        self.open(&secret)
    }

    /// Opens the copy of `secret` sealed to this node.
    pub fn open(&self, secret: &Secret) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
        let meta = secret.meta();
        let unsealed = || VolumeError::SecretNotSealed(meta.name.clone());
        let spec = secret.spec.as_ref().ok_or_else(unsealed)?;
        let [copy] = spec.sealed.as_slice() else {
            return Err(unsealed());
        };
        let aad = secret_aad(
            &self.node,
            &meta.namespace,
            &meta.name,
            meta.resource_version,
        );
        let sealed = Sealed {
            kem_ciphertext: copy.kem_ciphertext.clone(),
            nonce: copy.nonce.clone(),
            ciphertext: copy.ciphertext.clone(),
        };
        let plain = self
            .kem
            .open(&aad, &sealed)
            .map_err(|source| VolumeError::SecretOpen {
                name: meta.name.clone(),
                source,
            })?;
        let spec = v1::SecretSpec::decode(plain.as_slice()).map_err(|_| unsealed())?;
        Ok(spec.data)
    }
}
