//! The scheduling queue: Instances waiting for a node, highest priority first (then
//! oldest first), and a parking area for those that fit nowhere, retried with
//! back-off once the cluster has changed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use hypermesh_runtime::backoff::Backoff;
use tokio::time::Instant;

use crate::cluster::InstanceKey;

/// Delays before a parked Instance is tried again, by attempts so far.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// Parked Instances are retried at least this often even if nothing changed.
const FLUSH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    priority: i32,
    seq: Reverse<u64>,
    key: InstanceKey,
}

#[derive(Debug, Clone)]
struct Parked {
    priority: i32,
    attempts: u32,
    retry_at: Instant,
    parked_at: Instant,
    cluster_generation: u64,
}

/// Active heap plus parked set.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    active: BinaryHeap<Entry>,
    queued: HashSet<InstanceKey>,
    parked: HashMap<InstanceKey, Parked>,
    attempts: HashMap<InstanceKey, u32>,
    seq: u64,
}

impl SchedulingQueue {
    /// Queues an Instance for an attempt now (no-op when already queued).
    pub fn add(&mut self, key: InstanceKey, priority: i32) {
        if self.queued.contains(&key) {
            return;
        }
        self.parked.remove(&key);
        self.seq += 1;
        self.queued.insert(key.clone());
        self.active.push(Entry {
            priority,
            seq: Reverse(self.seq),
            key,
        });
    }

    /// True when the Instance waits in the parking area.
    pub fn is_parked(&self, key: &InstanceKey) -> bool {
        self.parked.contains_key(key)
    }

    /// The next Instance to try.
    pub fn pop(&mut self) -> Option<InstanceKey> {
        while let Some(entry) = self.active.pop() {
            if self.queued.remove(&entry.key) {
                return Some(entry.key);
            }
        }
        None
    }

    /// Parks an Instance that fit nowhere; returns how many attempts it has had.
    pub fn park(&mut self, key: InstanceKey, priority: i32, cluster_generation: u64) -> u32 {
        self.queued.remove(&key);
        let attempts = self.attempts.entry(key.clone()).or_insert(0);
        *attempts = attempts.saturating_add(1);
        let backoff = BACKOFF.delay(*attempts);
        let now = Instant::now();
        let n = *attempts;
        self.parked.insert(
            key,
            Parked {
                priority,
                attempts: n,
                retry_at: now + backoff,
                parked_at: now,
                cluster_generation,
            },
        );
        n
    }

    /// Forgets an Instance (bound or deleted).
    pub fn remove(&mut self, key: &InstanceKey) {
        self.queued.remove(key);
        self.parked.remove(key);
        self.attempts.remove(key);
    }

    /// Moves parked Instances whose back-off is over back to the active heap, if the
    /// cluster changed since they were parked (or they waited a long time anyway).
    pub fn requeue_due(&mut self, cluster_generation: u64) {
        let now = Instant::now();
        let due: Vec<(InstanceKey, i32)> = self
            .parked
            .iter()
            .filter(|(_, p)| {
                p.retry_at <= now
                    && (p.cluster_generation != cluster_generation
                        || now - p.parked_at >= FLUSH_INTERVAL)
            })
            .map(|(k, p)| (k.clone(), p.priority))
            .collect();
        for (key, priority) in due {
            self.add(key, priority);
        }
    }

    /// Instances waiting for an attempt now.
    pub fn active_len(&self) -> usize {
        self.queued.len()
    }

    /// Instances parked.
    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    /// Attempts so far for an Instance.
    pub fn attempts(&self, key: &InstanceKey) -> u32 {
        self.attempts.get(key).copied().unwrap_or(0)
    }

    /// Parked Instances retried on a cluster change (for a test's eye).
    pub fn parked_attempts(&self, key: &InstanceKey) -> Option<u32> {
        self.parked.get(key).map(|p| p.attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> InstanceKey {
        ("default".into(), n.into())
    }

    #[test]
    fn highest_priority_then_oldest_first() {
        let mut q = SchedulingQueue::default();
        q.add(k("low"), 0);
        q.add(k("high"), 10);
        q.add(k("low2"), 0);
        q.add(k("high"), 10);
        assert_eq!(q.pop(), Some(k("high")));
        assert_eq!(q.pop(), Some(k("low")));
        assert_eq!(q.pop(), Some(k("low2")));
        assert_eq!(q.pop(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn parked_instances_return_after_backoff_and_a_change() {
        let mut q = SchedulingQueue::default();
        q.add(k("a"), 0);
        let key = q.pop().unwrap();
        assert_eq!(q.park(key, 0, 1), 1);
        q.requeue_due(2);
        assert_eq!(q.pop(), None, "back-off not over yet");
        tokio::time::advance(BACKOFF.initial).await;
        q.requeue_due(1);
        assert_eq!(q.pop(), None, "nothing changed in the cluster");
        q.requeue_due(2);
        assert_eq!(q.pop(), Some(k("a")));
    }
}
