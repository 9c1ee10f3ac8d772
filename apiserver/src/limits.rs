//! Per-identity request rate limits: a token bucket per caller identity (the name its
//! client certificate proved, `user:alice`, `node:host-1`; every unauthenticated
//! caller shares one), refilled at `qps` up to `burst`. A request finding its bucket
//! empty fails with `RESOURCE_EXHAUSTED` (reason `RateLimited`) naming when to retry.
//! Admins (`system:masters`, the apiserver's own controllers, `--insecure-dev`) and
//! the scheduler are not limited: the cluster's own machinery must not starve.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hypermesh_api::reason::{Reason, status};
use tonic::Status;

use crate::caller::{Caller, SCHEDULER};

/// Buckets kept before idle ones (full again) are dropped, so a flood of identities
/// cannot grow the map without bound.
const MAX_BUCKETS: usize = 10_000;

/// Per-identity token buckets.
#[derive(Debug)]
pub struct RateLimits {
    qps: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::new(0.0, 0)
    }
}

impl RateLimits {
    /// `qps` requests per second per identity, bursts of `burst`; `qps <= 0` disables.
    pub fn new(qps: f64, burst: u32) -> Self {
        RateLimits {
            qps,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `caller`'s bucket, or says when to retry.
    pub fn check(&self, caller: &Caller) -> Result<(), Status> {
        if self.qps <= 0.0 || caller.is_admin() || caller.name == SCHEDULER {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&caller.name) {
            let full_after = Duration::from_secs_f64(self.burst / self.qps);
            buckets.retain(|_, b| now.duration_since(b.last) < full_after);
            if buckets.len() >= MAX_BUCKETS {
                return Err(status(
                    Reason::RateLimited,
                    "too many identities are sending requests at once; retry in a second",
                ));
            }
        }
        let bucket = buckets.entry(caller.name.clone()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.qps).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / self.qps);
        Err(status(
            Reason::RateLimited,
            format!(
                "{} sent more than {} requests per second (bursts of {}); retry in {} ms",
                caller.name,
                self.qps,
                self.burst,
                wait.as_millis().max(1)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Caller {
        let mut c = Caller::anonymous();
        c.name = format!("user:{name}");
        c
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_identity() {
        let limits = RateLimits::new(1.0, 3);
        let alice = user("alice");
        for _ in 0..3 {
            limits.check(&alice).expect("within the burst");
        }
        let err = limits.check(&alice).expect_err("over the burst");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("retry in"), "{}", err.message());
        limits.check(&user("bob")).expect("bob has his own bucket");
        limits
            .check(&Caller::apiserver())
            .expect("admins are not limited");
    }
}
