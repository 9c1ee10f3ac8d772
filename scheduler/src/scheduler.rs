//! The scheduling loop. One task owns the cluster picture: it applies watch events,
//! takes the next Instance from the queue, filters and scores nodes, *assumes* the
//! binding at once (so the next decision already counts it) and sends the Bind in
//! the background, many in flight. A failed Bind forgets the assumption and retries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{
    self, Asset, BindRequest, Instance, InstancePhase, Namespace, Node, Workload,
};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::watcher::{self, Event};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::cluster::{BoundInstance, ClusterState, InstanceKey};
use crate::gang::{self, GangHost};
use crate::gpus;
use crate::metrics::{AttemptResult, SchedulerMetrics};
use crate::plugins::{self, GpuPick, Placement, Profile, Request, Unfit};
use crate::preemption;
use crate::queue::SchedulingQueue;
use crate::report::Reporter;
use crate::resources::Resources;

/// How the scheduler decides.
#[derive(Debug, Clone)]
pub struct Config {
    /// Spread or binpack.
    pub profile: Profile,
    /// Binds in flight at once.
    pub bind_concurrency: usize,
    /// Nodes examined per decision: at least this many feasible ones are scored
    /// (all nodes when there are fewer).
    pub min_feasible_nodes: usize,
    /// Percentage of nodes to find feasible before scoring, for big clusters.
    pub feasible_percentage: usize,
    /// Where attempts, queue depth and Bind latency are counted (shared across
    /// leadership terms; serve it with [`crate::metrics::serve`]).
    pub metrics: Arc<SchedulerMetrics>,
    /// This replica's name on the Events it records (its leader-election identity).
    pub identity: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: Profile::Spread,
            bind_concurrency: 128,
            min_feasible_nodes: 100,
            feasible_percentage: 5,
            metrics: Arc::default(),
            identity: "hm-scheduler".to_string(),
        }
    }
}

enum Change {
    Node(Event<Node>),
    Asset(Event<Asset>),
    Instance(Event<Instance>),
    Namespace(Event<Namespace>),
    Workload(Event<Workload>),
}

struct BindOutcome {
    key: InstanceKey,
    /// The Instance's metadata, for the `Scheduled` Event.
    subject: Instance,
    node: String,
    result: Result<(), tonic::Status>,
}

fn key_of(inst: &Instance) -> InstanceKey {
    (inst.meta().namespace.clone(), inst.meta().name.clone())
}

fn priority_of(inst: &Instance) -> i32 {
    inst.spec.as_ref().map_or(0, |s| s.priority)
}

fn is_terminal(inst: &Instance) -> bool {
    let phase = inst.status.as_ref().map_or(0, |s| s.phase);
    phase == InstancePhase::Succeeded as i32
        || phase == InstancePhase::Failed as i32
        || inst.meta().deletion_timestamp.is_some()
}

fn owner_of(inst: &Instance) -> Option<String> {
    inst.meta()
        .owner_references
        .iter()
        .find(|r| r.controller && r.kind == "Workload")
        .map(|r| r.name.clone())
}

fn bound_node(inst: &Instance) -> Option<&str> {
    inst.spec
        .as_ref()
        .map(|s| s.node_name.as_str())
        .filter(|n| !n.is_empty())
}

fn watch_stream<K: Resource>(
    channel: &Channel,
    wrap: fn(Event<K>) -> Change,
) -> BoxStream<'static, Change> {
    watcher::watcher(Api::<K>::new(channel.clone()), watcher::Config::default())
        .filter_map(move |item| async move {
            match item {
                Ok(event) => Some(wrap(event)),
                Err(e) => {
                    warn!(kind = K::KIND, error = %e, "watch error (retrying)");
                    None
                }
            }
        })
        .boxed()
}

/// The scheduler's state and loop.
pub struct Scheduler {
    config: Config,
    cluster: ClusterState,
    /// Unbound Instances we know of.
    pending: HashMap<InstanceKey, Instance>,
    queue: SchedulingQueue,
    instances: Api<Instance>,
    reporter: Reporter,
    binds: Arc<Semaphore>,
    outcomes_tx: mpsc::UnboundedSender<BindOutcome>,
    outcomes_rx: mpsc::UnboundedReceiver<BindOutcome>,
    next_offset: usize,
    /// Bindings made, for logs.
    pub bound_total: u64,
}

impl Scheduler {
    /// A scheduler talking to the apiserver over `channel`.
    pub fn new(channel: &Channel, config: Config) -> Self {
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let reporter = Reporter::new(channel, &config.identity);
        Scheduler {
            binds: Arc::new(Semaphore::new(config.bind_concurrency.max(1))),
            config,
            cluster: ClusterState::default(),
            pending: HashMap::new(),
            queue: SchedulingQueue::default(),
            instances: Api::new(channel.clone()),
            reporter,
            outcomes_tx,
            outcomes_rx,
            next_offset: 0,
            bound_total: 0,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, channel: Channel, shutdown: CancellationToken) {
        let mut changes: SelectAll<BoxStream<'static, Change>> = futures::stream::select_all([
            watch_stream::<Node>(&channel, Change::Node),
            watch_stream::<Asset>(&channel, Change::Asset),
            watch_stream::<Namespace>(&channel, Change::Namespace),
            watch_stream::<Workload>(&channel, Change::Workload),
            watch_stream::<Instance>(&channel, Change::Instance),
        ]);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(profile = ?self.config.profile, "scheduler running");
        loop {
            // Take in everything already known before deciding anything.
            while let Some(Some(change)) = changes.next().now_or_never() {
                self.apply(change);
            }
            while let Ok(outcome) = self.outcomes_rx.try_recv() {
                self.settle(outcome);
            }
            self.config
                .metrics
                .set_pending(self.queue.active_len(), self.queue.parked_len());
            if self.queue.active_len() > 0 && self.binds.available_permits() > 0 {
                if let Some(key) = self.queue.pop() {
                    self.schedule(key);
                }
                tokio::task::consume_budget().await;
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                change = changes.next() => match change {
                    Some(change) => self.apply(change),
                    None => return,
                },
                outcome = self.outcomes_rx.recv() => {
                    if let Some(outcome) = outcome {
                        self.settle(outcome);
                    }
                }
                _ = tick.tick() => self.queue.requeue_due(self.cluster.generation),
            }
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Node(Event::Restarted(nodes)) => {
                for name in self.cluster.node_names().to_vec() {
                    if !nodes.iter().any(|n| n.meta().name == name) {
                        self.cluster.remove_node(&name);
                    }
                }
                nodes.iter().for_each(|n| self.cluster.upsert_node(n));
            }
            Change::Node(Event::Applied(n)) => self.cluster.upsert_node(&n),
            Change::Node(Event::Deleted(n)) => self.cluster.remove_node(&n.meta().name),
            Change::Asset(Event::Restarted(assets)) => {
                let keep: std::collections::HashSet<&str> =
                    assets.iter().map(|a| a.meta().name.as_str()).collect();
                for (node, name) in self.cluster.asset_names() {
                    if !keep.contains(name.as_str()) {
                        self.cluster.remove_asset_named(&node, &name);
                    }
                }
                assets.iter().for_each(|a| self.cluster.upsert_asset(a))
            }
            Change::Asset(Event::Applied(a)) => self.cluster.upsert_asset(&a),
            Change::Asset(Event::Deleted(a)) => self.cluster.remove_asset(&a),
            Change::Namespace(Event::Restarted(list)) => {
                list.iter().for_each(|n| self.cluster.upsert_namespace(n))
            }
            Change::Namespace(Event::Applied(n)) | Change::Namespace(Event::Deleted(n)) => {
                self.cluster.upsert_namespace(&n)
            }
            Change::Workload(Event::Restarted(list)) => {
                list.iter().for_each(|w| self.cluster.upsert_workload(w))
            }
            Change::Workload(Event::Applied(w)) => self.cluster.upsert_workload(&w),
            Change::Workload(Event::Deleted(w)) => self.cluster.remove_workload(&w),
            Change::Instance(Event::Restarted(list)) => {
                let keep: std::collections::HashSet<InstanceKey> =
                    list.iter().map(key_of).collect();
                // Instances gone while the watch was down: waiting ones and bound ones
                // (but not our own Binds still in flight).
                let mut stale: Vec<InstanceKey> = self
                    .pending
                    .keys()
                    .filter(|k| !keep.contains(*k))
                    .cloned()
                    .collect();
                stale.extend(self.cluster.bound_keys().into_iter().filter(|k| {
                    !keep.contains(k) && self.cluster.bound(k).is_some_and(|b| !b.assumed)
                }));
                for key in stale {
                    self.forget(&key);
                }
                for inst in list {
                    self.observe_instance(inst);
                }
            }
            Change::Instance(Event::Applied(inst)) => self.observe_instance(inst),
            Change::Instance(Event::Deleted(inst)) => self.forget(&key_of(&inst)),
        }
    }

    fn forget(&mut self, key: &InstanceKey) {
        self.pending.remove(key);
        self.queue.remove(key);
        self.cluster.unbind(key);
    }

    fn observe_instance(&mut self, inst: Instance) {
        let key = key_of(&inst);
        if is_terminal(&inst) {
            self.forget(&key);
            return;
        }
        if let Some(node) = bound_node(&inst) {
            let spec = inst.spec.clone().unwrap_or_default();
            let requests = Resources::requested_by(&spec);
            let per_gpu = if requests.gpu_milli < 1000 {
                requests.gpu_milli
            } else {
                1000
            };
            let binding = BoundInstance {
                node: node.to_string(),
                requests,
                gpus: spec
                    .assigned_assets
                    .iter()
                    .map(|a| (a.clone(), per_gpu))
                    .collect(),
                labels: inst.meta().labels.clone(),
                priority: spec.priority,
                created: inst
                    .meta()
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.seconds),
                assumed: false,
                owner: owner_of(&inst),
            };
            self.reporter.forget(&key);
            self.pending.remove(&key);
            self.queue.remove(&key);
            self.cluster.bind(key, binding);
            return;
        }
        if self.cluster.bound(&key).is_some_and(|b| b.assumed) {
            return; // our Bind is in flight
        }
        let priority = priority_of(&inst);
        let spec_changed = self
            .pending
            .get(&key)
            .is_none_or(|old| old.meta().generation != inst.meta().generation);
        self.pending.insert(key.clone(), inst);
        // Our own status updates on a parked Instance must not wake it up.
        if spec_changed || !self.queue.is_parked(&key) {
            self.queue.add(key, priority);
        }
    }

    /// Filters nodes from a rotating offset until enough feasible ones are found,
    /// scoring each as it goes; the best wins (ties: the earliest registered node).
    fn best_node(&mut self, req: &Request) -> Result<Placement, BTreeMap<Unfit, usize>> {
        let nodes = self.cluster.nodes();
        let total = nodes.len();
        let wanted = self
            .config
            .min_feasible_nodes
            .max(total * self.config.feasible_percentage / 100);
        let start = if total == 0 {
            0
        } else {
            self.next_offset % total
        };
        let profile = self.config.profile;
        let mut reasons = BTreeMap::new();
        let mut best: Option<(f64, usize)> = None;
        let mut found = 0;
        let mut next_offset = self.next_offset;
        for i in 0..total {
            let index = (start + i) % total;
            let node = &nodes[index];
            match plugins::filter(&self.cluster, node, req) {
                Ok(()) => {
                    let score = plugins::score(node, req, profile);
                    let better = best
                        .as_ref()
                        .is_none_or(|(s, j)| score > *s || (score == *s && index < *j));
                    if better {
                        best = Some((score, index));
                    }
                    found += 1;
                    if found >= wanted {
                        next_offset = start + i + 1;
                        break;
                    }
                }
                Err(reason) => *reasons.entry(reason).or_insert(0) += 1,
            }
        }
        let placement = best.map(|(_, index)| {
            let node = &nodes[index];
            let gpus = gpus::pick_gpus(&self.cluster, node, req).unwrap_or_default();
            (node.name.clone(), gpus)
        });
        self.next_offset = next_offset;
        placement.ok_or(reasons)
    }

    fn schedule(&mut self, key: InstanceKey) {
        let Some(inst) = self.pending.get(&key).cloned() else {
            return;
        };
        if let Some((gang, min)) = self.cluster.gang_of(&inst) {
            gang::schedule_gang(self, gang, min);
            return;
        }
        let req = Request::new(&inst, &self.cluster);
        match self.best_node(&req) {
            Ok((node, gpus)) => self.assume_and_bind(&inst, req.resources, node, gpus),
            Err(reasons) => {
                self.config.metrics.attempt(AttemptResult::Unschedulable);
                let message = plugins::explain(self.cluster.node_count(), &reasons);
                let preemptible = reasons.keys().any(|r| r.resolvable_by_preemption());
                let preemption = (priority_of(&inst) > 0 && preemptible)
                    .then(|| preemption::plan(&mut self.cluster, &req, priority_of(&inst)))
                    .flatten();
                if let Some(plan) = preemption {
                    preemption::evict(plan, &inst, &self.reporter, self.instances.clone());
                    let message = format!("{message} Preempting lower-priority instances.");
                    self.park(&inst, message);
                } else {
                    self.park(&inst, message);
                }
            }
        }
    }

    fn park(&mut self, inst: &Instance, message: String) {
        let key = key_of(inst);
        let attempts = self
            .queue
            .park(key, priority_of(inst), self.cluster.generation);
        debug!(instance = %inst.meta().name, attempts, %message, "unschedulable");
        self.reporter.unschedulable(inst, message);
    }

    /// Counts `inst` as bound to `node` without telling the apiserver (yet).
    fn assume_only(&mut self, inst: &Instance, requests: Resources, node: String, gpus: GpuPick) {
        let binding = BoundInstance {
            node,
            requests,
            gpus,
            labels: inst.meta().labels.clone(),
            priority: priority_of(inst),
            created: inst
                .meta()
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.seconds),
            assumed: true,
            owner: owner_of(inst),
        };
        self.cluster.bind(key_of(inst), binding);
    }

    /// Counts `inst` as bound to `node` and sends the Bind.
    fn assume_and_bind(
        &mut self,
        inst: &Instance,
        requests: Resources,
        node: String,
        gpus: GpuPick,
    ) {
        let key = key_of(inst);
        self.assume_only(inst, requests, node.clone(), gpus.clone());
        self.queue.remove(&key);
        let Ok(permit) = self.binds.clone().try_acquire_owned() else {
            // No permit: bind inline later; keep it simple by waiting in a task.
            return self.spawn_bind(inst, node, gpus, None);
        };
        self.spawn_bind(inst, node, gpus, Some(permit));
    }

    fn spawn_bind(
        &self,
        inst: &Instance,
        node: String,
        gpus: GpuPick,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let api = self.instances.clone();
        let tx = self.outcomes_tx.clone();
        let binds = self.binds.clone();
        let metrics = self.config.metrics.clone();
        let key = key_of(inst);
        let subject = Instance {
            metadata: Some(v1::ObjectMeta {
                namespace: key.0.clone(),
                name: key.1.clone(),
                uid: inst.meta().uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        tokio::spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => match binds.acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let request = BindRequest {
                namespace: key.0.clone(),
                name: key.1.clone(),
                node_name: node.clone(),
                resource_version: 0,
                assigned_assets: gpus.into_iter().map(|(a, _)| a).collect(),
            };
            let started = std::time::Instant::now();
            let result = api.bind(request).await.map(|_| ());
            metrics.observe_binding(started.elapsed().as_secs_f64());
            let _ = tx.send(BindOutcome {
                key,
                subject,
                node,
                result,
            });
        });
    }

    fn settle(&mut self, outcome: BindOutcome) {
        let BindOutcome {
            key,
            subject,
            node,
            result,
        } = outcome;
        match result {
            Ok(()) => {
                self.config.metrics.attempt(AttemptResult::Scheduled);
                self.reporter.scheduled(&subject, &node);
                self.bound_total += 1;
                self.pending.remove(&key);
            }
            Err(status) => {
                self.config.metrics.attempt(AttemptResult::Error);
                let still_assumed = self
                    .cluster
                    .bound(&key)
                    .is_some_and(|b| b.assumed && b.node == node);
                if still_assumed {
                    self.cluster.unbind(&key);
                }
                match reason_of(&status) {
                    Some(Reason::AlreadyBound) => {}
                    Some(Reason::NotFound) => self.forget(&key),
                    _ => {
                        warn!(instance = %key.1, %node, error = %status.message(), "bind failed; retrying");
                        if let Some(inst) = self.pending.get(&key).cloned() {
                            self.park(
                                &inst,
                                format!("binding to {node} failed: {}", status.message()),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// What gang scheduling may do with the scheduler.
impl GangHost for Scheduler {
    fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    fn cluster_mut(&mut self) -> &mut ClusterState {
        &mut self.cluster
    }

    fn pending_members(&self, gang: &(String, String)) -> Vec<Instance> {
        let mut members: Vec<Instance> = self
            .pending
            .values()
            .filter(|i| self.cluster.gang_of(i).is_some_and(|(g, _)| g == *gang))
            .cloned()
            .collect();
        members.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        members
    }

    fn dequeue(&mut self, key: &InstanceKey) {
        self.queue.remove(key);
    }

    fn park(&mut self, inst: &Instance, message: String) {
        self.config.metrics.attempt(AttemptResult::Unschedulable);
        Scheduler::park(self, inst, message);
    }

    fn place(&mut self, req: &Request) -> Result<Placement, BTreeMap<Unfit, usize>> {
        self.best_node(req)
    }

    fn assume_only(&mut self, inst: &Instance, requests: Resources, node: String, gpus: GpuPick) {
        Scheduler::assume_only(self, inst, requests, node, gpus);
    }

    fn assume_and_bind(
        &mut self,
        inst: &Instance,
        requests: Resources,
        node: String,
        gpus: GpuPick,
    ) {
        Scheduler::assume_and_bind(self, inst, requests, node, gpus);
    }
}
