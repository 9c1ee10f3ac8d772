//! A work queue of keys: adding a key already waiting is a no-op, a key being worked
//! on is not handed out twice, and failed keys come back after an exponential back-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Back-off bounds for failed keys.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Inner<T> {
    queue: VecDeque<T>,
    queued: HashSet<T>,
    processing: HashSet<T>,
    /// Added again while being processed: requeue when done.
    dirty: HashSet<T>,
    failures: HashMap<T, u32>,
    closed: bool,
}

/// The queue; clone it to share between producers and workers.
#[derive(Debug)]
pub struct WorkQueue<T> {
    inner: Arc<Mutex<Inner<T>>>,
    notify: Arc<Notify>,
    backoff: Backoff,
}

impl<T> Clone for WorkQueue<T> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
            notify: self.notify.clone(),
            backoff: self.backoff,
        }
    }
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    /// An empty queue.
    pub fn new(backoff: Backoff) -> Self {
        let inner = Inner {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            processing: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            closed: false,
        };
        WorkQueue {
            inner: Arc::new(Mutex::new(inner)),
            notify: Arc::new(Notify::new()),
            backoff,
        }
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: T) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.closed || inner.queued.contains(&key) {
            return;
        }
        if inner.processing.contains(&key) {
            inner.dirty.insert(key);
            return;
        }
        inner.queued.insert(key.clone());
        inner.queue.push_back(key);
        drop(inner);
        self.notify.notify_one();
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: T, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Waits for the next key; `None` once the queue is shut down.
    pub async fn next(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.inner.lock().ok()?;
                if let Some(key) = inner.queue.pop_front() {
                    inner.queued.remove(&key);
                    inner.processing.insert(key.clone());
                    if !inner.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                if inner.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` done; on `Err` it is retried after its back-off.
    pub fn done(&self, key: T, succeeded: bool) {
        let delay = {
            let Ok(mut inner) = self.inner.lock() else {
                return;
            };
            inner.processing.remove(&key);
            let again = inner.dirty.remove(&key);
            if succeeded {
                inner.failures.remove(&key);
                if again {
                    drop(inner);
                    self.add(key);
                }
                return;
            }
            let failures = inner.failures.entry(key.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            let exp = (*failures - 1).min(20);
            self.backoff
                .initial
                .saturating_mul(1 << exp)
                .min(self.backoff.max)
        };
        self.add_after(key, delay);
    }

    /// How many times `key` has failed in a row.
    pub fn failures(&self, key: &T) -> u32 {
        self.inner
            .lock()
            .map(|i| i.failures.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Keys waiting (not counting those being processed).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.queue.len()).unwrap_or(0)
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub fn shut_down(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.closed = true;
        }
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deduplicates_and_requeues_dirty_keys() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.next().await.unwrap();
        assert_eq!(a, "a");
        q.add("a"); // while processing: comes back after done
        assert_eq!(q.next().await, Some("b"));
        q.done("b", true);
        q.done("a", true);
        assert_eq!(q.next().await, Some("a"));
    }

    #[tokio::test]
    async fn failed_keys_back_off_exponentially() {
        let q = WorkQueue::new(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
        });
        q.add(1);
        for expected in [1, 2, 3] {
            let k = q.next().await.unwrap();
            q.done(k, false);
            assert_eq!(q.failures(&1), expected);
        }
        let started = tokio::time::Instant::now();
        let k = tokio::time::timeout(Duration::from_secs(5), q.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(k, 1);
        assert!(started.elapsed() >= Duration::from_millis(30));
        q.done(k, true);
        assert_eq!(q.failures(&1), 0);
    }

    #[tokio::test]
    async fn shut_down_wakes_workers() {
        let q: WorkQueue<u8> = WorkQueue::new(Backoff::default());
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        q.shut_down();
        assert_eq!(worker.await.unwrap(), None);
    }
}
