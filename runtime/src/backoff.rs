//! [`Backoff`]: the one exponential back-off policy of the tree (watch reconnects,
//! failed reconcile keys, controller restarts, unschedulable Instances, image pulls,
//! crash-looping containers, polling loops), and [`Retry`], its running state.
//!
//! The delay doubles from `initial` to `max` with every failure in a row. All
//! arithmetic saturates, so any number of failures is safe.

use std::time::Duration;

/// An exponential back-off policy: `initial`, doubling per failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 50 ms doubling to 30 s: failed work-queue keys.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A policy starting at `initial` and capped at `max` (at least `initial`).
    pub const fn new(initial: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < initial.as_nanos() {
            initial
        } else {
            max
        };
        Backoff { initial, max }
    }

    /// The delay after `failures` failures in a row (`0` and `1` both give
    /// `initial`): `initial * 2^(failures-1)`, at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1 << exp).min(self.max)
    }

    /// The delay that follows `previous`: twice it, within `[initial, max]`.
    pub fn after(&self, previous: Duration) -> Duration {
        previous.saturating_mul(2).clamp(self.initial, self.max)
    }

    /// A fresh [`Retry`] following this policy.
    pub fn retry(&self) -> Retry {
        Retry {
            policy: *self,
            failures: 0,
        }
    }
}

/// The state of one retried operation: how many failures in a row, hence the next
/// delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    policy: Backoff,
    failures: u32,
}

impl Retry {
    /// Counts one more failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.delay(self.failures)
    }

    /// The delay the next failure would get, without counting one.
    pub fn peek(&self) -> Duration {
        self.policy.delay(self.failures.saturating_add(1))
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Counts a failure and sleeps for the resulting delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_saturates() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..7).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(40), Duration::MAX);
    }

    #[test]
    fn after_doubles_within_bounds() {
        let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        assert_eq!(b.after(Duration::ZERO), Duration::from_millis(250));
        assert_eq!(b.after(Duration::from_secs(2)), Duration::from_secs(4));
        assert_eq!(b.after(Duration::from_secs(4)), Duration::from_secs(5));
        assert_eq!(b.after(Duration::MAX), Duration::from_secs(5));
    }

    #[test]
    fn retry_counts_and_resets() {
        let mut r = Backoff::new(Duration::from_millis(10), Duration::from_millis(40)).retry();
        assert_eq!(r.peek(), Duration::from_millis(10));
        assert_eq!(r.next_delay(), Duration::from_millis(10));
        assert_eq!(r.next_delay(), Duration::from_millis(20));
        assert_eq!(r.next_delay(), Duration::from_millis(40));
        assert_eq!(r.next_delay(), Duration::from_millis(40));
        assert_eq!(r.failures(), 4);
        r.reset();
        assert_eq!(r.next_delay(), Duration::from_millis(10));
    }

    #[test]
    fn max_below_initial_is_raised() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.max, Duration::from_secs(2));
    }
}
