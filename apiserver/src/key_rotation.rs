//! `hm-apiserver rotate-encryption-key`: a new primary key in the encryption key file
//! (the old keys kept after it, so what they sealed still opens), every Secret and the
//! cluster CA's key re-sealed with it; with `--retire-previous`, everything re-sealed
//! with the current primary and the older keys dropped from the file.
//!
//! Run it while no apiserver serves the store (redb locks its file anyway; with etcd,
//! stop every apiserver), then give every apiserver the new key file and start them.

use std::sync::Arc;

use hypermesh_trust::at_rest::EncryptionKey;

use crate::server::{Config, ServerError};
use crate::store::Store;
use crate::store::secrets_at_rest::reseal_all;

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Secrets re-sealed with the primary key.
    pub secrets: usize,
    /// Whether the cluster CA's key was re-sealed (false: the store holds no CA).
    pub ca: bool,
    /// Keys left in the key file (the primary first).
    pub keys: usize,
}

/// Rotates the key file of `config` and re-seals the store's Secrets and CA key, or,
/// with `retire_previous`, re-seals them with the current primary and drops the rest.
pub async fn rotate_encryption_key(
    config: &Config,
    retire_previous: bool,
) -> Result<RotationReport, ServerError> {
    let path = config.encryption_key_path();
    let store: Arc<dyn Store> = config.store.open(&config.data_dir).await?;
    let key = if retire_previous {
        EncryptionKey::load_or_create(&path)?
    } else {
        EncryptionKey::rotate_file(&path)?
    };
    let secrets = reseal_all(store.as_ref(), &key).await?;
    let ca = crate::ca::reseal_shared(store.as_ref(), &config.data_dir.join("pki"), &key).await?;
    let keys = if retire_previous {
        EncryptionKey::retire_previous_file(&path)?.key_count()
    } else {
        key.key_count()
    };
    Ok(RotationReport { secrets, ca, keys })
}
