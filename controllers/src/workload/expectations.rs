//! Creations and deletions a reconcile has issued but the Instance cache has not
//! shown yet. Until the cache catches up, the next reconcile of that Workload waits,
//! so it never counts on a stale view (and, say, creates the same replica twice).
//! Expectations that are never met (an event lost to a re-list) lapse after a
//! timeout.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use hypermesh_api::v1::Instance;
use hypermesh_runtime::reflector::{ObjectKey, Store};
use tokio::time::Instant;
use tracing::warn;

use super::template::is_deleting;

/// How long unmet expectations hold a Workload back.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Pending {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    deadline: Instant,
}

/// Pending creations and deletions per Workload key.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ObjectKey, Pending>) -> T) -> T {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut pending)
    }

    /// Records that Instances `creates` are about to be created and `deletes`
    /// deleted for the Workload `key`.
    pub fn expect(
        &self,
        key: &ObjectKey,
        creates: impl IntoIterator<Item = String>,
        deletes: impl IntoIterator<Item = String>,
    ) {
        self.with(|pending| {
            let entry = pending.entry(key.clone()).or_insert_with(|| Pending {
                creates: HashSet::new(),
                deletes: HashSet::new(),
                deadline: Instant::now(),
            });
            entry.creates.extend(creates);
            entry.deletes.extend(deletes);
            entry.deadline = Instant::now() + EXPECTATION_TIMEOUT;
        });
    }

    /// The creation of `name` failed: it will never be seen.
    pub fn creation_failed(&self, key: &ObjectKey, name: &str) {
        self.with(|pending| {
            if let Some(entry) = pending.get_mut(key) {
                entry.creates.remove(name);
            }
        });
    }

    /// Instance `name` was deleted (seen in a watch event): whether we created it
    /// or deleted it, nothing more is to be seen of it.
    pub fn observed_deletion(&self, key: &ObjectKey, name: &str) {
        self.with(|pending| {
            if let Some(entry) = pending.get_mut(key) {
                entry.creates.remove(name);
                entry.deletes.remove(name);
            }
        });
    }

    /// Drops everything about `key` (its Workload is gone).
    pub fn forget(&self, key: &ObjectKey) {
        self.with(|pending| pending.remove(key));
    }

    /// `None` when the cache shows every expected change for `key` (the Workload
    /// may be reconciled), else how long until the expectations lapse.
    pub fn unmet(&self, key: &ObjectKey, cache: &Store<Instance>) -> Option<Duration> {
        self.with(|pending| {
            let entry = pending.get_mut(key)?;
            entry
                .creates
                .retain(|name| cache.get(&key.0, name).is_none());
            entry.deletes.retain(|name| {
                cache
                    .get(&key.0, name)
                    .is_some_and(|instance| !is_deleting(&instance))
            });
            let now = Instant::now();
            if entry.creates.is_empty() && entry.deletes.is_empty() {
                pending.remove(key);
                return None;
            }
            if now >= entry.deadline {
                warn!(
                    namespace = %key.0,
                    workload = %key.1,
                    creates = entry.creates.len(),
                    deletes = entry.deletes.len(),
                    "instance changes never showed up in the cache; reconciling anyway"
                );
                pending.remove(key);
                return None;
            }
            Some(entry.deadline - now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::ObjectMeta;
    use hypermesh_runtime::reflector;
    use hypermesh_runtime::watcher::Event;

    fn instance(name: &str) -> Instance {
        Instance {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn met_once_the_cache_shows_the_changes() {
        let (writer, cache) = reflector::store::<Instance>();
        writer.apply(&Event::Restarted(vec![instance("old")]));
        let key = ("default".to_string(), "web".to_string());
        let e = Expectations::default();
        assert_eq!(e.unmet(&key, &cache), None);
        e.expect(
            &key,
            ["new".to_string(), "lost".to_string()],
            ["old".to_string()],
        );
        assert!(e.unmet(&key, &cache).is_some());
        writer.apply(&Event::Applied(instance("new")));
        writer.apply(&Event::Deleted(instance("old")));
        assert!(e.unmet(&key, &cache).is_some());
        e.creation_failed(&key, "lost");
        assert_eq!(e.unmet(&key, &cache), None);
    }

    #[tokio::test]
    async fn a_created_then_deleted_instance_counts_as_seen() {
        let (_writer, cache) = reflector::store::<Instance>();
        let key = ("default".to_string(), "web".to_string());
        let e = Expectations::default();
        e.expect(&key, ["gone".to_string()], []);
        e.observed_deletion(&key, "gone");
        assert_eq!(e.unmet(&key, &cache), None);
    }
}
