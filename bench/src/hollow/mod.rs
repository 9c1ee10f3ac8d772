//! The `hollow` benchmark (kubemark's idea): N hollow agents in this process against a
//! real TLS `hm-apiserver` (controllers on) and a real `hm-scheduler`. Each hollow node
//! joins with a token and gets its own certificate, registers its Node and proved
//! Assets, heartbeats, and fakes only the containers ([`node`]).
//!
//! Phases, one after the other on the same servers:
//! 1. **register**: N nodes join and register (bounded concurrency);
//! 2. **idle**: a window with N nodes heartbeating and nothing else;
//! 3. **load**: Workloads of several sizes totalling M Instances are created; the
//!    workload controller makes the Instances, the scheduler binds them, the hollow
//!    nodes report them Running. Bindings/s, and a window over the whole phase;
//! 4. **steady**: a window with N nodes and M Running Instances;
//! 5. **detect**: `--kill` nodes stop heartbeating at once; time until the
//!    node-lifecycle controller marks each `Ready=Unknown`.
//!
//! Every window reports apiserver CPU (cores) and RSS, heartbeats/s absorbed, Lease
//! renewal p50/p99, an admin prober's Get/List p50/p99 ([`measure`]) and watch
//! delivery p50/p99 of a probe Lease to K watchers ([`watch_probe`]); the load phase
//! also times each binding's delivery to its node's Instance watch.

pub mod load;
pub mod measure;
pub mod node;
pub mod plot;
pub mod report;
pub mod watch_probe;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use hypermesh_api::Api;
use hypermesh_api::v1::{JoinToken, JoinTokenSpec, ObjectMeta};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::servers;
use measure::{WindowMeter, start_prober};
use node::Fleet;

/// Arguments of `hm-bench hollow`.
#[derive(Debug, Clone, Args)]
pub struct HollowArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 1000)]
    pub nodes: usize,
    /// Instances in total, over Workloads of 5 to 250 replicas; 0 skips the load phase.
    #[arg(long, default_value_t = 10_000)]
    pub instances: usize,
    /// How long a hollow node takes to report a bound Instance Running (e.g. `500ms`).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub ready_delay: Duration,
    /// Lease renewal period of every hollow node (hm-agent's default).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Lease duration (hm-agent's default).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Joins and registrations in flight at once.
    #[arg(long, default_value_t = 16)]
    pub register_concurrency: usize,
    /// Length of the idle and steady windows.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub window: Duration,
    /// Watchers of the probe Lease (watch delivery p50/p99 per window); 0 skips it.
    #[arg(long, default_value_t = 100)]
    pub probe_watchers: usize,
    /// Nodes stopped at once in the detect phase; 0 skips it.
    #[arg(long, default_value_t = 100)]
    pub kill: usize,
    /// CPU threads and GiB of memory each hollow node reports.
    #[arg(long, default_value_t = 64)]
    pub node_cpus: u32,
    #[arg(long, default_value_t = 256)]
    pub node_memory_gib: u64,
    /// The hm-apiserver binary.
    #[arg(long, default_value = "target/release/hm-apiserver")]
    pub apiserver: PathBuf,
    /// The hm-scheduler binary.
    #[arg(long, default_value = "target/release/hm-scheduler")]
    pub scheduler: PathBuf,
    /// Extra hm-apiserver flags, space-separated (e.g. `--rate-limit-qps=0`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub apiserver_flags: String,
    /// Deadline in seconds for each phase.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Append this run's figures as a JSON line to this file (for the plot).
    #[arg(long)]
    pub record: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    hypermesh_agent::config::parse_duration(text).map_err(|e| e.to_string())
}

/// Runs the benchmark and prints its tables.
pub async fn run(args: HollowArgs) -> Result<()> {
    check_open_files(args.nodes)?;
    let result = measure_fleet(&args).await?;
    println!("{}", report::table(&args, &result));
    if let Some(path) = &args.record {
        report::append_record(path, &args, &result)?;
    }
    Ok(())
}

/// Fails at once, with what to do, when this process may not open what the fleet
/// needs — each hollow node's mTLS connection, its storage commitment file while it
/// registers, and a RuntimeReady probe now and then — rather than stalling on `EMFILE`.
fn check_open_files(nodes: usize) -> Result<()> {
    let needed = nodes as u64 + nodes as u64 / 4 + 1024;
    match crate::procfs::open_files_limit() {
        Some(soft) if soft < needed => bail!(
            "{nodes} hollow nodes need about {needed} open files and this process may open {soft}: \
             raise the limit first (`ulimit -n {needed}` as root, or `prlimit --nofile={needed} hm-bench hollow ...`)"
        ),
        _ => Ok(()),
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Default)]
pub struct HollowResult {
    /// Apiserver RSS once started, before any node joined, MiB.
    pub apiserver_rss_start_mib: f64,
    /// Join + registration of every node, and the rate.
    pub register_wall: Duration,
    /// Windows: idle, load, steady.
    pub windows: Vec<measure::Window>,
    /// The load phase.
    pub load: Option<load::LoadResult>,
    /// The detect phase.
    pub detect: Option<load::DetectResult>,
    /// Resident memory of this process (the hollow fleet) at the end, MiB.
    pub fleet_rss_mib: f64,
    /// Bind (the Scheduled condition's time) → the Instance's event at its hollow
    /// node's watch, one sample per Instance of the load phase, sorted.
    pub bind_delivery: Vec<Duration>,
}

async fn measure_fleet(args: &HollowArgs) -> Result<HollowResult> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let extra: Vec<&str> = args.apiserver_flags.split_whitespace().collect();
    let mut server = servers::start_apiserver_tls_args(
        &args.apiserver,
        servers::Controllers::All,
        &extra,
        timeout,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let apiserver_rss_start_mib = server
        .pid()
        .and_then(crate::procfs::memory)
        .map_or(0.0, |m| m.rss_kib as f64 / 1024.0);
    let admin_path = server.data_dir().join("admin.config");
    let admin_config = hypermesh_trust::client_config::ClientConfigFile::load(&admin_path)?;
    let admin_target = admin_config.target(&admin_path, Some(server.url()))?;
    let ca_pem = admin_config
        .ca_pem(&admin_path)?
        .context("admin.config has no certificateAuthority")?;
    let ca_pin =
        hypermesh_trust::pki::spki_pin(&hypermesh_trust::pki::first_certificate(&ca_pem)?)?;
    let admin = hypermesh_api::client::connect_to(&admin_target)
        .await
        .context("connecting as admin")?;
    let mut scheduler = servers::start_scheduler_with(
        &args.scheduler,
        server.url(),
        Some(&server.data_dir().join("scheduler.config")),
    )?;

    let secret = format!("{:016x}", rand::random::<u64>());
    Api::<JoinToken>::new(admin.clone())
        .create(&JoinToken {
            metadata: Some(ObjectMeta {
                name: "hollow".into(),
                ..Default::default()
            }),
            spec: Some(JoinTokenSpec {
                secret_hash: sha256_hex(secret.as_bytes()),
                expires: Some(hypermesh_api::time::from_system_time(
                    std::time::SystemTime::now() + Duration::from_secs(86_400),
                )),
                uses: u32::try_from(args.nodes).unwrap_or(u32::MAX),
                description: "hm-bench hollow".into(),
            }),
            status: None,
        })
        .await
        .context("creating the join token")?;

    let root = tempfile::Builder::new()
        .prefix("hm-bench-hollow-")
        .tempdir()
        .context("creating the fleet's state dir")?;
    let socket = root.path().join("containerd.sock");
    let _containerd = node::fake_containerd(&socket)?;
    let fleet = Arc::new(Fleet {
        server: server.url().to_string(),
        join_token: format!("hollow.{secret}"),
        ca_pin,
        root: root.path().join("nodes"),
        containerd_socket: socket,
        inventory: node::inventory(args.node_cpus, args.node_memory_gib, 110)?,
        heartbeat_interval: args.heartbeat_interval,
        lease_duration: args.lease_duration,
        ready_delay: args.ready_delay,
        storage_commit_bytes: 64 * 1024,
        registering: tokio::sync::Semaphore::new(args.register_concurrency.max(1)),
        stats: Default::default(),
    });

    // 1. register
    let fleet_stop = CancellationToken::new();
    let _stop_on_drop = fleet_stop.clone().drop_guard();
    let stops: Vec<CancellationToken> = (0..args.nodes).map(|_| fleet_stop.child_token()).collect();
    let began = Instant::now();
    for (i, stop) in stops.iter().enumerate() {
        tokio::spawn(node::run(fleet.clone(), i, stop.clone()));
    }
    let deadline = began + timeout;
    let mut last_report = Instant::now();
    while fleet.stats.registered.load(Ordering::Relaxed) < args.nodes as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} hollow nodes registered within {timeout:?}; first error: {}",
                fleet.stats.registered.load(Ordering::Relaxed),
                args.nodes,
                first_error(&fleet)
            );
        }
        server.check_alive()?;
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "hm-bench: {} of {} hollow nodes registered ({} heartbeats, {} failed; first registration error: {})",
                fleet.stats.registered.load(Ordering::Relaxed),
                args.nodes,
                fleet.stats.heartbeats.load(Ordering::Relaxed),
                fleet.stats.heartbeat_failures.load(Ordering::Relaxed),
                first_error(&fleet)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let register_wall = began.elapsed();
    eprintln!(
        "hm-bench: {} hollow nodes registered in {:.1} s",
        args.nodes,
        register_wall.as_secs_f64()
    );
    load::wait_nodes_ready(&admin, args.nodes, timeout).await?;

    let probe_stop = fleet_stop.child_token();
    let prober_channel = hypermesh_api::client::connect_to(&admin_target)
        .await
        .context("connecting the prober")?;
    let probe = start_prober(
        prober_channel.clone(),
        args.nodes,
        Duration::from_millis(100),
        probe_stop.clone(),
    );
    watch_probe::start(
        prober_channel,
        args.probe_watchers,
        Duration::from_millis(200),
        probe.clone(),
        probe_stop,
    );
    let mut result = HollowResult {
        apiserver_rss_start_mib,
        register_wall,
        ..Default::default()
    };
    fleet.stats.take_bind_delivery();

    // 2. idle
    let meter = WindowMeter::start(
        format!("idle, {} nodes", args.nodes),
        server.pid(),
        scheduler.pid(),
        &fleet.stats,
        &probe,
    );
    tokio::time::sleep(args.window).await;
    result.windows.push(meter.finish(&fleet.stats, &probe));
    eprintln!("hm-bench: idle window done");

    // 3. load
    if args.instances > 0 {
        let meter = WindowMeter::start(
            format!("creating {} Instances", args.instances),
            server.pid(),
            scheduler.pid(),
            &fleet.stats,
            &probe,
        );
        let loaded = load::run(&admin, &fleet, args.instances, timeout, &mut scheduler).await?;
        result.windows.push(meter.finish(&fleet.stats, &probe));
        result.load = Some(loaded);
        result.bind_delivery = fleet.stats.take_bind_delivery();
        result.bind_delivery.sort();
        eprintln!("hm-bench: load phase done");

        // 4. steady
        let meter = WindowMeter::start(
            format!("steady, {} nodes, {} Instances", args.nodes, args.instances),
            server.pid(),
            scheduler.pid(),
            &fleet.stats,
            &probe,
        );
        tokio::time::sleep(args.window).await;
        result.windows.push(meter.finish(&fleet.stats, &probe));
    }

    // 5. detect
    if args.kill > 0 {
        let kill = args.kill.min(args.nodes);
        let victims: Vec<usize> = (args.nodes - kill..args.nodes).collect();
        match load::detect(&admin, &stops, &victims, timeout).await {
            Ok(d) => result.detect = Some(d),
            // The figures so far are still worth printing.
            Err(e) => eprintln!("hm-bench: detect phase failed: {e:#}"),
        }
    }
    result.fleet_rss_mib =
        crate::procfs::memory(std::process::id()).map_or(0.0, |m| m.rss_kib as f64 / 1024.0);
    server.check_alive()?;
    scheduler.check_alive()?;
    fleet_stop.cancel();
    let _ = scheduler.stop().await;
    server.stop().await?;
    Ok(result)
}

fn first_error(fleet: &Fleet) -> String {
    fleet
        .stats
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| "none".into())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
