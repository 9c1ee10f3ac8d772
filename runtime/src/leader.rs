//! Leader election over a [`Lease`], so that of several replicas of a component
//! (apiservers running controllers, schedulers) exactly one acts at a time.
//!
//! Every candidate reads the Lease every `retry_period`. It takes the Lease when it is
//! absent, released (empty holder) or expired (`renew_time + lease_duration_seconds <
//! now`), and the leader renews it on the same period. Every write is a
//! compare-and-swap on the `resource_version` that was read: when two candidates race,
//! the apiserver answers `ABORTED` to the loser. A leader that cannot renew within
//! `renew_deadline` (shorter than the lease duration, so it stops before anyone else
//! may start) steps down; on shutdown the leader clears the holder so another replica
//! takes over at its next attempt instead of waiting for the lease to expire.
//!
//! [`LeaderElector::run_while_leader`] is the usual entry point: it runs some work
//! only while leading and cancels it (and waits for it) as soon as leadership is lost.
//! [`LeaderElector::spawn`] only publishes whether this candidate leads.

use std::future::Future;
use std::time::{Duration, SystemTime};

use hypermesh_api::Api;
use hypermesh_api::v1::{Lease, LeaseSpec, ObjectMeta};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::{debug, info, warn};

/// How long releasing the Lease on shutdown may take before we give up on it (the
/// Lease then simply expires).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why one attempt to acquire, renew or release the Lease failed. The elector retries
/// by itself; these are reported in logs.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// Reading the Lease failed (other than it not existing).
    #[error("cannot read lease {lease}: {source}")]
    Read {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The API error.
        #[source]
        source: Status,
    },
    /// Creating or updating the Lease failed (other than losing a race).
    #[error("cannot write lease {lease}: {source}")]
    Write {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The API error.
        #[source]
        source: Status,
    },
}

/// The timing of an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a Lease stays valid after its last renewal; written into the Lease in
    /// whole seconds (at least 1).
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down; must be shorter than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews and candidates try to acquire.
    pub retry_period: Duration,
}

impl Timings {
    /// Timings for `lease_duration`: renew every third of it, step down after two
    /// thirds without a successful renewal.
    pub fn for_duration(lease_duration: Duration) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(1));
        Timings {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration / 3,
        }
    }

    fn lease_seconds(&self) -> i32 {
        let secs = self.lease_duration.as_secs_f64().ceil();
        // Clamped to at least 1 second and at most i32::MAX, so the cast is exact.
        secs.clamp(1.0, f64::from(i32::MAX)) as i32
    }
}

/// What one attempt found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease (just acquired or renewed).
    Leading,
    /// Somebody else holds a valid Lease, or won the race for it.
    Following {
        /// Their identity, when known.
        holder: String,
    },
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// It does not exist: create it with us as holder.
    Create,
    /// We hold it: bump `renew_time`.
    Renew,
    /// Free or expired: take it over.
    TakeOver,
    /// Someone else holds a valid Lease.
    Follow(String),
}

/// Waits until leadership is `wanted`; false when the campaign has ended instead.
/// (The watch guard is dropped here, so callers stay `Send`.)
async fn wait_leading(leading: &mut watch::Receiver<bool>, wanted: bool) -> bool {
    leading.wait_for(|l| *l == wanted).await.is_ok()
}

/// True when `spec`'s holder may no longer act: `renew_time + duration < now`.
pub fn expired(spec: &LeaseSpec, now: SystemTime) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds).unwrap_or(0));
    hypermesh_api::time::to_system_time(renewed) + duration < now
}

fn plan(lease: Option<&Lease>, identity: &str, now: SystemTime) -> Plan {
    let Some(lease) = lease else {
        return Plan::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity == identity {
        Plan::Renew
    } else if spec.holder_identity.is_empty() || expired(&spec, now) {
        Plan::TakeOver
    } else {
        Plan::Follow(spec.holder_identity)
    }
}

/// One candidate in the election for one Lease.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timings: Timings,
}

/// Whether a spawned elector leads, and its task.
#[derive(Debug)]
pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// True while this candidate holds the Lease.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// A receiver of leadership changes (`true` while leading).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Waits until the elector has stopped (after its shutdown token was cancelled)
    /// and released the Lease.
    pub async fn stopped(self) {
        if let Err(err) = self.task.await {
            warn!(error = %err, "leader elector task failed");
        }
    }

    /// Stops the elector at once, without releasing the Lease (as if the process
    /// died): others take over once it expires. For fault-injection in tests.
    pub fn abort(self) {
        self.task.abort();
    }
}

impl LeaderElector {
    /// A candidate called `identity` for the Lease `namespace/name`, held for
    /// `lease_duration` after each renewal (see [`Timings::for_duration`]).
    pub fn new(
        api: Api<Lease>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        LeaderElector {
            api,
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            timings: Timings::for_duration(lease_duration),
        }
    }

    /// Replaces the timings.
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timings in use.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    fn lease_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Campaigns in a background task until `shutdown`, then releases the Lease.
    pub fn spawn(self, shutdown: CancellationToken) -> Leadership {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(self.campaign(shutdown, tx));
        Leadership { leading: rx, task }
    }

    /// Runs `work` while this candidate leads, until `shutdown`.
    ///
    /// `work` gets a token that is cancelled when leadership is lost or on shutdown;
    /// it must then return promptly. It is started again each time leadership is
    /// regained (and, should it return by itself while still leading, after one
    /// retry period). On shutdown the work is cancelled and awaited before the Lease
    /// is released, so no two leaders ever act at once through a clean hand-over.
    pub async fn run_while_leader<F, Fut>(self, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let retry = self.timings.retry_period;
        let stop = CancellationToken::new();
        let (tx, mut leading) = watch::channel(false);
        let campaign = tokio::spawn(self.campaign(stop.clone(), tx));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                // False: the campaign ended (it only does on `stop`).
                open = wait_leading(&mut leading, true) => if !open { break },
            }
            let term = shutdown.child_token();
            let running = work(term.clone());
            tokio::pin!(running);
            let go_on = tokio::select! {
                () = &mut running => {
                    // Ended by itself while leading: start it again after a pause
                    // (if still leading then), unless the process is shutting down.
                    tokio::select! {
                        () = shutdown.cancelled() => false,
                        () = tokio::time::sleep(retry) => true,
                    }
                }
                open = wait_leading(&mut leading, false) => {
                    term.cancel();
                    running.as_mut().await;
                    open
                }
                () = shutdown.cancelled() => {
                    term.cancel();
                    running.as_mut().await;
                    false
                }
            };
            if !go_on {
                break;
            }
        }
        stop.cancel();
        if let Err(err) = campaign.await {
            warn!(error = %err, "leader elector task failed");
        }
    }

    /// The election loop: one attempt per retry period, leadership published on
    /// `leading`; on `stop` it steps down and releases the Lease.
    async fn campaign(self, stop: CancellationToken, leading: watch::Sender<bool>) {
        let lease = self.lease_name();
        let mut last_renewal: Option<Instant> = None;
        let mut last_holder = String::new();
        loop {
            let attempt = tokio::select! {
                () = stop.cancelled() => break,
                attempt = self.try_acquire_or_renew() => attempt,
            };
            match attempt {
                Ok(Attempt::Leading) => {
                    last_renewal = Some(Instant::now());
                    if !leading.send_replace(true) {
                        info!(%lease, identity = %self.identity, "became leader");
                    }
                }
                Ok(Attempt::Following { holder }) => {
                    last_renewal = None;
                    if leading.send_replace(false) {
                        warn!(%lease, identity = %self.identity, %holder, "lost leadership");
                    } else if holder != last_holder {
                        info!(%lease, identity = %self.identity, %holder, "following leader");
                    }
                    last_holder = holder;
                }
                Err(err) => {
                    warn!(%lease, error = %err, "leader election attempt failed");
                    let overdue =
                        last_renewal.is_some_and(|at| at.elapsed() >= self.timings.renew_deadline);
                    if overdue {
                        last_renewal = None;
                        leading.send_replace(false);
                        warn!(%lease, identity = %self.identity, "could not renew in time; stepped down");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.timings.retry_period) => {}
            }
        }
        let was_leading = leading.send_replace(false);
        // Also after an interrupted attempt, which may have acquired the Lease.
        match tokio::time::timeout(RELEASE_TIMEOUT, self.release()).await {
            Ok(Ok(true)) => info!(%lease, identity = %self.identity, "released leadership"),
            Ok(Ok(false)) => {}
            Ok(Err(err)) => warn!(%lease, error = %err, "cannot release the lease; it will expire"),
            Err(_) if was_leading => {
                warn!(%lease, "releasing the lease timed out; it will expire");
            }
            Err(_) => {}
        }
    }

    /// One attempt: reads the Lease and creates, renews or takes it over as needed.
    async fn try_acquire_or_renew(&self) -> Result<Attempt, ElectionError> {
        let current = match self.api.get(&self.namespace, &self.name).await {
            Ok(lease) => Some(lease),
            Err(status) if status.code() == Code::NotFound => None,
            Err(source) => {
                return Err(ElectionError::Read {
                    lease: self.lease_name(),
                    source,
                });
            }
        };
        let now = SystemTime::now();
        let stamp = hypermesh_api::time::from_system_time(now);
        let write = match plan(current.as_ref(), &self.identity, now) {
            Plan::Follow(holder) => return Ok(Attempt::Following { holder }),
            Plan::Create => {
                let lease = Lease {
                    metadata: Some(ObjectMeta {
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                        ..Default::default()
                    }),
                    spec: Some(LeaseSpec {
                        holder_identity: self.identity.clone(),
                        lease_duration_seconds: self.timings.lease_seconds(),
                        acquire_time: Some(stamp),
                        renew_time: Some(stamp),
                        lease_transitions: 0,
                    }),
                    status: None,
                };
                self.api.create(&lease).await
            }
            Plan::Renew | Plan::TakeOver => {
                let mut lease = current.unwrap_or_default();
                let spec = lease.spec.get_or_insert_with(Default::default);
                if spec.holder_identity != self.identity {
                    debug!(lease = %self.lease_name(), previous = %spec.holder_identity, "taking over lease");
                    spec.holder_identity = self.identity.clone();
                    spec.acquire_time = Some(stamp);
                    spec.lease_transitions = spec.lease_transitions.saturating_add(1);
                }
                spec.renew_time = Some(stamp);
                spec.lease_duration_seconds = self.timings.lease_seconds();
                // `lease` carries the resource_version we read: a compare-and-swap.
                self.api.update(&lease).await
            }
        };
        match write {
            Ok(_) => Ok(Attempt::Leading),
            Err(status) if matches!(status.code(), Code::Aborted | Code::AlreadyExists) => {
                Ok(Attempt::Following {
                    holder: String::new(),
                })
            }
            Err(source) => Err(ElectionError::Write {
                lease: self.lease_name(),
                source,
            }),
        }
    }

    /// Clears the holder if it is us; true when it was.
    async fn release(&self) -> Result<bool, ElectionError> {
        let mut lease = match self.api.get(&self.namespace, &self.name).await {
            Ok(lease) => lease,
            Err(status) if status.code() == Code::NotFound => return Ok(false),
            Err(source) => {
                return Err(ElectionError::Read {
                    lease: self.lease_name(),
                    source,
                });
            }
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity != self.identity {
            return Ok(false);
        }
        spec.holder_identity.clear();
        spec.renew_time = Some(hypermesh_api::time::now());
        match self.api.update(&lease).await {
            Ok(_) => Ok(true),
            // Somebody took it meanwhile: nothing left to release.
            Err(status) if status.code() == Code::Aborted => Ok(false),
            Err(source) => Err(ElectionError::Write {
                lease: self.lease_name(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: u64, duration: i32) -> Lease {
        let renewed = SystemTime::now() - Duration::from_secs(renewed_secs_ago);
        Lease {
            metadata: None,
            spec: Some(LeaseSpec {
                holder_identity: holder.into(),
                lease_duration_seconds: duration,
                renew_time: Some(hypermesh_api::time::from_system_time(renewed)),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn plans_follow_the_lease_state() {
        let now = SystemTime::now();
        assert_eq!(plan(None, "a", now), Plan::Create);
        assert_eq!(plan(Some(&lease("a", 0, 10)), "a", now), Plan::Renew);
        // Our own expired lease is renewed, not taken over (no transition).
        assert_eq!(plan(Some(&lease("a", 60, 10)), "a", now), Plan::Renew);
        assert_eq!(
            plan(Some(&lease("b", 2, 10)), "a", now),
            Plan::Follow("b".into())
        );
        assert_eq!(plan(Some(&lease("b", 11, 10)), "a", now), Plan::TakeOver);
        assert_eq!(plan(Some(&lease("", 0, 10)), "a", now), Plan::TakeOver);
        assert_eq!(plan(Some(&Lease::default()), "a", now), Plan::TakeOver);
    }

    #[test]
    fn expiry_is_renew_time_plus_duration() {
        let now = SystemTime::now();
        let spec = |ago, duration| lease("b", ago, duration).spec.unwrap();
        assert!(!expired(&spec(5, 10), now));
        assert!(expired(&spec(11, 10), now));
        assert!(expired(&spec(1, 0), now));
        assert!(expired(&LeaseSpec::default(), now));
    }

    #[test]
    fn timings_derive_from_the_duration() {
        let t = Timings::for_duration(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(5));
        assert_eq!(t.lease_seconds(), 15);
        let tiny = Timings::for_duration(Duration::from_millis(10));
        assert_eq!(tiny.lease_seconds(), 1);
        assert_eq!(
            Timings::for_duration(Duration::from_millis(1500)).lease_seconds(),
            2
        );
    }
}
