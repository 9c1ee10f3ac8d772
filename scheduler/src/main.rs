//! `hm-scheduler` command line.

use anyhow::Context;
use clap::{Parser, ValueEnum};

/// The HyperMesh scheduler: binds every pending Instance to the best node that fits
/// (resources, GPUs, selectors, affinity, taints, privacy), with priority preemption
/// and all-or-nothing gangs.
#[derive(Debug, Parser)]
#[command(name = "hm-scheduler", version)]
struct Args {
    /// Client config with the server and the scheduler's identity (the apiserver
    /// writes scheduler.config into its --data-dir on first start).
    #[arg(long, env = "HM_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// The apiserver (overrides the config's `server:`; without --config, a plaintext
    /// --insecure-dev server); repeat it (or separate with commas) for several.
    #[arg(long, env = "HM_SERVER", value_delimiter = ',')]
    server: Vec<String>,

    /// Scoring: spread load (least allocated) or pack nodes full (most allocated).
    #[arg(long, env = "HM_PROFILE", value_enum, default_value_t = ProfileArg::Spread)]
    profile: ProfileArg,

    /// Identity in leader election (default: hostname, process id and a random suffix).
    #[arg(long, env = "HM_IDENTITY")]
    identity: Option<String>,

    /// Schedule without leader election (only safe with a single scheduler).
    #[arg(long, env = "HM_NO_LEADER_ELECT")]
    no_leader_elect: bool,

    /// Bind requests in flight at once.
    #[arg(long, env = "HM_BIND_CONCURRENCY", default_value_t = 128)]
    bind_concurrency: usize,

    /// Serve Prometheus metrics on HOST:PORT (`/metrics`, `/healthz`).
    #[arg(long, env = "HM_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProfileArg {
    Spread,
    Binpack,
}

// mimalloc: the servers allocate many small short-lived buffers (protobuf messages,
// HTTP/2 frames) across threads, where it is markedly faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hypermesh_runtime::process::init_logging();
    hypermesh_trust::tls::install_default_provider();
    // Every part of the scheduler is essential: any panic ends it with a failure, so
    // its service manager restarts it.
    hypermesh_runtime::process::exit_on_panic();
    let args = Args::parse();
    let server = (!args.server.is_empty()).then(|| hypermesh_api::client::join_urls(&args.server));
    let target = match &args.config {
        Some(path) => hypermesh_trust::client_config::ClientConfigFile::load(path)
            .and_then(|c| c.target(path, server.as_deref()))
            .with_context(|| format!("reading {}", path.display()))?,
        None => hypermesh_api::client::Target::insecure(
            server
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:7443".to_string()),
        ),
    };
    let channel = hypermesh_api::client::connect_to(&target)
        .await
        .context("connecting to the apiserver")?;
    let config = hypermesh_scheduler::Config {
        profile: match args.profile {
            ProfileArg::Spread => hypermesh_scheduler::Profile::Spread,
            ProfileArg::Binpack => hypermesh_scheduler::Profile::Binpack,
        },
        bind_concurrency: args.bind_concurrency,
        identity: args
            .identity
            .unwrap_or_else(hypermesh_runtime::leader::default_identity),
        ..Default::default()
    };
    let shutdown = hypermesh_runtime::process::shutdown_on_signals();
    if let Some(addr) = args.metrics_addr {
        let bound = hypermesh_scheduler::metrics::serve(
            addr,
            &config.metrics,
            hypermesh_runtime::health::Health::process(),
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("binding metrics address {addr}"))?;
        tracing::info!(addr = %bound, "serving metrics");
    }
    if args.no_leader_elect {
        hypermesh_scheduler::run(channel, config, shutdown).await;
    } else {
        let identity = config.identity.clone();
        hypermesh_scheduler::run_elected(channel, config, identity, shutdown).await;
    }
    Ok(())
}
