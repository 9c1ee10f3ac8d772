//! Indexed triggers (kube-apiserver's `IndexedTrigger`): the window's entries grouped
//! by one field's value, so a watcher that selects one value (an agent's
//! `spec.nodeName=<node>` Instance watch) is woken only by changes that touch that
//! value and reads only those, instead of waking on and testing every change of the
//! kind. With 10,000 node watchers, a change wakes one of them, not 10,000
//! (docs/scaling.md).
//!
//! An entry is indexed under the value of both its previous and its current object,
//! so a watcher sees an object move out of its selection (DELETED). Each value's log
//! is bounded by the window: an entry leaves its logs when it leaves the window, and a
//! log is dropped when it holds no entry and no watcher waits on it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::watch;

use super::{Entry, Object};
use crate::admission::Kind;

/// The field the watch cache of `kind` indexes its watchers by, if any.
pub(crate) fn indexed_field(kind: &str) -> Option<&'static str> {
    match kind {
        // One watch per node (the agent's), each selecting its node's Instances.
        "Instance" => Some("spec.nodeName"),
        _ => None,
    }
}

/// One entry in a value's log.
pub struct Logged<K> {
    /// The window's entry.
    pub entry: Arc<Entry<K>>,
    /// Bytes counted for the log up to and including this entry.
    pub offset: u64,
}

/// The window's entries of one value of the indexed field.
pub struct TriggerLog<K> {
    /// Entries touching the value, oldest first (a subsequence of the window).
    pub entries: VecDeque<Logged<K>>,
    /// Bytes ever appended to this log (what a watcher's lag is measured in).
    pub total: u64,
    /// Every entry of this value at or before this revision has left the window (or
    /// may have: a log created after some left starts at the window's start).
    pub evicted_through: u64,
    /// Bumped to the cache revision when entries are appended: what the value's
    /// watchers wait on.
    wake: watch::Sender<u64>,
}

impl<K> TriggerLog<K> {
    /// Index of the first entry after `revision`.
    pub fn after(&self, revision: u64) -> usize {
        self.entries
            .partition_point(|e| e.entry.revision <= revision)
    }
}

/// A cache's index of its window by one field, kept under the cache's lock.
pub struct TriggerIndex<K> {
    field: Option<&'static str>,
    logs: HashMap<String, TriggerLog<K>>,
    /// Values appended to since the last [`TriggerIndex::wake_touched`].
    touched: HashSet<String>,
}

impl<K> TriggerIndex<K> {
    /// Drops `value`'s log if a watcher that stopped was its last reason to exist.
    pub fn release(&mut self, value: &str) {
        if self
            .logs
            .get(value)
            .is_some_and(|log| log.entries.is_empty() && log.wake.receiver_count() == 0)
        {
            self.logs.remove(value);
        }
    }
}

impl<K: Kind> TriggerIndex<K> {
    /// An index by `field` (none: nothing is indexed).
    pub fn new(field: Option<&'static str>) -> Self {
        TriggerIndex {
            field,
            logs: HashMap::new(),
            touched: HashSet::new(),
        }
    }

    /// The indexed field.
    pub fn field(&self) -> Option<&'static str> {
        self.field
    }

    /// The values an entry with these states is indexed under (none when the kind is
    /// not indexed): one or two, no repeats.
    pub fn values_of(
        &self,
        previous: Option<&Arc<Object<K>>>,
        current: Option<&Arc<Object<K>>>,
    ) -> Vec<String> {
        let Some(field) = self.field else {
            return Vec::new();
        };
        let mut values: Vec<String> = Vec::with_capacity(2);
        for object in [previous, current].into_iter().flatten() {
            let value = object.obj.field(field);
            if !values.contains(&value) {
                values.push(value);
            }
        }
        values
    }

    /// The log of `value`, if it holds entries or has watchers.
    pub fn log(&self, value: &str) -> Option<&TriggerLog<K>> {
        self.logs.get(value)
    }

    /// Adds an entry just appended to the window (`oldest`: the window's start).
    pub fn append(&mut self, entry: &Arc<Entry<K>>, oldest: u64) {
        for value in &entry.triggers {
            let log = self.log_mut(value, oldest);
            log.total += entry.charge as u64;
            log.entries.push_back(Logged {
                entry: entry.clone(),
                offset: log.total,
            });
            if !self.touched.contains(value) {
                self.touched.insert(value.clone());
            }
        }
    }

    /// Removes an entry that left the window (the oldest of its logs).
    pub fn evict(&mut self, entry: &Entry<K>) {
        for value in &entry.triggers {
            let Some(log) = self.logs.get_mut(value) else {
                continue;
            };
            if log
                .entries
                .front()
                .is_some_and(|e| e.entry.revision == entry.revision)
            {
                log.entries.pop_front();
            }
            log.evicted_through = log.evicted_through.max(entry.revision);
            if log.entries.is_empty() && log.wake.receiver_count() == 0 {
                self.logs.remove(value);
            }
        }
    }

    /// Empties every log: the window was dropped and starts again after `revision`.
    /// Every watcher is woken to find its position outside the window.
    pub fn reset(&mut self, revision: u64) {
        self.logs.retain(|_, log| log.wake.receiver_count() > 0);
        for log in self.logs.values_mut() {
            log.entries.clear();
            log.evicted_through = revision;
            log.wake.send_replace(revision);
        }
        self.touched.clear();
    }

    /// Wakes the watchers of every value appended to since the last call.
    pub fn wake_touched(&mut self, revision: u64) {
        for value in self.touched.drain() {
            if let Some(log) = self.logs.get(&value) {
                log.wake.send_replace(revision);
            }
        }
    }

    /// Wakes every watcher (the cache is closing).
    pub fn wake_all(&self, revision: u64) {
        for log in self.logs.values() {
            log.wake.send_replace(revision);
        }
    }

    /// A watcher of `value`'s changes (`oldest`: the window's start), and the bytes
    /// its log holds so far (where the watcher's lag counts from).
    pub fn subscribe(&mut self, value: &str, oldest: u64) -> (watch::Receiver<u64>, u64) {
        let log = self.log_mut(value, oldest);
        (log.wake.subscribe(), log.total)
    }

    fn log_mut(&mut self, value: &str, oldest: u64) -> &mut TriggerLog<K> {
        if !self.logs.contains_key(value) {
            self.logs.insert(
                value.to_string(),
                TriggerLog {
                    entries: VecDeque::new(),
                    total: 0,
                    evicted_through: oldest,
                    wake: watch::channel(0).0,
                },
            );
        }
        self.logs
            .get_mut(value)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use hypermesh_api::v1::{Instance, InstanceSpec, ObjectMeta};

    use super::*;

    fn on_node(name: &str, node: &str) -> Arc<Object<Instance>> {
        Arc::new(Object {
            obj: Instance {
                metadata: Some(ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                spec: Some(InstanceSpec {
                    node_name: node.into(),
                    ..Default::default()
                }),
                status: None,
            },
            charge: 300,
            added: OnceLock::new(),
            modified: OnceLock::new(),
            gone: OnceLock::new(),
        })
    }

    fn entry(
        index: &TriggerIndex<Instance>,
        revision: u64,
        previous: Option<Arc<Object<Instance>>>,
        current: Option<Arc<Object<Instance>>>,
    ) -> Arc<Entry<Instance>> {
        Arc::new(Entry {
            revision,
            key: "/instances/default/i".into(),
            triggers: index.values_of(previous.as_ref(), current.as_ref()),
            current,
            previous,
            deleted: OnceLock::new(),
            offset: 0,
            charge: 1000,
        })
    }

    fn index() -> TriggerIndex<Instance> {
        TriggerIndex::new(indexed_field("Instance"))
    }

    #[test]
    fn a_binding_is_in_the_logs_of_both_values_until_it_leaves_the_window() {
        let mut index = index();
        let bind = entry(&index, 7, Some(on_node("i", "")), Some(on_node("i", "n1")));
        assert_eq!(bind.triggers, ["", "n1"]);
        index.append(&bind, 0);
        for value in ["", "n1"] {
            let log = index.log(value).expect("log");
            assert_eq!(log.entries.len(), 1);
            assert_eq!(log.total, 1000);
            assert_eq!(log.after(6), 0);
            assert_eq!(log.after(7), 1);
        }
        assert!(index.log("n2").is_none());

        index.evict(&bind);
        assert!(index.log("").is_none(), "no entry and no watcher: dropped");
        assert!(index.log("n1").is_none());
    }

    #[test]
    fn a_watched_value_keeps_its_log_and_remembers_what_left_the_window() {
        let mut index = index();
        let (_watch, total) = index.subscribe("n1", 3);
        assert_eq!(total, 0);
        assert_eq!(index.log("n1").expect("log").evicted_through, 3);
        let create = entry(&index, 9, None, Some(on_node("i", "n1")));
        index.append(&create, 3);
        index.evict(&create);
        let log = index.log("n1").expect("a watcher keeps the log");
        assert!(log.entries.is_empty());
        assert_eq!(log.evicted_through, 9, "a watcher at 8 missed it");
        assert_eq!(log.total, 1000, "lag counts on across evictions");
    }

    #[test]
    fn only_the_watchers_of_a_touched_value_wake() {
        let mut index = index();
        let (mut one, _) = index.subscribe("n1", 0);
        let (two, _) = index.subscribe("n2", 0);
        index.append(&entry(&index, 5, None, Some(on_node("i", "n1"))), 0);
        index.wake_touched(5);
        assert!(one.has_changed().expect("open"));
        assert!(!two.has_changed().expect("open"));
        assert_eq!(*one.borrow_and_update(), 5);
        index.wake_touched(6);
        assert!(
            !one.has_changed().expect("open"),
            "touched once, woken once"
        );

        index.reset(8);
        assert!(one.has_changed().expect("open") && two.has_changed().expect("open"));
        assert_eq!(index.log("n1").expect("watched").evicted_through, 8);
    }

    #[test]
    fn a_log_goes_with_its_last_watcher() {
        let mut index = index();
        let watches: Vec<_> = (0..1000)
            .map(|i| index.subscribe(&format!("node-{i}"), 0).0)
            .collect();
        assert_eq!(index.logs.len(), 1000);
        drop(watches);
        for i in 0..1000 {
            index.release(&format!("node-{i}"));
        }
        assert!(
            index.logs.is_empty(),
            "1,000 watchers came and went: nothing left"
        );
    }

    #[test]
    fn kinds_without_an_indexed_field_index_nothing() {
        let index = TriggerIndex::<Instance>::new(None);
        let e = entry(&index, 1, None, Some(on_node("i", "n1")));
        assert!(e.triggers.is_empty());
    }
}
