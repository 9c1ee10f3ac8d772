//! Secrets encrypted at rest, for any [`Store`]: every value under `/secrets/` is
//! sealed with the apiserver's encryption key file (AES-256-GCM, the store key as
//! associated data, so a value cannot be moved to another namespace or name) before it
//! reaches the backend, and opened on the way back (get, list, delete, watch). The
//! backend, its history and its compaction therefore never hold a Secret in plaintext.
//!
//! A value that is not sealed (written before this layer existed) is read as it is;
//! [`reseal_all`] (run by `hm-apiserver rotate-encryption-key`) seals it with the
//! primary key, as it does every value sealed with an older key.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use hypermesh_trust::at_rest::EncryptionKey;
use tokio::sync::mpsc;

use super::Store;
use super::{KeyValue, ListPage, StoreError, StoreEvent, WatchItem, WatchStream};

/// Store keys of Secrets start with this.
pub const SECRETS_PREFIX: &str = "/secrets/";

/// Events a decrypting watch may hold between the backend and its reader.
const WATCH_BUFFER: usize = 64;

/// A [`Store`] that seals Secrets before they reach `inner`.
pub struct SecretsAtRest {
    inner: Arc<dyn Store>,
    key: Arc<EncryptionKey>,
}

impl SecretsAtRest {
    /// `inner` with Secrets sealed under `key`.
    pub fn new(inner: Arc<dyn Store>, key: Arc<EncryptionKey>) -> Self {
        SecretsAtRest { inner, key }
    }
}

fn is_secret(key: &str) -> bool {
    key.starts_with(SECRETS_PREFIX)
}

fn seal(key: &EncryptionKey, store_key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if !is_secret(store_key) {
        return Ok(value);
    }
    key.seal(store_key, &value)
        .map_err(|e| StoreError::Backend(format!("sealing {store_key}: {e}")))
}

fn open_value(key: &EncryptionKey, store_key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if !is_secret(store_key) || !EncryptionKey::is_sealed(&value) {
        return Ok(value);
    }
    key.open(store_key, &value).map_err(|e| {
        StoreError::Backend(format!(
            "{e} (key file {}); give the apiserver the key file the Secret was written with",
            key.path().display()
        ))
    })
}

fn open_kv(key: &EncryptionKey, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
    kv.value = open_value(key, &kv.key, std::mem::take(&mut kv.value))?;
    Ok(kv)
}

fn open_event(key: &EncryptionKey, event: &StoreEvent) -> Result<StoreEvent, StoreError> {
    Ok(StoreEvent {
        revision: event.revision,
        key: event.key.clone(),
        current: event
            .current
            .clone()
            .map(|kv| open_kv(key, kv))
            .transpose()?,
        previous: event
            .previous
            .clone()
            .map(|kv| open_kv(key, kv))
            .transpose()?,
    })
}

impl Store for SecretsAtRest {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        async move {
            let kv = self.inner.get(key).await?;
            kv.map(|kv| open_kv(&self.key, kv)).transpose()
        }
        .boxed()
    }

    fn create<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let value = seal(&self.key, key, value)?;
            self.inner.create(key, value).await
        }
        .boxed()
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        async move {
            let value = seal(&self.key, key, value)?;
            self.inner.update(key, value, expected).await
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<(u64, KeyValue), StoreError>> {
        async move {
            let (revision, kv) = self.inner.delete(key, expected).await?;
            Ok((revision, open_kv(&self.key, kv)?))
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&'a str>,
        limit: usize,
        revision: u64,
    ) -> BoxFuture<'a, Result<ListPage, StoreError>> {
        async move {
            let page = self
                .inner
                .list(prefix, start_after, limit, revision)
                .await?;
            Ok(ListPage {
                items: page
                    .items
                    .into_iter()
                    .map(|kv| open_kv(&self.key, kv))
                    .collect::<Result<_, _>>()?,
                revision: page.revision,
                more: page.more,
            })
        }
        .boxed()
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: u64,
        progress_every: Option<Duration>,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        async move {
            let mut events = self.inner.watch(prefix, after, progress_every).await?;
            if !(SECRETS_PREFIX.starts_with(prefix) || prefix.starts_with(SECRETS_PREFIX)) {
                return Ok(events);
            }
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            let key = self.key.clone();
            tokio::spawn(async move {
                while let Some(item) = events.recv().await {
                    let item = match item {
                        Ok(WatchItem::Event(event)) if is_secret(&event.key) => {
                            open_event(&key, &event).map(|e| WatchItem::Event(Arc::new(e)))
                        }
                        other => other,
                    };
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
            });
            Ok(rx)
        }
        .boxed()
    }

    fn current_revision(&self) -> u64 {
        self.inner.current_revision()
    }

    fn fresh_revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.fresh_revision()
    }

    fn request_progress(&self) -> bool {
        self.inner.request_progress()
    }

    fn compacted_revision(&self) -> u64 {
        self.inner.compacted_revision()
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.compact(revision)
    }
}

/// Seals every Secret in `raw` (a store without this layer) with `key`'s primary key:
/// values sealed with an older key of the ring, and values never sealed. Returns how
/// many Secrets were written. Concurrent writers are tolerated (a conflict re-reads).
pub async fn reseal_all(raw: &dyn Store, key: &EncryptionKey) -> Result<usize, StoreError> {
    let mut start_after: Option<String> = None;
    let mut resealed = 0;
    loop {
        let page = raw
            .list(SECRETS_PREFIX, start_after.as_deref(), 256, 0)
            .await?;
        for kv in &page.items {
            let mut current = kv.clone();
            loop {
                let plain = open_value(key, &current.key, current.value.clone())?;
                let value = seal(key, &current.key, plain)?;
                match raw.update(&current.key, value, current.mod_revision).await {
                    Ok(_) => {
                        resealed += 1;
                        break;
                    }
                    Err(StoreError::Conflict { .. }) => match raw.get(&current.key).await? {
                        Some(again) => current = again,
                        None => break,
                    },
                    Err(StoreError::NotFound(_)) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        if !page.more || page.items.is_empty() {
            return Ok(resealed);
        }
        start_after = page.items.last().map(|kv| kv.key.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{RedbOptions, RedbStore};

    #[tokio::test]
    async fn secrets_are_sealed_in_the_backend_and_open_through_the_layer() {
        let dir = tempfile::tempdir().expect("dir");
        let raw: Arc<dyn Store> = Arc::new(
            RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).expect("open"),
        );
        let key = Arc::new(EncryptionKey::load_or_create(&dir.path().join("k")).expect("key"));
        let store = SecretsAtRest::new(raw.clone(), key.clone());
        store
            .create("/secrets/default/db", b"plaintext-value".to_vec())
            .await
            .expect("create");
        store
            .create("/routes/default/web", b"route".to_vec())
            .await
            .expect("create");
        let stored = raw
            .get("/secrets/default/db")
            .await
            .expect("get")
            .expect("kv");
        assert!(EncryptionKey::is_sealed(&stored.value));
        let through = store
            .get("/secrets/default/db")
            .await
            .expect("get")
            .expect("kv");
        assert_eq!(through.value, b"plaintext-value");
        let route = raw
            .get("/routes/default/web")
            .await
            .expect("get")
            .expect("kv");
        assert_eq!(route.value, b"route", "other kinds are untouched");
        // Moving the sealed value to another name does not open.
        raw.create("/secrets/other/db", stored.value.clone())
            .await
            .expect("create");
        assert!(store.get("/secrets/other/db").await.is_err());
        raw.delete("/secrets/other/db", None).await.expect("delete");
        // Rotation: a new primary, everything resealed, still readable.
        let rotated = Arc::new(EncryptionKey::rotate_file(&dir.path().join("k")).expect("rotate"));
        assert_eq!(reseal_all(raw.as_ref(), &rotated).await.expect("reseal"), 1);
        let retired = EncryptionKey::retire_previous_file(&dir.path().join("k")).expect("retire");
        let again = SecretsAtRest::new(raw, Arc::new(retired));
        let through = again
            .get("/secrets/default/db")
            .await
            .expect("get")
            .expect("kv");
        assert_eq!(through.value, b"plaintext-value");
    }
}
