//! Transitional shim. Garbage collection and namespace deletion are controllers now
//! (`hypermesh_controllers::gc`: reconcile functions on the runtime's driver, talking
//! to the API like any client), started beside the server by [`crate::in_process`]
//! (`hm-apiserver` and the test harness do). `server.rs` still spawns this type, so
//! it remains until that spawn is replaced by `in_process::run`; it does nothing but
//! wait for shutdown.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Kept for `server.rs`; see the module documentation.
#[derive(Debug)]
pub struct GarbageCollector;

impl GarbageCollector {
    /// The shim (the store is not used: the collector reads through the API).
    pub fn new(_store: Arc<dyn Store>) -> Self {
        GarbageCollector
    }

    /// Waits for `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
    }
}
