//! Revoked certificate serials and the open connections of each serial. A watch on
//! the store's Certificate records keeps the set current, so every apiserver on the
//! same store refuses a revoked certificate at the next handshake and closes the
//! connections it already has, within moments of the revocation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hypermesh_api::v1;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{Store, StoreError, WatchItem};

/// The store prefix of Certificate records.
const PREFIX: &str = "/certificates/";

/// Revoked serials and the connections open per serial.
#[derive(Debug, Default)]
pub struct Revocations {
    revoked: RwLock<HashSet<String>>,
    open: Mutex<HashMap<String, Vec<CancellationToken>>>,
}

impl Revocations {
    /// True when `serial` is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(serial)
    }

    /// A token cancelled when `serial` is revoked (at once if it already is).
    pub fn track(&self, serial: &str) -> CancellationToken {
        let token = CancellationToken::new();
        if self.is_revoked(serial) {
            token.cancel();
            return token;
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tokens = open.entry(serial.to_string()).or_default();
        tokens.retain(|t| !t.is_cancelled());
        tokens.push(token.clone());
        token
    }

    /// Revokes `serial`: refused from now on, its open connections closed.
    pub fn revoke(&self, serial: &str) {
        let fresh = self
            .revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(serial.to_string());
        let tokens = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(serial)
            .unwrap_or_default();
        if fresh {
            info!(serial, connections = tokens.len(), "certificate revoked");
        }
        for token in tokens {
            token.cancel();
        }
    }

    fn apply(&self, value: &[u8]) {
        let Ok(cert) = v1::Certificate::decode(value) else {
            return;
        };
        if cert.spec.as_ref().is_some_and(|s| s.revoked)
            && let Some(meta) = cert.metadata.as_ref()
        {
            self.revoke(&meta.name);
        }
    }

    /// Keeps the set current from the store until `shutdown`.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, shutdown: CancellationToken) {
        loop {
            match self.follow_once(store.as_ref(), &shutdown).await {
                Ok(()) => return,
                Err(e) => warn!(error = %e, "revocation watch restarting"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn follow_once(
        &self,
        store: &dyn Store,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        let page = store.list(PREFIX, None, 0, 0).await?;
        for kv in &page.items {
            self.apply(&kv.value);
        }
        let mut watch = store.watch(PREFIX, page.revision, None).await?;
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                item = watch.recv() => item,
            };
            match item {
                None => return Err(StoreError::Backend("watch ended".into())),
                Some(Err(e)) => return Err(e),
                Some(Ok(WatchItem::Event(event))) => {
                    if let Some(current) = &event.current {
                        self.apply(&current.value);
                    }
                }
                Some(Ok(WatchItem::Progress(_))) => {}
            }
        }
    }
}
