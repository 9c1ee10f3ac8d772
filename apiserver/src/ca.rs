//! The cluster CA as the apiserver holds it ([`Pki`]): the CA itself and the lifetimes
//! of the certificates it issues, and where it lives: in the store
//! ([`load_or_create_shared`]), its key sealed with the encryption key file, so every
//! apiserver on one store (etcd) serves and issues with the same CA. Issuing is
//! `crate::join`'s.

use std::path::Path;
use std::time::Duration;

use hypermesh_trust::at_rest::{EncryptionKey, write_private};
use hypermesh_trust::pki::{CA_CERT_FILE, CA_KEY_FILE, ClusterCa, PkiError};

use crate::store::{Store, StoreError};

/// The cluster CA and the lifetimes of what it issues.
pub struct Pki {
    /// The CA.
    pub ca: ClusterCa,
    /// How long node certificates last (agents renew at two thirds).
    pub node_validity: Duration,
    /// How long user certificates last unless the request says otherwise.
    pub user_validity: Duration,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("ca", &self.ca).finish()
    }
}

impl Pki {
    /// Default lifetimes: nodes 30 days, users one year.
    pub fn new(ca: ClusterCa) -> Self {
        Pki {
            ca,
            node_validity: Duration::from_secs(30 * 24 * 3600),
            user_validity: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Store key of the cluster CA: its certificate and its key sealed with the
/// encryption key file. Every apiserver on one store uses this CA, so each needs the
/// same key file (`--encryption-key-file`).
pub const CA_STORE_KEY: &str = "/pki/cluster-ca";

/// The CA record in the store.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaRecord {
    /// The CA certificate, PEM.
    certificate: String,
    /// The CA key sealed with the encryption key file, hex.
    sealed_key: String,
}

/// Why the shared CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The store failed.
    #[error("reading or writing the cluster CA in the store: {0}")]
    Store(#[from] StoreError),
    /// The record is not what this module writes.
    #[error("the cluster CA record in the store ({CA_STORE_KEY}) is malformed: {0}")]
    Malformed(String),
    /// The key file does not open the CA key in the store.
    #[error(
        "the cluster CA in the store cannot be opened with this key file ({0}): every apiserver on one store needs the same --encryption-key-file"
    )]
    WrongKey(#[source] PkiError),
    /// The CA could not be opened or created, or its certificate written out.
    #[error("cluster CA: {0}")]
    Pki(#[from] PkiError),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Loads the cluster CA from the store, creating it there on first start (or taking
/// the one an older data directory's `pki/` holds). Whoever creates it first wins;
/// the others read it back. `dir` (the data directory's `pki/`) gets a copy:
/// `ca.crt` for people and scripts that pin it, `ca.key.sealed` still sealed.
pub async fn load_or_create_shared(
    store: &dyn Store,
    dir: &Path,
    key: &EncryptionKey,
) -> Result<ClusterCa, CaError> {
    loop {
        if let Some(kv) = store.get(CA_STORE_KEY).await? {
            let record: CaRecord =
                serde_json::from_slice(&kv.value).map_err(|e| CaError::Malformed(e.to_string()))?;
            let sealed = unhex(&record.sealed_key)
                .ok_or_else(|| CaError::Malformed("sealedKey is not hex".into()))?;
            let ca = ClusterCa::from_sealed(&record.certificate, &sealed, key)
                .map_err(CaError::WrongKey)?;
            write_local_copy(dir, &ca, &sealed)?;
            return Ok(ca);
        }
        let legacy = dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists();
        let ca = if legacy {
            ClusterCa::load_or_create(dir, key)?
        } else {
            ClusterCa::generate("hypermesh-cluster-ca")?
        };
        let sealed = ca.sealed_key(key)?;
        let record = CaRecord {
            certificate: ca.certificate_pem().to_string(),
            sealed_key: hex(&sealed),
        };
        let value = serde_json::to_vec(&record).map_err(|e| CaError::Malformed(e.to_string()))?;
        match store.create(CA_STORE_KEY, value).await {
            Ok(_) => {
                write_local_copy(dir, &ca, &sealed)?;
                return Ok(ca);
            }
            // Another apiserver created it first: use theirs.
            Err(StoreError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Re-seals the cluster CA's key in the store (and the local copy in `dir`) with
/// `key`'s primary key, after a rotation of the key file. False when the store holds
/// no CA (a plaintext `--insecure-dev` store).
pub async fn reseal_shared(
    store: &dyn Store,
    dir: &Path,
    key: &EncryptionKey,
) -> Result<bool, CaError> {
    loop {
        let Some(kv) = store.get(CA_STORE_KEY).await? else {
            return Ok(false);
        };
        let record: CaRecord =
            serde_json::from_slice(&kv.value).map_err(|e| CaError::Malformed(e.to_string()))?;
        let sealed = unhex(&record.sealed_key)
            .ok_or_else(|| CaError::Malformed("sealedKey is not hex".into()))?;
        let ca =
            ClusterCa::from_sealed(&record.certificate, &sealed, key).map_err(CaError::WrongKey)?;
        let resealed = ca.sealed_key(key)?;
        let record = CaRecord {
            certificate: record.certificate,
            sealed_key: hex(&resealed),
        };
        let value = serde_json::to_vec(&record).map_err(|e| CaError::Malformed(e.to_string()))?;
        match store.update(CA_STORE_KEY, value, kv.mod_revision).await {
            Ok(_) => {
                write_local_copy(dir, &ca, &resealed)?;
                let key_path = dir.join(CA_KEY_FILE);
                write_private(&key_path, &resealed).map_err(|source| PkiError::Io {
                    path: key_path.clone(),
                    source,
                })?;
                return Ok(true);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `pki/ca.crt` and `pki/ca.key.sealed` in the data directory, as a redb-only
/// apiserver always kept them (the key still sealed with the key file).
fn write_local_copy(dir: &Path, ca: &ClusterCa, sealed: &[u8]) -> Result<(), PkiError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let path = dir.join(CA_CERT_FILE);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(ca.certificate_pem()) {
        let key_path = dir.join(CA_KEY_FILE);
        write_private(&key_path, sealed).map_err(io(&key_path))?;
        std::fs::write(&path, ca.certificate_pem()).map_err(io(&path))?;
    }
    Ok(())
}
