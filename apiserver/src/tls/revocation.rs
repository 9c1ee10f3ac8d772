//! Revoked certificate serials and the open connections of each serial. A watch on
//! the store's Certificate records keeps the set current, so every apiserver on the
//! same store refuses a revoked certificate at the next handshake and closes the
//! connections it already has, within moments of the revocation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use hypermesh_api::v1;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::store::Store;
use crate::store::follow::{Follower, Seen, follow};

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
        follow(
            store.as_ref(),
            &[PREFIX],
            "revocations",
            self.as_ref(),
            &shutdown,
        )
        .await;
    }
}

#[tonic::async_trait]
impl Follower for Revocations {
    async fn seen(&self, _key: &str, seen: Seen<'_>) {
        // A revoked serial stays revoked, even when its record is deleted.
        if let Seen::Listed(value) | Seen::Created(value) | Seen::Updated(value) = seen {
            self.apply(value);
        }
    }
}
