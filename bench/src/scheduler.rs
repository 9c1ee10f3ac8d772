//! The `scheduler` benchmark: a real `hm-apiserver` and a real `hm-scheduler`
//! process, N simulated nodes (Node objects with allocatable capacity and Ready=True;
//! every other node carries GPU Assets), then M Instances created by C concurrent
//! clients. A watcher started before the first create records when each Instance is
//! bound. Reported: bindings per second (M over the time from the first create sent
//! to the last binding seen) and create→bound latency (p50, p99), for plain and for
//! GPU-requesting Instances, run one after the other on fresh servers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use hypermesh_api::v1::{
    self, Asset, AssetSharing, AssetSpec, AssetType, Condition, Instance, Node, NodeStatus,
    ObjectMeta, WatchEventType, WatchRequest,
};
use hypermesh_api::{Api, Resource};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::procfs::cpu_seconds;
use crate::servers;
use crate::stats::{PhaseStats, format_count, format_duration};

/// Arguments of `hm-bench scheduler`.
#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    /// Simulated nodes (every `--gpu-every`th carries GPUs).
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Instances to schedule in the plain phase.
    #[arg(long, default_value_t = 10_000)]
    pub instances: usize,
    /// Instances in the GPU phase (each asks for one whole GPU); 0 skips it. Capped
    /// at the number of GPUs.
    #[arg(long, default_value_t = 2_000)]
    pub gpu_instances: usize,
    /// Every Nth node has GPUs.
    #[arg(long, default_value_t = 2)]
    pub gpu_every: usize,
    /// GPUs per GPU node.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_node: usize,
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// The hm-apiserver binary.
    #[arg(long, default_value = "target/release/hm-apiserver")]
    pub apiserver: PathBuf,
    /// The hm-scheduler binary.
    #[arg(long, default_value = "target/release/hm-scheduler")]
    pub scheduler: PathBuf,
    /// Deadline in seconds for each phase.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

fn node(index: usize, gpu: bool, identity: &hypermesh_trust::NodeIdentity) -> Node {
    let labels = BTreeMap::from([
        (
            "hypermesh.io/hostname".to_string(),
            format!("node-{index:05}"),
        ),
        ("zone".to_string(), format!("zone-{}", index % 8)),
    ]);
    Node {
        metadata: Some(ObjectMeta {
            name: format!("node-{index:05}"),
            labels,
            ..Default::default()
        }),
        spec: Some(v1::NodeSpec {
            identity: Some(identity.to_node_identity()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            allocatable: BTreeMap::from([
                ("cpu".to_string(), "64".to_string()),
                ("memory".to_string(), "256Gi".to_string()),
                ("storage".to_string(), "2Ti".to_string()),
                ("instances".to_string(), "110".to_string()),
                ("gpu".to_string(), if gpu { "8" } else { "0" }.to_string()),
            ]),
            conditions: vec![Condition {
                r#type: "Ready".into(),
                status: "True".into(),
                reason: "Simulated".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn gpu_asset(node_index: usize, gpu: usize) -> Asset {
    Asset {
        metadata: Some(ObjectMeta {
            name: format!("node-{node_index:05}-gpu{gpu}"),
            ..Default::default()
        }),
        spec: Some(AssetSpec {
            node_name: format!("node-{node_index:05}"),
            r#type: AssetType::Gpu as i32,
            capacity: BTreeMap::from([("gpu".to_string(), "1".to_string())]),
            attributes: BTreeMap::from([
                ("model".to_string(), "Simulated A100-SXM4-40GB".to_string()),
                ("memory".to_string(), "40Gi".to_string()),
            ]),
            sharing: Some(AssetSharing {
                allowed: false,
                max_shares: 1,
            }),
            privacy: v1::PrivacyLevel::Untrusted as i32,
            ..Default::default()
        }),
        status: None,
    }
}

fn instance(name: &str, gpu: bool) -> Instance {
    Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: BTreeMap::from([("app".to_string(), "bench".to_string())]),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: "hypermesh.local/busybox:latest".into(),
                resources: Some(v1::ResourceRequirements {
                    cpu: "100m".into(),
                    memory: "64Mi".into(),
                    gpu: if gpu { "1".into() } else { String::new() },
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Runs `count` async jobs indexed 0..count with `concurrency` at a time.
async fn for_each_concurrent<F, Fut>(count: usize, concurrency: usize, job: F) -> Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut stream = futures::stream::iter(0..count)
        .map(job)
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = stream.next().await {
        result?;
    }
    Ok(())
}

/// One phase's result.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// `plain` or `gpu`.
    pub name: &'static str,
    /// Create→bound latencies and bindings/s.
    pub stats: PhaseStats,
    /// CPU seconds the apiserver and the scheduler used during the phase.
    pub cpu_seconds: (f64, f64),
}

async fn run_phase(args: &SchedulerArgs, gpu: bool) -> Result<PhaseResult> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let server =
        servers::start_apiserver(&args.apiserver, servers::Controllers::None, timeout).await?;
    let channel = hypermesh_api::client::connect(server.url())
        .await
        .context("connecting")?;
    let nodes: Api<Node> = Api::new(channel.clone());
    let assets: Api<Asset> = Api::new(channel.clone());
    let instances: Api<Instance> = Api::new(channel.clone());

    let started = Instant::now();
    // One identity for every simulated node (keygen is not what is measured); each
    // node's Assets are proved with it, since the scheduler takes capacity from them.
    let identity = std::sync::Arc::new(hypermesh_trust::NodeIdentity::generate());
    for_each_concurrent(args.nodes, args.concurrency, |i| {
        let (nodes, assets, identity) = (nodes.clone(), assets.clone(), identity.clone());
        let has_gpus = args.gpu_every > 0 && i % args.gpu_every == 0;
        let gpus = args.gpus_per_node;
        async move {
            nodes
                .create(&node(i, has_gpus, &identity))
                .await
                .with_context(|| format!("creating node {i}"))?;
            for offer in crate::proven::offers(&format!("node-{i:05}"), "64", "256Gi", "110") {
                crate::proven::create(&assets, &identity, None, offer).await?;
            }
            if has_gpus {
                for g in 0..gpus {
                    crate::proven::create(&assets, &identity, None, gpu_asset(i, g))
                        .await
                        .context("creating a GPU asset")?;
                }
            }
            Ok(())
        }
    })
    .await?;
    let gpu_total = if args.gpu_every == 0 {
        0
    } else {
        args.nodes.div_ceil(args.gpu_every) * args.gpus_per_node
    };
    eprintln!(
        "hm-bench: {} nodes ({gpu_total} GPUs) created in {}",
        args.nodes,
        format_duration(started.elapsed())
    );

    let mut scheduler = servers::start_scheduler(&args.scheduler, server.url())?;
    // Warm-up: one Instance bound proves the scheduler has synced its caches.
    instances
        .create(&instance("warmup", false))
        .await
        .context("creating the warm-up instance")?;
    let warm_deadline = Instant::now() + timeout;
    loop {
        let bound = instances
            .get("default", "warmup")
            .await
            .ok()
            .and_then(|i| i.spec)
            .is_some_and(|s| !s.node_name.is_empty());
        if bound {
            break;
        }
        if Instant::now() > warm_deadline {
            bail!("the scheduler did not bind the warm-up instance within {timeout:?}");
        }
        scheduler.check_alive()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let count = if gpu {
        args.gpu_instances.min(gpu_total)
    } else {
        args.instances
    };
    let prefix = if gpu { "gpu" } else { "plain" };
    let mut watch = instances
        .watch_from_now(WatchRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .context("watching instances")?;
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    let cpu_before = (cpu_seconds(server.pid()), cpu_seconds(scheduler.pid()));
    let begin = Instant::now();
    let creator = {
        let (instances, sent_at) = (instances.clone(), sent_at.clone());
        let concurrency = args.concurrency;
        tokio::spawn(async move {
            for_each_concurrent(count, concurrency, |i| {
                let (instances, sent_at) = (instances.clone(), sent_at.clone());
                async move {
                    sent_at.lock().await[i] = Some(Instant::now());
                    instances
                        .create(&instance(&format!("{prefix}-{i:06}"), gpu))
                        .await
                        .with_context(|| format!("creating instance {i}"))?;
                    Ok(())
                }
            })
            .await
        })
    };
    let mut bound_at: Vec<Option<Instant>> = vec![None; count];
    let mut bound = 0;
    let deadline = Instant::now() + timeout;
    while bound < count {
        let message = tokio::time::timeout_at(deadline, watch.message())
            .await
            .with_context(|| format!("only {bound} of {count} instances bound within {timeout:?}"))?
            .context("watch failed")?
            .context("watch ended")?;
        let (kind, inst) = Instance::split_event(message);
        if kind != WatchEventType::Modified && kind != WatchEventType::Added {
            continue;
        }
        let Some(index) = inst
            .meta()
            .name
            .strip_prefix(&format!("{prefix}-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if index < count
            && bound_at[index].is_none()
            && inst.spec.as_ref().is_some_and(|s| !s.node_name.is_empty())
        {
            bound_at[index] = Some(Instant::now());
            bound += 1;
        }
    }
    let wall = begin.elapsed();
    let cpu = (
        cpu_seconds(server.pid()) - cpu_before.0,
        cpu_seconds(scheduler.pid()) - cpu_before.1,
    );
    creator.await.context("creator task")??;
    let sent = sent_at.lock().await.clone();
    let samples: Vec<Duration> = sent
        .iter()
        .zip(&bound_at)
        .filter_map(|(s, b)| Some(b.as_ref()?.saturating_duration_since(*s.as_ref()?)))
        .collect();
    let _ = scheduler.stop().await;
    server.stop().await?;
    Ok(PhaseResult {
        name: if gpu { "gpu" } else { "plain" },
        stats: PhaseStats::new(count as u64, wall, samples),
        cpu_seconds: cpu,
    })
}

/// Runs the benchmark and prints a markdown table.
pub async fn run(args: SchedulerArgs) -> Result<()> {
    let mut results = vec![run_phase(&args, false).await?];
    if args.gpu_instances > 0 && args.gpu_every > 0 {
        results.push(run_phase(&args, true).await?);
    }
    println!(
        "| {} nodes, {} concurrent creators | instances | bindings/s | create→bound p50 | p99 | CPU s apiserver / scheduler |",
        args.nodes, args.concurrency
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} / {:.1} |",
            r.name,
            r.stats.ops,
            format_count(r.stats.throughput()),
            format_duration(r.stats.p50),
            format_duration(r.stats.p99),
            r.cpu_seconds.0,
            r.cpu_seconds.1
        );
    }
    if let [plain, gpu] = results.as_slice() {
        println!(
            "\nGPU ÷ plain bindings/s: {:.2}",
            gpu.stats.throughput() / plain.stats.throughput().max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}
