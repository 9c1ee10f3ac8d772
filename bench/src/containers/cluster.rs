//! One HyperMesh round of the `runtime` benchmark: ask for N Instances (one Workload
//! with `replicas: N`, or N Instances created at once), follow them on a watch opened
//! before the create until every one's phase is RUNNING, then delete them and wait
//! until the agent has removed their containers from containerd.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use clap::ValueEnum;
use futures::future::try_join_all;
use hypermesh_api::v1::{
    self, DeleteRequest, Instance, InstancePhase, InstanceTemplate, Node, ObjectMeta,
    RestartPolicy, WatchEventType, WatchRequest, Workload, WorkloadSpec,
};
use hypermesh_api::{Api, Resource};
use tokio::time::Instant;
use tonic::Streaming;

use crate::containerd::Ctr;
use crate::procfs;
use crate::servers::ServerProcess;

/// Namespace of everything the benchmark creates.
pub const NAMESPACE: &str = "default";
/// The image every container runs (scripts/build-test-image.sh).
pub const IMAGE: &str = "hypermesh.local/busybox:latest";
/// What every container runs.
pub const COMMAND: [&str; 2] = ["sleep", "3600"];
/// Label naming the round an object belongs to; each round watches only its own.
const ROUND_LABEL: &str = "hm-bench-round";

/// How the benchmark asks for Instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// One Workload with `replicas: N`, as `hmctl apply` of a Workload manifest: the
    /// workload controller creates the Instances, the scheduler binds them, the agent
    /// runs them.
    Workload,
    /// N Instances created at once: the scheduler binds them, the agent runs them.
    Instance,
}

impl Via {
    /// How the tables name it.
    pub fn describe(self) -> &'static str {
        match self {
            Via::Workload => "Workload (controller → scheduler → agent)",
            Via::Instance => "Instances (scheduler → agent)",
        }
    }

    /// In round names: `wl`, `inst`.
    pub fn short(self) -> &'static str {
        match self {
            Via::Workload => "wl",
            Via::Instance => "inst",
        }
    }
}

/// Where one Instance's start went, from the benchmark's watch (and the container's
/// `startedAt`, the agent's clock on the same host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stages {
    /// Create sent → phase RUNNING seen.
    pub total: Duration,
    /// Create sent → the Instance exists (a Workload's: the controller made it).
    pub created: Duration,
    /// Exists → bound to the node (scheduler).
    pub scheduled: Duration,
    /// Bound → container started (the agent: its watch, image, setup, containerd
    /// container and task create, task start).
    pub started: Duration,
    /// Container started → RUNNING seen (the agent's status write, the watch).
    pub reported: Duration,
}

/// What one round measured.
#[derive(Debug, Clone)]
pub struct RoundResult {
    /// Each Instance's start.
    pub stages: Vec<Stages>,
    /// First create sent → last Instance RUNNING.
    pub all_running: Duration,
    /// CPU used from the first create to the last RUNNING.
    pub cpu: RoundCpu,
}

/// CPU seconds used while a round's containers started.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundCpu {
    /// The whole machine, every process (other users' too).
    pub machine: f64,
    /// The containerd daemon (its shims and runc are separate processes).
    pub containerd: f64,
}

impl RoundCpu {
    /// Readings now; subtract two to get a round's use.
    pub fn now(containerd: Option<u32>) -> RoundCpu {
        RoundCpu {
            machine: procfs::machine_busy_seconds(),
            containerd: procfs::cpu_seconds(containerd),
        }
    }

    /// The use between `self` (earlier) and `later`.
    pub fn until(self, later: RoundCpu) -> RoundCpu {
        RoundCpu {
            machine: later.machine - self.machine,
            containerd: later.containerd - self.containerd,
        }
    }
}

/// When a create was sent: monotonic for latencies, wall clock to compare with the
/// agent's timestamps.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    wall: SystemTime,
}

impl Sent {
    fn now() -> Sent {
        Sent {
            at: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of monotonic instant `t`.
    fn wall_of(&self, t: Instant) -> SystemTime {
        self.wall + t.saturating_duration_since(self.at)
    }
}

/// What the watch showed of one Instance.
#[derive(Debug, Clone, Default)]
struct Seen {
    added: Option<Instant>,
    bound: Option<Instant>,
    /// The container's `startedAt`.
    started: Option<SystemTime>,
    running: Option<Instant>,
    /// Phase and container state last seen, for error messages.
    last: String,
}

/// The processes under test and clients for them.
pub struct Cluster {
    pub apiserver: ServerProcess,
    pub scheduler: ServerProcess,
    pub agent: ServerProcess,
    pub instances: Api<Instance>,
    pub workloads: Api<Workload>,
    pub nodes: Api<Node>,
    /// `ctr` in the agent's containerd namespace, to see its containers go.
    pub agent_ctr: Ctr,
    /// The containerd daemon's pid, for its CPU time.
    pub containerd_pid: Option<u32>,
    /// Deadline for each wait.
    pub timeout: Duration,
}

/// A round whose Instances all run, until [`Cluster::finish`] deletes them.
pub struct Started {
    via: Via,
    round: String,
    watch: Streaming<v1::InstanceWatchEvent>,
    names: HashSet<String>,
    /// What it measured.
    pub result: RoundResult,
}

fn labels(round: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("hm-bench".to_string(), "runtime".to_string()),
        (ROUND_LABEL.to_string(), round.to_string()),
    ])
}

fn container() -> v1::Container {
    v1::Container {
        name: "main".into(),
        image: IMAGE.into(),
        command: COMMAND.iter().map(|s| (*s).to_string()).collect(),
        ..Default::default()
    }
}

/// `sleep` is PID 1 of its container and ignores SIGTERM: a grace period of 1 s (the
/// shortest) keeps deletions quick. Deletions are not timed.
const GRACE_SECONDS: i64 = 1;

fn workload(round: &str, replicas: usize) -> Result<Workload> {
    Ok(Workload {
        metadata: Some(ObjectMeta {
            name: round.into(),
            namespace: NAMESPACE.into(),
            labels: labels(round),
            ..Default::default()
        }),
        spec: Some(WorkloadSpec {
            replicas: i32::try_from(replicas).context("too many replicas")?,
            selector: BTreeMap::from([(ROUND_LABEL.to_string(), round.to_string())]),
            template: Some(InstanceTemplate {
                labels: labels(round),
                containers: vec![container()],
                restart_policy: RestartPolicy::Always as i32,
                termination_grace_period_seconds: GRACE_SECONDS,
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    })
}

fn instance(round: &str, name: &str) -> Instance {
    Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: NAMESPACE.into(),
            labels: labels(round),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![container()],
            restart_policy: RestartPolicy::Always as i32,
            termination_grace_period_seconds: GRACE_SECONDS,
            ..Default::default()
        }),
        status: None,
    }
}

/// `Running, main: waiting ImageNotFound (…)`: for error messages.
fn describe(instance: &Instance) -> String {
    let Some(status) = &instance.status else {
        let bound = instance
            .spec
            .as_ref()
            .is_some_and(|s| !s.node_name.is_empty());
        return if bound { "bound" } else { "unbound" }.into();
    };
    let phase = InstancePhase::try_from(status.phase)
        .map(|p| p.as_str_name())
        .unwrap_or("?");
    let containers: Vec<String> = status
        .container_statuses
        .iter()
        .map(|c| {
            let state = c.state.as_ref();
            let detail = if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                format!("waiting {} ({})", w.reason, w.message)
            } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                format!("terminated {} (exit {})", t.reason, t.exit_code)
            } else if state.and_then(|s| s.running.as_ref()).is_some() {
                "running".into()
            } else {
                "no state".into()
            };
            format!("{}: {detail}", c.name)
        })
        .collect();
    format!("{phase}, {}", containers.join(", "))
}

fn started_at(instance: &Instance) -> Option<SystemTime> {
    instance
        .status
        .as_ref()?
        .container_statuses
        .first()?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()
        .map(hypermesh_api::time::to_system_time)
}

impl Cluster {
    /// Waits (polling every 100 ms, not timed) until Node `name` says Ready=True.
    pub async fn wait_node_ready(&mut self, name: &str) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let ready = self.nodes.get("", name).await.ok().is_some_and(|node| {
                node.status
                    .iter()
                    .flat_map(|s| &s.conditions)
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            });
            if ready {
                return Ok(());
            }
            self.agent.check_alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "node {name} not Ready within {:?}; last lines of the agent's log:\n{}",
                    self.timeout,
                    self.agent.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks for `count` Instances `via` Workload or Instances, labelled with `round`, and
    /// waits until every one is RUNNING.
    pub async fn start(&self, via: Via, round: &str, count: usize) -> Result<Started> {
        let selector = format!("{ROUND_LABEL}={round}");
        let mut watch = self
            .instances
            .watch_from_now(WatchRequest {
                namespace: NAMESPACE.into(),
                label_selector: selector,
                ..Default::default()
            })
            .await
            .context("watching instances")?;

        // When each create was sent, by Instance name (a Workload's: under "").
        let sent: Arc<Mutex<HashMap<String, Sent>>> = Arc::default();
        let cpu_before = RoundCpu::now(self.containerd_pid);
        let creator = {
            let (sent, round) = (sent.clone(), round.to_string());
            let (workloads, instances) = (self.workloads.clone(), self.instances.clone());
            tokio::spawn(async move {
                match via {
                    Via::Workload => {
                        let object = workload(&round, count)?;
                        lock(&sent).insert(String::new(), Sent::now());
                        workloads
                            .create(&object)
                            .await
                            .context("creating the workload")?;
                    }
                    Via::Instance => {
                        try_join_all((0..count).map(|i| {
                            let name = format!("{round}-{i:03}");
                            let object = instance(&round, &name);
                            let (instances, sent) = (instances.clone(), sent.clone());
                            async move {
                                lock(&sent).insert(name.clone(), Sent::now());
                                instances
                                    .create(&object)
                                    .await
                                    .with_context(|| format!("creating instance {name}"))
                            }
                        }))
                        .await?;
                    }
                }
                anyhow::Ok(())
            })
        };

        let deadline = Instant::now() + self.timeout;
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let mut running = 0;
        while running < count {
            let message = match tokio::time::timeout_at(deadline, watch.message()).await {
                Err(_) => return Err(self.stuck(round, count, &seen)),
                Ok(message) => message
                    .context("instance watch failed")?
                    .context("instance watch ended")?,
            };
            let now = Instant::now();
            let (kind, object) = Instance::split_event(message);
            let name = object.meta().name.clone();
            match kind {
                WatchEventType::Added | WatchEventType::Modified => {}
                WatchEventType::Deleted => bail!("instance {name} was deleted before it ran"),
                _ => continue,
            }
            let entry = seen.entry(name.clone()).or_default();
            entry.added.get_or_insert(now);
            if object
                .spec
                .as_ref()
                .is_some_and(|s| !s.node_name.is_empty())
            {
                entry.bound.get_or_insert(now);
            }
            if let Some(at) = started_at(&object) {
                entry.started.get_or_insert(at);
            }
            entry.last = describe(&object);
            let phase = object.status.as_ref().map_or(0, |s| s.phase);
            if phase == InstancePhase::Running as i32 && entry.running.is_none() {
                entry.running = Some(now);
                running += 1;
            } else if phase == InstancePhase::Failed as i32
                || phase == InstancePhase::Succeeded as i32
            {
                bail!("instance {name} ended instead of running: {}", entry.last);
            }
        }
        let cpu = cpu_before.until(RoundCpu::now(self.containerd_pid));
        creator.await.context("the creating task")??;

        let sent = lock(&sent).clone();
        let mut stages = Vec::with_capacity(count);
        let mut first_sent: Option<Instant> = None;
        let mut last_running: Option<Instant> = None;
        for (name, s) in &seen {
            let origin = sent
                .get(name)
                .or_else(|| sent.get(""))
                .copied()
                .with_context(|| format!("instance {name} appeared without a create"))?;
            let (Some(added), Some(bound), Some(running)) = (s.added, s.bound, s.running) else {
                continue;
            };
            // An Instance can be seen running before its container's start time is
            // (never with this agent, which writes both at once); count it as reported.
            let started = s.started.unwrap_or_else(|| origin.wall_of(running));
            let bound_wall = origin.wall_of(bound);
            let started_after_bound = started.duration_since(bound_wall).unwrap_or_default();
            let reported = origin
                .wall_of(running)
                .duration_since(started.max(bound_wall))
                .unwrap_or_default();
            stages.push(Stages {
                total: running.saturating_duration_since(origin.at),
                created: added.saturating_duration_since(origin.at),
                scheduled: bound.saturating_duration_since(added),
                started: started_after_bound,
                reported,
            });
            first_sent = Some(first_sent.map_or(origin.at, |f| f.min(origin.at)));
            last_running = Some(last_running.map_or(running, |l| l.max(running)));
        }
        let all_running = match (first_sent, last_running) {
            (Some(f), Some(l)) => l.saturating_duration_since(f),
            _ => Duration::ZERO,
        };
        Ok(Started {
            via,
            round: round.to_string(),
            watch,
            names: seen.into_keys().collect(),
            result: RoundResult {
                stages,
                all_running,
                cpu,
            },
        })
    }

    /// Deletes the round's Workload or Instances, waits for every Instance's DELETED
    /// event, then until the agent has removed every container (not timed).
    pub async fn finish(&self, started: Started) -> Result<RoundResult> {
        let Started {
            via,
            round,
            mut watch,
            mut names,
            result,
        } = started;
        let delete = |name: String| DeleteRequest {
            namespace: NAMESPACE.into(),
            name,
            ..Default::default()
        };
        match via {
            Via::Workload => {
                self.workloads
                    .delete(delete(round.clone()))
                    .await
                    .with_context(|| format!("deleting workload {round}"))?;
            }
            Via::Instance => {
                try_join_all(names.iter().map(|name| {
                    let instances = self.instances.clone();
                    let request = delete(name.clone());
                    async move {
                        instances
                            .delete(request)
                            .await
                            .with_context(|| format!("deleting instance {name}"))
                    }
                }))
                .await?;
            }
        }
        let deadline = Instant::now() + self.timeout;
        while !names.is_empty() {
            let message = tokio::time::timeout_at(deadline, watch.message())
                .await
                .map_err(|_| {
                    anyhow!(
                        "{} instances of round {round} not deleted within {:?}",
                        names.len(),
                        self.timeout
                    )
                })?
                .context("instance watch failed")?
                .context("instance watch ended")?;
            let (kind, object) = Instance::split_event(message);
            if kind == WatchEventType::Deleted {
                names.remove(&object.meta().name);
            }
        }
        self.agent_ctr
            .wait_empty(self.timeout)
            .await
            .with_context(|| format!("the agent did not remove round {round}'s containers"))?;
        Ok(result)
    }

    /// Asks for `count` Instances, waits until they run, deletes them and waits until
    /// their containers are gone.
    pub async fn round(&self, via: Via, round: &str, count: usize) -> Result<RoundResult> {
        let started = self.start(via, round, count).await?;
        self.finish(started).await
    }

    /// The error when not every Instance ran in time: what each one showed last, and the
    /// agent's latest log lines.
    fn stuck(&self, round: &str, count: usize, seen: &HashMap<String, Seen>) -> anyhow::Error {
        let running = seen.values().filter(|s| s.running.is_some()).count();
        let mut waiting: Vec<String> = seen
            .iter()
            .filter(|(_, s)| s.running.is_none())
            .map(|(name, s)| format!("  {name}: {}", s.last))
            .collect();
        waiting.sort();
        waiting.truncate(10);
        anyhow!(
            "round {round}: {running} of {count} instances running after {:?} ({} seen); not running:\n{}\nlast lines of the agent's log:\n{}",
            self.timeout,
            seen.len(),
            waiting.join("\n"),
            self.agent.log_tail(20)
        )
    }
}

/// The map behind a mutex no task panics while holding.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
