//! The `runtime` benchmark: how long from asking for Instances of the busybox test
//! image (`sleep 3600`) until their status says RUNNING, on this host with real
//! processes — `hm-apiserver` (with its controllers), `hm-scheduler`, `hm-agent` and a
//! private containerd with the image already imported — side by side with `ctr run -d`
//! of the same image on the same containerd, the floor: what containerd itself needs to
//! start a task. Then the memory the agent holds with N Instances running, and what each
//! container costs outside it (its runc shim and its `hm-logger`).
//!
//! Rounds of one Instance repeat `--repeats` times and rounds of `--batch` Instances at
//! once `--batch-repeats` times; within a repetition the systems take turns (Workload,
//! Instances, ctr), so a busy moment on the machine hits them alike. Every round starts
//! with no container left from the previous one. See [`cluster`] for how a HyperMesh
//! round is timed and [`memory`] for how processes are found.

pub mod cluster;
pub mod memory;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::future::try_join_all;
use hypermesh_api::Api;
use tokio::process::Command;
use tokio::time::Instant;

use crate::containerd::{Ctr, PrivateContainerd};
use crate::procfs::{Memory, cpu_seconds};
use crate::servers::{self, AgentTarget, Controllers};
use crate::stats::{format_duration, percentile};
use cluster::{COMMAND, Cluster, IMAGE, RoundCpu, RoundResult, Stages, Via};
use memory::{Snapshot, format_mib, per_item};

/// The agent's Node.
const NODE: &str = "hm-bench-node";
/// The containerd namespace the agent uses.
const AGENT_NAMESPACE: &str = "hypermesh";
/// The containerd namespace of the `ctr` floor (images are per namespace: the archive
/// is imported there too).
const CTR_NAMESPACE: &str = "hm-bench-ctr";
/// How long processes get to settle before their memory is read.
const SETTLE: Duration = Duration::from_secs(2);

/// Arguments of `hm-bench runtime`.
#[derive(Debug, Clone, Args)]
pub struct ContainersArgs {
    /// Rounds of one Instance (and of one `ctr run -d`).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeats: u32,
    /// Instances (and `ctr run -d` commands) started at once in a batch round.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub batch: u32,
    /// Batch rounds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub batch_repeats: u32,
    /// How Instances are asked for, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Via::Workload, Via::Instance])]
    pub via: Vec<Via>,
    /// The hm-apiserver binary.
    #[arg(long, default_value = "target/release/hm-apiserver")]
    pub apiserver: PathBuf,
    /// The hm-scheduler binary.
    #[arg(long, default_value = "target/release/hm-scheduler")]
    pub scheduler: PathBuf,
    /// The hm-agent binary (hm-logger must be beside it).
    #[arg(long, default_value = "target/release/hm-agent")]
    pub agent: PathBuf,
    /// containerd's CLI.
    #[arg(long, default_value = "ctr")]
    pub ctr: PathBuf,
    /// Where containerd.sh and build-test-image.sh are.
    #[arg(long, default_value = "scripts")]
    pub scripts: PathBuf,
    /// Deadline in seconds for each wait (servers starting, a round running or going).
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// Who started the containers of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    HyperMesh(Via),
    Ctr,
}

impl System {
    fn describe(self) -> &'static str {
        match self {
            System::HyperMesh(via) => via.describe(),
            System::Ctr => "ctr run -d (floor)",
        }
    }
}

/// The rounds of one system at one size.
#[derive(Debug, Clone)]
struct Series {
    system: System,
    at_once: usize,
    rounds: Vec<RoundResult>,
}

impl Series {
    fn totals(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = self
            .rounds
            .iter()
            .flat_map(|r| r.stages.iter().map(|s| s.total))
            .collect();
        all.sort_unstable();
        all
    }

    fn stage(&self, pick: fn(&Stages) -> Duration) -> Vec<Duration> {
        let mut all: Vec<Duration> = self
            .rounds
            .iter()
            .flat_map(|r| r.stages.iter().map(pick))
            .collect();
        all.sort_unstable();
        all
    }

    /// CPU seconds per container started (machine, containerd), and the share of the
    /// machine's cores that was busy, over all rounds.
    fn cpu(&self) -> (f64, f64, f64) {
        let containers = self
            .rounds
            .iter()
            .map(|r| r.stages.len())
            .sum::<usize>()
            .max(1) as f64;
        let machine: f64 = self.rounds.iter().map(|r| r.cpu.machine).sum();
        let containerd: f64 = self.rounds.iter().map(|r| r.cpu.containerd).sum();
        let wall: f64 = self
            .rounds
            .iter()
            .map(|r| r.all_running.as_secs_f64())
            .sum();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (
            machine / containers,
            containerd / containers,
            machine / (wall * cores).max(f64::MIN_POSITIVE),
        )
    }

    /// The median over rounds of the time until the round's last Instance ran.
    fn all_running(&self) -> Duration {
        let mut walls: Vec<Duration> = self.rounds.iter().map(|r| r.all_running).collect();
        walls.sort_unstable();
        percentile(&walls, 0.5)
    }
}

/// CPU seconds the node-side and control-plane processes used while a batch started.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    apiserver: f64,
    scheduler: f64,
    agent: f64,
    containerd: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
struct Report {
    series: Vec<Series>,
    /// The agent registered and Ready, before any Instance.
    fresh: Snapshot,
    /// No Instance left, after the latency rounds.
    idle: Snapshot,
    loaded: Snapshot,
    after: Snapshot,
    batch: usize,
    batch_via: Via,
    batch_cpu: CpuUse,
    batch_wall: Duration,
}

/// Runs the benchmark and prints markdown tables.
pub async fn run(args: ContainersArgs) -> Result<()> {
    if args.via.is_empty() {
        bail!("--via needs at least one of workload, instance");
    }
    let work = tempfile::Builder::new()
        .prefix("hm-bench-runtime-")
        .tempdir()
        .context("creating a temporary directory")?;
    let image_dir = work.path().join("images");
    std::fs::create_dir_all(&image_dir).context("creating the image directory")?;
    let archive = image_dir.join("busybox.tar");
    build_test_image(&args.scripts.join("build-test-image.sh"), &archive).await?;
    let containerd = PrivateContainerd::start(
        &args.scripts.join("containerd.sh"),
        &work.path().join("containerd"),
        &args.ctr,
    )
    .await?;
    eprintln!(
        "hm-bench: private containerd on {}",
        containerd.socket().display()
    );
    // The servers stop inside `measure`; containerd goes last, with every container.
    let measured = measure(&args, &containerd, &image_dir, &archive).await;
    let stopped = containerd.stop().await;
    let report = measured?;
    stopped.context("cleaning up the private containerd")?;
    report.print();
    Ok(())
}

async fn build_test_image(script: &Path, out: &Path) -> Result<()> {
    let output = Command::new("bash")
        .arg(script)
        .arg(out)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

async fn measure(
    args: &ContainersArgs,
    containerd: &PrivateContainerd,
    image_dir: &Path,
    archive: &Path,
) -> Result<Report> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let apiserver = servers::start_apiserver(&args.apiserver, Controllers::All, timeout).await?;
    let scheduler = servers::start_scheduler(&args.scheduler, apiserver.url())?;
    let agent = servers::start_agent(
        &args.agent,
        AgentTarget {
            server: apiserver.url(),
            node_name: NODE,
            containerd_socket: containerd.socket(),
            image_dir,
        },
    )?;
    let channel = hypermesh_api::client::connect(apiserver.url())
        .await
        .context("connecting to the apiserver")?;
    let mut cluster = Cluster {
        apiserver,
        scheduler,
        agent,
        instances: Api::new(channel.clone()),
        workloads: Api::new(channel.clone()),
        nodes: Api::new(channel),
        agent_ctr: containerd.ctr(AGENT_NAMESPACE),
        containerd_pid: containerd.pid(),
        timeout,
    };
    let ctr = containerd.ctr(CTR_NAMESPACE);
    ctr.import(archive).await?;
    let agent_pid = cluster.agent.pid();
    let read = || {
        memory::snapshot(
            agent_pid,
            containerd.pid(),
            containerd.socket(),
            AGENT_NAMESPACE,
        )
    };
    cluster.wait_node_ready(NODE).await?;
    tokio::time::sleep(SETTLE).await;
    let fresh = read();

    // Warm-up, not counted: the Node registered and Ready, the image imported, the
    // controller's and scheduler's caches synced, the image's files in the page cache.
    eprintln!("hm-bench: warming up");
    for via in &args.via {
        cluster
            .round(*via, &format!("warmup-{}", via.short()), 1)
            .await?;
    }
    ctr_round(&ctr, containerd.pid(), "warmup", 1, timeout).await?;

    let mut systems: Vec<System> = args.via.iter().map(|v| System::HyperMesh(*v)).collect();
    systems.push(System::Ctr);
    let mut series = Vec::new();
    let sizes = [(1, args.repeats), (args.batch as usize, args.batch_repeats)];
    for (at_once, repeats) in sizes {
        if repeats == 0 {
            continue;
        }
        let first = series.len();
        for system in &systems {
            series.push(Series {
                system: *system,
                at_once,
                rounds: Vec::new(),
            });
        }
        for rep in 0..repeats {
            for (i, system) in systems.iter().enumerate() {
                let result = match system {
                    System::HyperMesh(via) => {
                        let round = format!("{}-{at_once}x-{rep:02}", via.short());
                        cluster.round(*via, &round, at_once).await?
                    }
                    System::Ctr => {
                        ctr_round(
                            &ctr,
                            containerd.pid(),
                            &format!("{at_once}x-{rep:02}"),
                            at_once,
                            timeout,
                        )
                        .await?
                    }
                };
                series[first + i].rounds.push(result);
            }
            eprintln!(
                "hm-bench: {at_once} at once: round {} of {repeats}",
                rep + 1
            );
        }
    }

    // Memory: idle, with a batch running, and after it is gone.
    let batch_via = args.via.iter().copied().last().unwrap_or(Via::Instance);
    let batch = args.batch as usize;
    tokio::time::sleep(SETTLE).await;
    let idle = read();
    let cpu = |c: &Cluster| CpuUse {
        apiserver: cpu_seconds(c.apiserver.pid()),
        scheduler: cpu_seconds(c.scheduler.pid()),
        agent: cpu_seconds(c.agent.pid()),
        containerd: cpu_seconds(containerd.pid()),
    };
    let before = cpu(&cluster);
    let started = cluster.start(batch_via, "memory", batch).await?;
    let after_start = cpu(&cluster);
    let batch_wall = started.result.all_running;
    tokio::time::sleep(SETTLE).await;
    let loaded = read();
    cluster.finish(started).await?;
    tokio::time::sleep(SETTLE).await;
    let after = read();

    let Cluster {
        mut apiserver,
        mut scheduler,
        mut agent,
        ..
    } = cluster;
    for process in [&mut agent, &mut scheduler, &mut apiserver] {
        process.check_alive()?;
    }
    agent.stop().await?;
    scheduler.stop().await?;
    apiserver.stop().await?;
    Ok(Report {
        series,
        fresh,
        idle,
        loaded,
        after,
        batch,
        batch_via,
        batch_cpu: CpuUse {
            apiserver: after_start.apiserver - before.apiserver,
            scheduler: after_start.scheduler - before.scheduler,
            agent: after_start.agent - before.agent,
            containerd: after_start.containerd - before.containerd,
        },
        batch_wall,
    })
}

/// `count` × `ctr run -d` at once, each timed to its exit (the task has started then),
/// checked RUNNING in `ctr tasks ls`, then removed.
async fn ctr_round(
    ctr: &Ctr,
    containerd_pid: Option<u32>,
    round: &str,
    count: usize,
    timeout: Duration,
) -> Result<RoundResult> {
    let ids: Vec<String> = (0..count)
        .map(|i| format!("hm-bench-{}-{round}-{i:03}", std::process::id()))
        .collect();
    let cpu_before = RoundCpu::now(containerd_pid);
    let begin = Instant::now();
    let totals = try_join_all(ids.iter().map(|id| ctr.run_detached(IMAGE, id, &COMMAND))).await?;
    let all_running = begin.elapsed();
    let cpu = cpu_before.until(RoundCpu::now(containerd_pid));
    let running = ctr.running_tasks().await?;
    let missing: Vec<&String> = ids.iter().filter(|id| !running.contains(*id)).collect();
    let removed = try_join_all(ids.iter().map(|id| ctr.remove(id))).await;
    if !missing.is_empty() {
        bail!(
            "ctr run -d returned but {} tasks are not RUNNING: {missing:?}",
            missing.len()
        );
    }
    removed?;
    ctr.wait_empty(timeout).await?;
    Ok(RoundResult {
        stages: totals
            .into_iter()
            .map(|total| Stages {
                total,
                created: Duration::ZERO,
                scheduled: Duration::ZERO,
                started: total,
                reported: Duration::ZERO,
            })
            .collect(),
        all_running,
        cpu,
    })
}

impl Report {
    fn find(&self, system: System, at_once: usize) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.system == system && s.at_once == at_once)
    }

    fn print(&self) {
        println!(
            "| started by | at once | rounds | samples | to RUNNING p50 | p99 | max | all running (median of rounds) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for s in &self.series {
            let totals = s.totals();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.system.describe(),
                s.at_once,
                s.rounds.len(),
                totals.len(),
                format_duration(percentile(&totals, 0.5)),
                format_duration(percentile(&totals, 0.99)),
                format_duration(totals.last().copied().unwrap_or_default()),
                format_duration(s.all_running()),
            );
        }

        println!("\n| HyperMesh ÷ ctr | at once | p50 | p99 | all running |");
        println!("|---|---:|---:|---:|---:|");
        for s in &self.series {
            let System::HyperMesh(_) = s.system else {
                continue;
            };
            let Some(floor) = self.find(System::Ctr, s.at_once) else {
                continue;
            };
            let (ours, theirs) = (s.totals(), floor.totals());
            let ratio = |a: Duration, b: Duration| {
                if b.is_zero() {
                    "—".to_string()
                } else {
                    format!("{:.1}×", a.as_secs_f64() / b.as_secs_f64())
                }
            };
            println!(
                "| {} | {} | {} | {} | {} |",
                s.system.describe(),
                s.at_once,
                ratio(percentile(&ours, 0.5), percentile(&theirs, 0.5)),
                ratio(percentile(&ours, 0.99), percentile(&theirs, 0.99)),
                ratio(s.all_running(), floor.all_running()),
            );
        }

        println!(
            "\n| CPU while starting | at once | machine busy per container | containerd per container | cores busy |"
        );
        println!("|---|---:|---:|---:|---:|");
        for s in &self.series {
            let (machine, containerd, busy) = s.cpu();
            println!(
                "| {} | {} | {} | {} | {:.0}% |",
                s.system.describe(),
                s.at_once,
                format_duration(Duration::from_secs_f64(machine.max(0.0))),
                format_duration(Duration::from_secs_f64(containerd.max(0.0))),
                busy * 100.0
            );
        }

        println!(
            "\n| where the time goes, p50 / p99 | at once | create → exists | → bound | → container started | → RUNNING seen |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for s in &self.series {
            if s.system == System::Ctr {
                continue;
            }
            let cell = |pick: fn(&Stages) -> Duration| {
                let v = s.stage(pick);
                format!(
                    "{} / {}",
                    format_duration(percentile(&v, 0.5)),
                    format_duration(percentile(&v, 0.99))
                )
            };
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                s.system.describe(),
                s.at_once,
                cell(|x| x.created),
                cell(|x| x.scheduled),
                cell(|x| x.started),
                cell(|x| x.reported),
            );
        }

        let n = self.batch;
        let both = |m: Memory| format!("{} (PSS {})", format_mib(m.rss_kib), format_mib(m.pss_kib));
        println!(
            "\n| memory ({}) | registered, nothing run yet | 0 Instances, after the rounds above | {n} running | after deleting them | per Instance |",
            self.batch_via.describe()
        );
        println!("|---|---:|---:|---:|---:|---:|");
        let snapshots = [&self.fresh, &self.idle, &self.loaded, &self.after];
        for (name, pick) in [
            (
                "hm-agent VmRSS",
                (|s: &Snapshot| s.agent) as fn(&Snapshot) -> Memory,
            ),
            ("containerd VmRSS", |s: &Snapshot| s.containerd),
        ] {
            let cells: Vec<String> = snapshots
                .iter()
                .map(|s| format_mib(pick(s).rss_kib))
                .collect();
            let growth = i64::try_from(pick(&self.loaded).rss_kib).unwrap_or(i64::MAX)
                - i64::try_from(pick(&self.idle).rss_kib).unwrap_or(i64::MAX);
            println!(
                "| {name} | {} | {:+} KB |",
                cells.join(" | "),
                growth / i64::try_from(n.max(1)).unwrap_or(1)
            );
        }
        for (name, pick) in [
            (
                "containerd-shim-runc-v2",
                (|s: &Snapshot| s.shims.as_slice()) as fn(&Snapshot) -> &[Memory],
            ),
            ("hm-logger", |s: &Snapshot| s.loggers.as_slice()),
            ("container process (sleep)", |s: &Snapshot| {
                s.containers.as_slice()
            }),
        ] {
            let cells: Vec<String> = snapshots
                .iter()
                .map(|s| match pick(s) {
                    [] => "none".to_string(),
                    items => format!("{} × {}", items.len(), both(items.iter().copied().sum())),
                })
                .collect();
            println!(
                "| {name}, RSS (PSS) summed | {} | {} |",
                cells.join(" | "),
                both(per_item(pick(&self.loaded)))
            );
        }
        let c = self.batch_cpu;
        println!(
            "\nCPU while {n} Instances started ({} until all RUNNING): apiserver {:.2} s, scheduler {:.2} s, agent {:.2} s, containerd {:.2} s (shims and runc not counted).",
            format_duration(self.batch_wall),
            c.apiserver,
            c.scheduler,
            c.agent,
            c.containerd
        );
    }
}
