//! Which [`Store`] an apiserver runs on (`--store`): the embedded redb file in its data
//! directory (the default, one host), or an etcd cluster that several apiservers share.

use std::path::Path;
use std::sync::Arc;

use super::etcd::{EtcdOptions, EtcdStore};
use super::redb::{RedbOptions, RedbStore};
use super::{Store, StoreError};

/// The store an apiserver opens.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// `store.redb` in the data directory.
    Redb(RedbOptions),
    /// An etcd cluster (`--store etcd://host:2379,…`).
    Etcd(EtcdOptions),
}

impl Default for StoreBackend {
    fn default() -> Self {
        StoreBackend::Redb(RedbOptions::default())
    }
}

impl StoreBackend {
    /// Opens (or connects to) the store; `data_dir` holds the redb file.
    pub async fn open(&self, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            StoreBackend::Redb(options) => Arc::new(RedbStore::open(
                &data_dir.join("store.redb"),
                options.clone(),
            )?),
            StoreBackend::Etcd(options) => Arc::new(EtcdStore::connect(options.clone()).await?),
        })
    }

    /// Keeps `revisions` of history (`--history-revisions`), whichever the store.
    pub fn set_retain_revisions(&mut self, revisions: u64) {
        match self {
            StoreBackend::Redb(options) => options.retain_revisions = revisions,
            StoreBackend::Etcd(options) => options.retain_revisions = revisions,
        }
    }

    /// `redb` or `etcd`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            StoreBackend::Redb(_) => "redb",
            StoreBackend::Etcd(_) => "etcd",
        }
    }
}
