//! A work queue of keys: adding a key already waiting is a no-op, a key being worked
//! on is not handed out twice, failed keys come back after an exponential back-off,
//! and keys can be scheduled for later (only the earliest wake-up of a key is kept,
//! in one timer list rather than a task per wake-up).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backoff::Backoff;

#[derive(Debug)]
struct Inner<T> {
    queue: VecDeque<T>,
    queued: HashSet<T>,
    processing: HashSet<T>,
    /// Added again while being processed: requeue when done.
    dirty: HashSet<T>,
    failures: HashMap<T, u32>,
    /// Scheduled wake-ups, earliest first; `seq` keeps equal instants apart.
    timers: BTreeSet<(Instant, u64)>,
    timer_keys: HashMap<(Instant, u64), T>,
    /// The wake-up scheduled for each key.
    due: HashMap<T, (Instant, u64)>,
    seq: u64,
    closed: bool,
}

impl<T: Clone + Eq + Hash> Inner<T> {
    /// Queues `key` now; false when nothing changed.
    fn push(&mut self, key: T) -> bool {
        if self.closed || self.queued.contains(&key) {
            return false;
        }
        if self.processing.contains(&key) {
            self.dirty.insert(key);
            return false;
        }
        self.queued.insert(key.clone());
        self.queue.push_back(key);
        true
    }

    /// Moves every timer that is due at `now` into the queue; returns the next one.
    fn fire_timers(&mut self, now: Instant) -> Option<Instant> {
        while let Some(&first) = self.timers.first() {
            if first.0 > now {
                return Some(first.0);
            }
            self.timers.remove(&first);
            if let Some(key) = self.timer_keys.remove(&first) {
                self.due.remove(&key);
                self.push(key);
            }
        }
        None
    }

    fn cancel_timer(&mut self, key: &T) {
        if let Some(slot) = self.due.remove(key) {
            self.timers.remove(&slot);
            self.timer_keys.remove(&slot);
        }
    }
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
    /// An empty queue whose failed keys are retried after `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        let inner = Inner {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            processing: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            timers: BTreeSet::new(),
            timer_keys: HashMap::new(),
            due: HashMap::new(),
            seq: 0,
            closed: false,
        };
        WorkQueue {
            inner: Arc::new(Mutex::new(inner)),
            notify: Arc::new(Notify::new()),
            backoff,
        }
    }

    /// The state; a panic while holding the lock leaves nothing half-done that
    /// matters, so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: T) {
        if self.lock().push(key) {
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`, unless it is already due by then.
    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        // `checked_add`: a delay too long to represent means "never".
        let Some(at) = Instant::now().checked_add(delay) else {
            return;
        };
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        if inner.due.get(&key).is_some_and(|slot| slot.0 <= at) {
            return;
        }
        inner.cancel_timer(&key);
        inner.seq = inner.seq.wrapping_add(1);
        let slot = (at, inner.seq);
        inner.timers.insert(slot);
        inner.timer_keys.insert(slot, key.clone());
        inner.due.insert(key, slot);
        drop(inner);
        // A waiting worker recomputes its sleep with the new earliest timer.
        self.notify.notify_one();
    }

    /// Waits for the next key; `None` once the queue is shut down.
    pub async fn next(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            let wake = {
                let mut inner = self.lock();
                let wake = inner.fire_timers(Instant::now());
                if let Some(key) = inner.queue.pop_front() {
                    inner.queued.remove(&key);
                    inner.processing.insert(key.clone());
                    if !inner.queue.is_empty() || wake.is_some() {
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                if inner.closed {
                    return None;
                }
                wake
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` done; when it failed it is retried after its back-off.
    pub fn done(&self, key: T, succeeded: bool) {
        let delay = {
            let mut inner = self.lock();
            inner.processing.remove(&key);
            let again = inner.dirty.remove(&key);
            if succeeded {
                inner.failures.remove(&key);
                if again && inner.push(key) {
                    drop(inner);
                    self.notify.notify_one();
                }
                return;
            }
            let failures = inner.failures.entry(key.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            self.backoff.delay(*failures)
        };
        self.add_after(key, delay);
    }

    /// How many times `key` has failed in a row.
    pub fn failures(&self, key: &T) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// Forgets `key`'s failures and scheduled wake-up (its object is gone).
    pub fn forget(&self, key: &T) {
        let mut inner = self.lock();
        inner.failures.remove(key);
        inner.cancel_timer(key);
    }

    /// Keys waiting now (not counting those being processed or scheduled for later).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing waits now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys scheduled for later.
    pub fn scheduled(&self) -> usize {
        self.lock().due.len()
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub fn shut_down(&self) {
        {
            let mut inner = self.lock();
            inner.closed = true;
            inner.timers.clear();
            inner.timer_keys.clear();
            inner.due.clear();
        }
        self.notify.notify_waiters();
        // A worker between its check and its wait still gets a permit.
        self.notify.notify_one();
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
        let q = WorkQueue::new(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(40),
        ));
        q.add(1);
        for expected in [1, 2, 3] {
            let k = q.next().await.unwrap();
            q.done(k, false);
            assert_eq!(q.failures(&1), expected);
        }
        let started = Instant::now();
        let k = tokio::time::timeout(Duration::from_secs(5), q.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(k, 1);
        assert!(started.elapsed() >= Duration::from_millis(30));
        q.done(k, true);
        assert_eq!(q.failures(&1), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_earliest_wake_up_of_a_key_is_kept() {
        let q = WorkQueue::new(Backoff::default());
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(5));
        q.add_after("a", Duration::from_secs(20));
        q.add_after("b", Duration::from_secs(7));
        assert_eq!(q.scheduled(), 2);
        let started = Instant::now();
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(q.next().await, Some("b"));
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        q.done("a", true);
        q.done("b", true);
        // Nothing else was left behind by the superseded wake-ups.
        assert_eq!(q.scheduled(), 0);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), q.next())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_delay_beyond_the_clock_never_fires() {
        let q: WorkQueue<u8> = WorkQueue::new(Backoff::default());
        q.add_after(1, Duration::MAX);
        assert_eq!(q.scheduled(), 0);
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
