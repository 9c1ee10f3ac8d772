//! Leader election over a [`Lease`], so that of several replicas of a component
//! (apiservers running controllers, schedulers) exactly one acts at a time.
//!
//! Every candidate reads the Lease every `retry_period`. It takes the Lease when it is
//! absent, released (empty holder) or expired, and the leader renews it on the same
//! period. Expiry is judged the way Kubernetes' client-go does: by when *this*
//! candidate last saw the Lease's record change (its own monotonic clock), plus the
//! Lease's duration — never by comparing the holder's `renew_time` with our wall
//! clock, so clock skew (or a `renew_time` in the year 292277026596) cannot keep a
//! dead leader in office or depose a live one. A duration beyond
//! [`MAX_LEASE_DURATION`] counts as that maximum. Every write is a
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

mod expiry;

use hypermesh_api::Api;
pub use hypermesh_api::time::MAX_LEASE_DURATION;
use hypermesh_api::v1::{Lease, LeaseSpec, ObjectMeta};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::{Code, Status};
use tracing::{debug, error, info, warn};

use self::expiry::{Observer, Plan, plan};
pub use self::expiry::{honoured_duration, lease_problem};
use crate::events::{EventRecorder, EventType};

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
    /// Timings for `lease_duration` (1 s to [`MAX_LEASE_DURATION`]): renew every third
    /// of it, step down after two thirds without a successful renewal.
    pub fn for_duration(lease_duration: Duration) -> Self {
        let lease_duration = lease_duration.clamp(Duration::from_secs(1), MAX_LEASE_DURATION);
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

/// Waits until leadership is `wanted`; false when the campaign has ended instead.
/// (The watch guard is dropped here, so callers stay `Send`.)
async fn wait_leading(leading: &mut watch::Receiver<bool>, wanted: bool) -> bool {
    leading.wait_for(|l| *l == wanted).await.is_ok()
}

/// `<hostname>_<pid>_<random>`: a candidate identity unique per process, readable in
/// `hmctl get leases`.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let nonce: u32 = rand::random();
    format!("{host}_{}_{nonce:08x}", std::process::id())
}

/// One candidate in the election for one Lease.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    events: Option<EventRecorder>,
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
            events: None,
        }
    }

    /// Records an Event on the Lease when it reads one that is malformed.
    pub fn with_events(mut self, events: EventRecorder) -> Self {
        self.events = Some(events);
        self
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
        let task = tokio::spawn(self.supervised_campaign(shutdown, tx));
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
        let campaign = tokio::spawn(self.supervised_campaign(stop.clone(), tx));
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

    /// [`LeaderElector::campaign`], restarted with back-off should it ever panic (a
    /// bug, or a Lease nobody foresaw): leadership is dropped at once and the panic
    /// logged, never silently ending the election.
    async fn supervised_campaign(self, stop: CancellationToken, leading: watch::Sender<bool>) {
        let mut restarts = crate::controller::RESTART_BACKOFF.retry();
        loop {
            // Aborted with this task (`Leadership::abort`), not left running.
            let run = AbortOnDropHandle::new(tokio::spawn(
                self.clone().campaign(stop.clone(), leading.clone()),
            ));
            let Err(join) = run.await else { return };
            leading.send_replace(false);
            let delay = restarts.next_delay();
            error!(
                lease = %self.lease_name(),
                identity = %self.identity,
                error = %join,
                restart_in = ?delay,
                "leader election crashed; stepped down and restarting"
            );
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The election loop: one attempt per retry period, leadership published on
    /// `leading`; on `stop` it steps down and releases the Lease.
    async fn campaign(self, stop: CancellationToken, leading: watch::Sender<bool>) {
        let lease = self.lease_name();
        let mut last_renewal: Option<Instant> = None;
        let mut last_holder = String::new();
        let mut observer = Observer::default();
        loop {
            let attempt = tokio::select! {
                () = stop.cancelled() => break,
                attempt = self.try_acquire_or_renew(&mut observer) => attempt,
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
    async fn try_acquire_or_renew(
        &self,
        observer: &mut Observer,
    ) -> Result<Attempt, ElectionError> {
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
        if let Some(lease) = &current {
            self.report_problem(lease, observer).await;
        }
        let stamp = hypermesh_api::time::now();
        let write = match plan(current.as_ref(), &self.identity, observer, Instant::now()) {
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
            Ok(written) => {
                observer.observe(&written.spec.unwrap_or_default(), Instant::now());
                Ok(Attempt::Leading)
            }
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

    /// Logs (and records an Event about) a malformed Lease, once per record.
    async fn report_problem(&self, lease: &Lease, observer: &Observer) {
        let spec = lease.spec.clone().unwrap_or_default();
        if !observer.is_new(&spec) {
            return;
        }
        let Some(problem) = lease_problem(&spec, SystemTime::now()) else {
            return;
        };
        warn!(lease = %self.lease_name(), holder = %spec.holder_identity, %problem, "malformed lease");
        if let Some(events) = &self.events {
            events
                .record(lease, EventType::Warning, "LeaseInvalid", problem)
                .await;
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
        let huge = Timings::for_duration(Duration::MAX);
        assert_eq!(huge.lease_duration, MAX_LEASE_DURATION);
    }

    #[test]
    fn identities_differ_per_call() {
        assert_ne!(default_identity(), default_identity());
        assert!(default_identity().contains(&format!("_{}_", std::process::id())));
    }
}
