//! The `watch-fanout` benchmark: W concurrent watchers of Workloads on one real
//! `hm-apiserver` (spread over connections of `--per-connection` streams), then a
//! paced series of creates; for every (write, watcher) pair the time from sending the
//! create to the watcher receiving its ADDED event, the creates' own latency under
//! that load, the apiserver's CPU per delivery and its RSS idle, with the watches
//! open, and after the writes — with `--watch-cache=true` and `=false` side by side.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use hypermesh_api::v1::{ListRequest, WatchEventType, WatchRequest, Workload};
use hypermesh_api::{Api, Resource};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::procfs;
use crate::servers::{self, Controllers};
use crate::stats::{PhaseStats, format_duration};
use crate::workload::{bench_workload, index_of};

/// Arguments of `hm-bench watch-fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Watcher counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u32, 10_000])]
    pub watchers: Vec<u32>,
    /// Watch cache settings to measure, comma-separated (`--watch-cache=` values).
    #[arg(long, value_delimiter = ',', default_values_t = [true, false])]
    pub cache: Vec<bool>,
    /// Creates sent while the watchers watch.
    #[arg(long, default_value_t = 100)]
    pub writes: u32,
    /// Milliseconds between the starts of two creates.
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Watch streams per HTTP/2 connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_connection: u32,
    /// The hm-apiserver binary (`cargo build --release -p hypermesh-apiserver`).
    #[arg(long, default_value = "target/release/hm-apiserver")]
    pub apiserver: std::path::PathBuf,
    /// Deadline in seconds for each phase.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

/// What one run measured.
struct Figures {
    cache: bool,
    watchers: u32,
    deliveries: usize,
    expected: usize,
    delivery: PhaseStats,
    create: PhaseStats,
    cpu_per_delivery_us: f64,
    rss_idle_mib: f64,
    rss_watching_mib: f64,
    rss_after_mib: f64,
}

/// Runs every (cache, watchers) combination and prints the table.
pub async fn run(args: FanoutArgs) -> Result<()> {
    let mut rows = Vec::new();
    for &watchers in &args.watchers {
        for &cache in &args.cache {
            eprintln!("hm-bench: watch-fanout, {watchers} watchers, --watch-cache={cache}");
            let figures = measure(&args, cache, watchers)
                .await
                .with_context(|| format!("{watchers} watchers, --watch-cache={cache}"))?;
            eprintln!("{}", row(&figures));
            rows.push(figures);
        }
    }
    println!(
        "| --watch-cache | watchers | deliveries | write→delivery p50 | p99 | max | create p50 / p99 under load | apiserver CPU per delivery | apiserver RSS idle → watching → after |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for figures in &rows {
        println!("{}", row(figures));
    }
    Ok(())
}

fn row(f: &Figures) -> String {
    format!(
        "| {} | {} | {}/{} | {} | {} | {} | {} / {} | {:.1} µs | {:.0} → {:.0} → {:.0} MiB |",
        f.cache,
        f.watchers,
        f.deliveries,
        f.expected,
        format_duration(f.delivery.p50),
        format_duration(f.delivery.p99),
        format_duration(f.delivery.max),
        format_duration(f.create.p50),
        format_duration(f.create.p99),
        f.cpu_per_delivery_us,
        f.rss_idle_mib,
        f.rss_watching_mib,
        f.rss_after_mib,
    )
}

fn rss_mib(pid: Option<u32>) -> f64 {
    pid.and_then(procfs::memory)
        .map_or(0.0, |m| m.rss_kib as f64 / 1024.0)
}

async fn measure(args: &FanoutArgs, cache: bool, watchers: u32) -> Result<Figures> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let flag = format!("--watch-cache={cache}");
    let server =
        servers::start_apiserver_args(&args.apiserver, Controllers::None, &[&flag], timeout)
            .await?;
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_mib = rss_mib(pid);

    let writer = Api::<Workload>::new(hypermesh_api::client::connect(server.url()).await?);
    let listed = writer
        .list(ListRequest {
            namespace: "default".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .context("listing before the watches")?;
    let from = listed.1;

    let writes = args.writes as usize;
    let per_connection = args.per_connection as usize;
    let connections = (watchers as usize).div_ceil(per_connection);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(hypermesh_api::client::connect(server.url()).await?);
    }
    let opened = Arc::new(Barrier::new(watchers as usize + 1));
    let deadline = Instant::now() + timeout;
    let mut tasks = JoinSet::new();
    for w in 0..watchers as usize {
        let api = Api::<Workload>::new(channels[w / per_connection].clone());
        let opened = opened.clone();
        tasks.spawn(async move {
            let stream = api
                .watch(WatchRequest {
                    namespace: "default".into(),
                    resource_version: from,
                    ..Default::default()
                })
                .await;
            opened.wait().await;
            let mut stream = stream.context("opening a watch")?;
            let mut received = Vec::with_capacity(writes);
            while received.len() < writes {
                let message = match tokio::time::timeout_at(deadline, stream.message()).await {
                    Err(_) => break,
                    Ok(m) => m.context("watch stream failed")?,
                };
                let Some(message) = message else { break };
                let at = Instant::now();
                let (kind, obj) = Workload::split_event(message);
                if kind == WatchEventType::Added
                    && let Some(i) = index_of(&obj.meta().name)
                {
                    received.push((i, at));
                }
            }
            anyhow::Ok(received)
        });
    }
    tokio::time::timeout_at(deadline, opened.wait())
        .await
        .context("opening every watch")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_watching_mib = rss_mib(pid);

    let cpu_before = procfs::cpu_seconds(pid);
    let objects: Vec<Workload> = (0..writes).map(|i| bench_workload("default", i)).collect();
    let mut sent = Vec::with_capacity(writes);
    let mut create_latency = Vec::with_capacity(writes);
    let start = Instant::now();
    for (i, object) in objects.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(args.interval_ms * i as u64)).await;
        let at = Instant::now();
        sent.push(at);
        writer.create(object).await.context("create")?;
        create_latency.push(at.elapsed());
    }
    let wall = start.elapsed();

    let mut samples = Vec::with_capacity(writes * watchers as usize);
    while let Some(joined) = tasks.join_next().await {
        for (i, at) in joined.context("watcher task")?? {
            if let Some(s) = sent.get(i) {
                samples.push(at.saturating_duration_since(*s));
            }
        }
    }
    let cpu = procfs::cpu_seconds(pid) - cpu_before;
    let rss_after_mib = rss_mib(pid);
    server.stop().await?;
    let expected = writes * watchers as usize;
    if samples.is_empty() {
        bail!("no watcher received anything");
    }
    let deliveries = samples.len();
    Ok(Figures {
        cache,
        watchers,
        deliveries,
        expected,
        delivery: PhaseStats::new(deliveries as u64, wall, samples),
        create: PhaseStats::new(writes as u64, wall, create_latency),
        cpu_per_delivery_us: cpu * 1e6 / deliveries as f64,
        rss_idle_mib,
        rss_watching_mib,
        rss_after_mib,
    })
}
