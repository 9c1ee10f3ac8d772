//! Traffic kept up while a test breaks things, each counting what went wrong: a
//! [`RoutePoller`] GETs a Route through a host's proxy, a [`Writer`] creates objects
//! through the API and retries each until it is taken (every name it reports is in
//! the store, for the test to read back).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hypermesh_api::Api;
use hypermesh_api::v1::Lease;
use tonic::Code;

use crate::fixtures::lease;
use crate::hosts::try_route_get;
use crate::netns::NetLab;
use crate::wait_for;

/// What the Route poller saw.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Requests answered.
    pub answered: u64,
    /// Requests that failed or got no answer within 5 s.
    pub failed: u64,
    /// The longest time between two answers.
    pub longest_gap: Duration,
    /// The first 20 failures.
    pub errors: Vec<String>,
    /// The slowest request (answered or not), and how many took over a second.
    pub slowest: Duration,
    /// Requests that took over a second.
    pub slow: u64,
    /// The distinct answers: one per Instance that answered.
    pub bodies: std::collections::BTreeSet<String>,
}

impl RouteStats {
    /// One line for a test's report.
    pub fn summary(&self) -> String {
        format!(
            "polled {} times, {} failed, {} took over 1 s (slowest {:.1?}), \
             longest gap without an answer {:.1?}, answered by {} Instances",
            self.answered + self.failed,
            self.failed,
            self.slow,
            self.slowest,
            self.longest_gap,
            self.bodies.len()
        )
    }
}

/// GETs a Route through one host's proxy every 250 ms until stopped, counting answers
/// (any body) and failures and the longest time between two answers (so about 250 ms
/// plus one request when none fails).
pub struct RoutePoller {
    stop: Arc<AtomicBool>,
    answered: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<RouteStats>,
}

impl RoutePoller {
    /// Starts polling Route `default/route` from `host`.
    pub fn start(lab: Arc<NetLab>, host: &'static str, route: &'static str) -> RoutePoller {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, count) = (stop.clone(), answered.clone());
        let task = tokio::spawn(async move {
            let mut stats = RouteStats::default();
            let mut last_answer = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let attempt =
                    tokio::time::timeout(Duration::from_secs(5), try_route_get(&lab, host, route))
                        .await;
                let took = sent.elapsed();
                stats.slowest = stats.slowest.max(took);
                if took > Duration::from_secs(1) {
                    stats.slow += 1;
                }
                match attempt {
                    Ok(Ok(body)) if !body.is_empty() => {
                        stats.bodies.insert(body);
                        stats.answered += 1;
                        count.fetch_add(1, Ordering::Relaxed);
                        stats.longest_gap = stats.longest_gap.max(last_answer.elapsed());
                        last_answer = Instant::now();
                    }
                    other => {
                        stats.failed += 1;
                        if stats.errors.len() < 20 {
                            stats.errors.push(format!("after {took:.1?}: {other:?}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            stats.longest_gap = stats.longest_gap.max(last_answer.elapsed());
            stats
        });
        RoutePoller {
            stop,
            answered,
            task,
        }
    }

    /// Waits until `more` answers came in from now on.
    pub async fn answers(&self, more: u64) {
        let from = self.answered.load(Ordering::Relaxed);
        wait_for(Duration::from_secs(30), || async {
            (self.answered.load(Ordering::Relaxed) >= from + more).then_some(())
        })
        .await
        .unwrap_or_else(|_| panic!("the Route answers {more} more times"));
    }

    /// Stops polling; what it saw.
    pub async fn stop(self) -> RouteStats {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("route poller")
    }
}

/// What the writer wrote.
pub struct Written {
    /// Each Lease's name and how long it took to write.
    pub names: Vec<(String, Duration)>,
    /// The longest write.
    pub longest: Duration,
    /// Failed attempts, retried.
    pub retries: u64,
}

/// Creates Leases `default/marker-NNN` one after another through the admin's client
/// (both apiservers) until stopped, retrying each until the API takes it.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Written>,
}

impl Writer {
    /// Starts writing through `leases`.
    pub fn start(leases: Api<Lease>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut written = Written {
                names: Vec::new(),
                longest: Duration::ZERO,
                retries: 0,
            };
            while !flag.load(Ordering::Relaxed) {
                let name = format!("marker-{:03}", written.names.len());
                let began = Instant::now();
                loop {
                    match leases.create(&lease("default", &name)).await {
                        // A retry of a create that got through before its answer was lost.
                        Ok(_) => break,
                        Err(e) if e.code() == Code::AlreadyExists => break,
                        Err(_) => {
                            written.retries += 1;
                            assert!(
                                began.elapsed() < Duration::from_secs(60),
                                "lease {name} not written within 60 s"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                let took = began.elapsed();
                written.longest = written.longest.max(took);
                written.names.push((name, took));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            written
        });
        Writer { stop, task }
    }

    /// Stops writing; what was written.
    pub async fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer")
    }
}
