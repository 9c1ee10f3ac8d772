//! [`Controller`]: the one watch → cache → queue → reconcile loop. A controller is a
//! function `reconcile(object, ctx) -> Result<Action, E>`; the driver owns the rest,
//! the way kube-runtime's `Controller` does:
//!
//! - watchers and reflector caches for the primary kind and for every secondary kind
//!   whose changes map to primary keys ([`Controller::owns`], [`Controller::watches`]),
//!   plus [`Trigger`]s other code pokes;
//! - a de-duplicating work queue: a key is reconciled by one worker at a time, again
//!   after [`Action::requeue`], and after an exponential back-off when reconcile
//!   fails (failures are logged and counted in [`ControllerMetrics`]);
//! - leader gating: with [`Controller::leader`] it runs only while the gate says this
//!   replica leads, and stops (finishing in-flight reconciles) as soon as it does not;
//! - supervision: a panic anywhere in a run (a reconcile, a watch) tears that run
//!   down; the controller reports itself `Down` in its [`Health`], counts a restart,
//!   waits out a back-off and starts again with fresh watches;
//! - shutdown: on cancellation workers finish their current key (within a grace
//!   period) and the controller returns.
//!
//! Reconcile is only called for objects in the cache; [`Controller::on_delete`] hears
//! about deletions, for cleaning up per-object memory.

mod metrics;
mod source;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use hypermesh_api::Resource;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, error, info, warn};

pub use self::metrics::ControllerMetrics;
pub use self::source::{Change, Trigger, Watched, controller_key};
use self::source::{Feed, MappedFeed, OnDelete, PrimaryFeed};
use crate::backoff::Backoff;
use crate::health::{ComponentState, Health};
use crate::queue::WorkQueue;
pub use crate::reflector::ObjectKey;

/// What to do with an object after reconciling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile it again after `after` (sooner if it changes meanwhile).
    pub const fn requeue(after: Duration) -> Self {
        Action {
            requeue_after: Some(after),
        }
    }

    /// Reconcile it again only when it (or something mapped to it) changes.
    pub const fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    /// The delay of a requeue, if any.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// An error a reconcile function returns: the key is retried with back-off.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// True for errors expected now and then (a write lost a compare-and-swap race):
    /// logged at debug level rather than as a warning.
    fn is_conflict(&self) -> bool {
        false
    }
}

/// How long in-flight reconciles get to finish when the controller stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Delays between restarts after crashes.
pub const RESTART_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// Everything a run needs, shared by its tasks.
struct Parts<K: Resource> {
    name: String,
    primary: Watched<K>,
    feeds: Vec<Box<dyn Feed>>,
    triggers: Vec<Trigger>,
    workers: usize,
    backoff: Backoff,
    metrics: ControllerMetrics,
    health: Health,
    grace: Duration,
}

impl<K: Resource> Parts<K> {
    fn component(&self) -> String {
        format!("controller/{}", self.name)
    }
}

/// A controller of kind `K` being assembled; [`Controller::run`] drives it.
pub struct Controller<K: Resource> {
    parts: Parts<K>,
    on_delete: Option<OnDelete<K>>,
    leader: Option<watch::Receiver<bool>>,
    restart_backoff: Backoff,
}

impl<K: Resource> std::fmt::Debug for Controller<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.parts.name)
            .field("kind", &K::KIND)
            .field("workers", &self.parts.workers)
            .finish()
    }
}

/// Why one run of a controller ended early.
#[derive(Debug)]
struct Crash(String);

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "unknown panic".to_string(),
        },
    }
}

fn crash_of(what: &str, join: JoinError) -> Crash {
    if join.is_panic() {
        Crash(format!(
            "{what} panicked: {}",
            panic_message(join.into_panic())
        ))
    } else {
        Crash(format!("{what} was cancelled"))
    }
}

impl<K: Resource> Controller<K> {
    /// A controller called `name` (in logs, metrics and health) reconciling the
    /// objects of `primary`.
    pub fn new(name: impl Into<String>, primary: Watched<K>) -> Self {
        Controller {
            parts: Parts {
                name: name.into(),
                primary,
                feeds: Vec::new(),
                triggers: Vec::new(),
                workers: 1,
                backoff: Backoff::default(),
                metrics: ControllerMetrics::default(),
                health: Health::new(),
                grace: SHUTDOWN_GRACE,
            },
            on_delete: None,
            leader: None,
            restart_backoff: RESTART_BACKOFF,
        }
    }

    /// Also reconciles the owner of each object of `owned` that names an object of
    /// kind `K` as its controller (owner reference with `controller: true`).
    pub fn owns<C: Resource>(self, owned: Watched<C>) -> Self {
        self.watches(owned, |change: Change<'_, C>| {
            controller_key::<K, C>(change.object())
                .into_iter()
                .collect()
        })
    }

    /// Also reconciles the keys `mapper` returns for every change of `watched`.
    pub fn watches<C: Resource>(
        mut self,
        watched: Watched<C>,
        mapper: impl Fn(Change<'_, C>) -> Vec<ObjectKey> + Send + Sync + 'static,
    ) -> Self {
        self.parts.feeds.push(Box::new(MappedFeed {
            watched,
            mapper: Arc::new(mapper),
        }));
        self
    }

    /// Also reconciles whatever `trigger` is poked with.
    pub fn reconcile_on(mut self, trigger: Trigger) -> Self {
        self.parts.triggers.push(trigger);
        self
    }

    /// Calls `hook` with the last state of every primary object deleted.
    pub fn on_delete(mut self, hook: impl Fn(&K) + Send + Sync + 'static) -> Self {
        self.on_delete = Some(Arc::new(hook));
        self
    }

    /// Reconciles up to `workers` keys at once (at least one).
    pub fn workers(mut self, workers: usize) -> Self {
        self.parts.workers = workers.max(1);
        self
    }

    /// Retries failed keys after `backoff`.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.parts.backoff = backoff;
        self
    }

    /// Restarts after a crash after `backoff`.
    pub fn restart_backoff(mut self, backoff: Backoff) -> Self {
        self.restart_backoff = backoff;
        self
    }

    /// Runs only while `leading` is true (see `LeaderElector::spawn`).
    pub fn leader(mut self, leading: watch::Receiver<bool>) -> Self {
        self.leader = Some(leading);
        self
    }

    /// Reports its state in `health` as `controller/<name>`.
    pub fn health(mut self, health: Health) -> Self {
        self.parts.health = health;
        self
    }

    /// Counts reconciles, errors and restarts in `metrics`.
    pub fn metrics(mut self, metrics: ControllerMetrics) -> Self {
        self.parts.metrics = metrics;
        self
    }

    /// How long in-flight reconciles get to finish when the controller stops.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.parts.grace = grace;
        self
    }

    /// The primary kind's cache.
    pub fn store(&self) -> crate::reflector::Store<K> {
        self.parts.primary.store()
    }

    /// Runs until `shutdown`: reconciles with `reconcile(object, ctx)`, restarting
    /// after crashes and pausing while not the leader.
    pub async fn run<Ctx, E, F, Fut>(self, reconcile: F, ctx: Arc<Ctx>, shutdown: CancellationToken)
    where
        Ctx: Send + Sync + 'static,
        E: ReconcileError,
        F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let Controller {
            mut parts,
            on_delete,
            mut leader,
            restart_backoff,
        } = self;
        parts.feeds.insert(
            0,
            Box::new(PrimaryFeed {
                watched: parts.primary.clone(),
                on_delete,
            }),
        );
        let parts = Arc::new(parts);
        let reconcile = Arc::new(reconcile);
        let component = parts.component();
        let mut restarts = restart_backoff.retry();
        loop {
            if let Some(leading) = leader.as_mut() {
                if !*leading.borrow() {
                    parts.health.set(&component, ComponentState::Standby);
                }
                let lead = tokio::select! {
                    () = shutdown.cancelled() => false,
                    led = wait_leading(leading, true) => led,
                };
                if !lead {
                    break;
                }
            }
            let term = shutdown.child_token();
            let started = Instant::now();
            // Aborted (with its JoinSets of workers and watches) if this future is
            // dropped, never left running.
            let mut run = AbortOnDropHandle::new(tokio::spawn(run_once(
                parts.clone(),
                reconcile.clone(),
                ctx.clone(),
                term.clone(),
            )));
            let outcome = match leader.as_mut() {
                Some(leading) => tokio::select! {
                    outcome = &mut run => outcome,
                    _ = wait_leading(leading, false) => {
                        info!(controller = %parts.name, "not the leader any more: stopping");
                        term.cancel();
                        run.await
                    }
                },
                None => run.await,
            };
            let crash = match outcome {
                Ok(Ok(())) => {
                    if shutdown.is_cancelled() {
                        break;
                    }
                    continue;
                }
                Ok(Err(crash)) => crash,
                Err(join) => crash_of("the controller", join),
            };
            if shutdown.is_cancelled() {
                break;
            }
            parts.metrics.restarted(&parts.name);
            // A run that lasted a while was healthy: back off from the start again.
            if started.elapsed() > restart_backoff.max {
                restarts.reset();
            }
            let delay = restarts.next_delay();
            error!(
                controller = %parts.name,
                reason = %crash.0,
                restart_in = ?delay,
                "controller crashed; restarting"
            );
            parts
                .health
                .set(&component, ComponentState::Down(crash.0.clone()));
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        parts.health.remove(&component);
    }
}

/// Waits until leadership is `wanted`; false when the election has ended instead.
/// (The watch guard is dropped inside, so the caller's future stays `Send`.)
async fn wait_leading(leading: &mut watch::Receiver<bool>, wanted: bool) -> bool {
    leading.wait_for(|l| *l == wanted).await.is_ok()
}

/// One run: fresh watches, workers until `term` (or a crash), then a drain.
async fn run_once<K, Ctx, E, F, Fut>(
    parts: Arc<Parts<K>>,
    reconcile: Arc<F>,
    ctx: Arc<Ctx>,
    term: CancellationToken,
) -> Result<(), Crash>
where
    K: Resource,
    Ctx: Send + Sync + 'static,
    E: ReconcileError,
    F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let component = parts.component();
    parts.health.set(&component, ComponentState::Starting);
    let queue = WorkQueue::new(parts.backoff);
    let mut feeds = JoinSet::new();
    for feed in &parts.feeds {
        feed.mark_stale();
    }
    for feed in &parts.feeds {
        let kind = feed.kind();
        let run = feed.run(queue.clone());
        feeds.spawn(async move {
            run.await;
            kind
        });
    }
    for trigger in &parts.triggers {
        trigger.attach(queue.clone());
    }
    let ready = join_all(parts.feeds.iter().map(|f| f.ready()));
    let mut outcome = tokio::select! {
        () = term.cancelled() => Err(None),
        ended = feeds.join_next() => Err(Some(feed_ended(ended))),
        _ = ready => Ok(()),
    };
    let mut workers = JoinSet::new();
    if outcome.is_ok() {
        info!(controller = %parts.name, workers = parts.workers, "controller started");
        parts.health.set(&component, ComponentState::Ready);
        for _ in 0..parts.workers {
            workers.spawn(work(
                parts.clone(),
                queue.clone(),
                reconcile.clone(),
                ctx.clone(),
                term.clone(),
            ));
        }
        outcome = tokio::select! {
            () = term.cancelled() => Err(None),
            ended = feeds.join_next() => Err(Some(feed_ended(ended))),
            Some(ended) = workers.join_next() => Err(Some(match ended {
                Ok(()) => Crash("a worker stopped".into()),
                Err(join) => crash_of("reconcile", join),
            })),
        };
    }
    for trigger in &parts.triggers {
        trigger.detach();
    }
    queue.shut_down();
    let drain = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout(parts.grace, drain).await.is_err() {
        warn!(controller = %parts.name, "reconciles did not finish in time; abandoning them");
    }
    workers.abort_all();
    feeds.abort_all();
    match outcome {
        Ok(()) | Err(None) => {
            info!(controller = %parts.name, "controller stopped");
            Ok(())
        }
        Err(Some(crash)) => Err(crash),
    }
}

/// A feed never ends by itself: when it does, it crashed.
fn feed_ended(ended: Option<Result<&'static str, JoinError>>) -> Crash {
    match ended {
        Some(Ok(kind)) => Crash(format!("the {kind} watch ended")),
        Some(Err(join)) => crash_of("a watch", join),
        None => Crash("no watch is running".into()),
    }
}

async fn work<K, Ctx, E, F, Fut>(
    parts: Arc<Parts<K>>,
    queue: WorkQueue<ObjectKey>,
    reconcile: Arc<F>,
    ctx: Arc<Ctx>,
    term: CancellationToken,
) where
    K: Resource,
    Ctx: Send + Sync + 'static,
    E: ReconcileError,
    F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let store = parts.primary.store();
    while let Some(key) = queue.next().await {
        if term.is_cancelled() {
            queue.done(key, true);
            break;
        }
        let Some(object) = store.get(&key.0, &key.1) else {
            queue.done(key, true);
            continue;
        };
        parts.metrics.reconciled(&parts.name);
        match reconcile(object, ctx.clone()).await {
            Ok(action) => {
                queue.done(key.clone(), true);
                if let Some(after) = action.requeue_after() {
                    queue.add_after(key, after);
                }
            }
            Err(err) => {
                parts.metrics.failed(&parts.name);
                let (namespace, name) = (&key.0, &key.1);
                if err.is_conflict() {
                    debug!(controller = %parts.name, %namespace, %name, error = %err, "conflict; retrying");
                } else {
                    warn!(controller = %parts.name, %namespace, %name, error = %err, "reconcile failed; retrying with back-off");
                }
                queue.done(key, false);
            }
        }
    }
}
