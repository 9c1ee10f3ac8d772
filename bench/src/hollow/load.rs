//! The hollow benchmark's load and failure phases: Workloads totalling M Instances
//! (created by the workload controller, bound by the scheduler, reported Running by the
//! hollow nodes), timed from one Instance watch; and nodes that stop heartbeating at
//! once, timed from one Node watch until each is `Ready=Unknown`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hypermesh_api::v1::{
    Container, Instance, InstancePhase, InstanceTemplate, ListRequest, Node, ObjectMeta,
    ResourceRequirements, WatchEventType, WatchRequest, Workload, WorkloadSpec,
};
use hypermesh_api::{Api, Resource};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::node::{Fleet, node_name};
use crate::servers::ServerProcess;

/// Replica counts cycled through until the total is reached (the last one trimmed).
pub const SIZES: [usize; 6] = [5, 20, 50, 100, 250, 75];

/// What the load phase measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Workloads created.
    pub workloads: usize,
    /// Instances expected (sum of replicas).
    pub instances: usize,
    /// First Workload create sent → last Instance created (ADDED seen).
    pub created_wall: Duration,
    /// First binding seen → last binding seen.
    pub bound_span: Duration,
    /// First Workload create sent → last binding seen.
    pub bound_wall: Duration,
    /// First Workload create sent → last Instance Running.
    pub running_wall: Duration,
}

impl LoadResult {
    /// Instances created per second by the workload controller.
    pub fn created_per_s(&self) -> f64 {
        self.instances as f64 / self.created_wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Bindings per second (between the first and the last binding).
    pub fn bindings_per_s(&self) -> f64 {
        self.instances as f64 / self.bound_span.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

fn workload(index: usize, replicas: usize) -> Workload {
    let app = format!("hollow-{index:04}");
    let labels = BTreeMap::from([("app".to_string(), app.clone())]);
    Workload {
        metadata: Some(ObjectMeta {
            name: app,
            namespace: "default".into(),
            labels: labels.clone(),
            ..Default::default()
        }),
        spec: Some(WorkloadSpec {
            replicas: i32::try_from(replicas).unwrap_or(i32::MAX),
            selector: labels.clone(),
            template: Some(InstanceTemplate {
                labels,
                containers: vec![Container {
                    name: "main".into(),
                    image: "hypermesh.local/busybox:latest".into(),
                    resources: Some(ResourceRequirements {
                        cpu: "50m".into(),
                        memory: "64Mi".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// Waits until `count` Nodes report `Ready=True`.
pub async fn wait_nodes_ready(
    admin: &tonic::transport::Channel,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Node> = Api::new(admin.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let (nodes, _) = api
            .list_all(ListRequest::default())
            .await
            .context("listing nodes")?;
        let ready = nodes.iter().filter(|n| is_ready(n) == Some("True")).count();
        if ready >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {count} nodes Ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_ready(node: &Node) -> Option<&str> {
    let conditions = &node.status.as_ref()?.conditions;
    hypermesh_api::conditions::find(conditions, "Ready").map(|c| c.status.as_str())
}

/// Creates Workloads totalling `instances` replicas and waits until every Instance is
/// bound and Running.
pub async fn run(
    admin: &tonic::transport::Channel,
    fleet: &Fleet,
    instances: usize,
    timeout: Duration,
    scheduler: &mut ServerProcess,
) -> Result<LoadResult> {
    let workloads: Api<Workload> = Api::new(admin.clone());
    let insts: Api<Instance> = Api::new(admin.clone());
    let mut sizes = Vec::new();
    let mut total = 0;
    while total < instances {
        let size = SIZES[sizes.len() % SIZES.len()].min(instances - total);
        sizes.push(size);
        total += size;
    }
    let mut watch = insts
        .watch_from_now(WatchRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .context("watching instances")?;
    let running_before = fleet.stats.running.load(Ordering::Relaxed);
    let begin = Instant::now();
    let creator = {
        let (workloads, sizes) = (workloads.clone(), sizes.clone());
        tokio::spawn(async move {
            for (i, size) in sizes.into_iter().enumerate() {
                workloads
                    .create(&workload(i, size))
                    .await
                    .with_context(|| format!("creating workload {i}"))?;
            }
            anyhow::Ok(())
        })
    };
    // uid → (bound, running)
    let mut seen: HashMap<String, (bool, bool)> = HashMap::new();
    let (mut bound, mut running) = (0usize, 0usize);
    let (mut last_added, mut first_bound, mut last_bound) = (begin, None, begin);
    let deadline = begin + timeout;
    let mut last_report = Instant::now();
    while running < total {
        let message = match tokio::time::timeout(Duration::from_secs(1), watch.message()).await {
            Err(_) => None,
            Ok(m) => Some(
                m.context("instance watch failed")?
                    .context("instance watch ended")?,
            ),
        };
        if Instant::now() > deadline {
            bail!(
                "{} created, {bound} bound, {running} Running of {total} Instances within {timeout:?}",
                seen.len()
            );
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            scheduler.check_alive()?;
            eprintln!(
                "hm-bench: {} created, {bound} bound, {running} Running of {total}",
                seen.len()
            );
            last_report = Instant::now();
        }
        let Some(message) = message else { continue };
        let (kind, inst) = Instance::split_event(message);
        if kind != WatchEventType::Added && kind != WatchEventType::Modified {
            continue;
        }
        let now = Instant::now();
        let entry = seen.entry(inst.meta().uid.clone()).or_insert_with(|| {
            last_added = now;
            (false, false)
        });
        if !entry.0 && inst.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()) {
            entry.0 = true;
            bound += 1;
            first_bound.get_or_insert(now);
            last_bound = now;
        }
        if !entry.1
            && inst
                .status
                .as_ref()
                .is_some_and(|s| s.phase == InstancePhase::Running as i32)
        {
            entry.1 = true;
            running += 1;
        }
    }
    let running_wall = begin.elapsed();
    creator.await.context("creator task")??;
    eprintln!(
        "hm-bench: {total} Instances Running ({} reported by the fleet)",
        fleet.stats.running.load(Ordering::Relaxed) - running_before
    );
    Ok(LoadResult {
        workloads: sizes.len(),
        instances: total,
        created_wall: last_added - begin,
        bound_span: last_bound - first_bound.unwrap_or(begin),
        bound_wall: last_bound - begin,
        running_wall,
    })
}

/// What the detect phase measured.
#[derive(Debug, Clone, Default)]
pub struct DetectResult {
    /// Nodes stopped.
    pub killed: usize,
    /// Stop → `Ready=Unknown`, per node, sorted.
    pub detected: Vec<Duration>,
}

/// Stops `victims` at once and times until each is marked `Ready=Unknown`. Watches
/// Nodes with the runtime's watcher, which lists again when its watch falls out of
/// the apiserver's window (Node status writes can outrun it at this scale).
pub async fn detect(
    admin: &tonic::transport::Channel,
    stops: &[CancellationToken],
    victims: &[usize],
    timeout: Duration,
) -> Result<DetectResult> {
    let api: Api<Node> = Api::new(admin.clone());
    let stream = hypermesh_runtime::watcher::watcher(api, Default::default());
    let mut stream = std::pin::pin!(stream);
    let mut pending: HashSet<String> = victims.iter().map(|&i| node_name(i)).collect();
    let killed_at = Instant::now();
    for &i in victims {
        stops[i].cancel();
    }
    let mut detected = Vec::new();
    let deadline = killed_at + timeout;
    while !pending.is_empty() {
        let event = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut stream))
            .await
            .with_context(|| {
                format!(
                    "{} of {} stopped nodes not marked Ready=Unknown within {timeout:?}",
                    pending.len(),
                    victims.len()
                )
            })?
            .context("node watch ended")?;
        let nodes = match event {
            Ok(hypermesh_runtime::watcher::Event::Restarted(list)) => list,
            Ok(hypermesh_runtime::watcher::Event::Applied(node)) => vec![node],
            Ok(hypermesh_runtime::watcher::Event::Deleted(_)) | Err(_) => continue,
        };
        for node in nodes {
            if is_ready(&node) == Some("Unknown") && pending.remove(&node.meta().name) {
                detected.push(killed_at.elapsed());
            }
        }
    }
    detected.sort();
    Ok(DetectResult {
        killed: victims.len(),
        detected,
    })
}
