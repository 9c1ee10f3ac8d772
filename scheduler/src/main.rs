//! `hm-scheduler` command line.

use anyhow::Context;
use clap::{Parser, ValueEnum};

/// The HyperMesh scheduler: binds every pending Instance to the best node that fits
/// (resources, GPUs, selectors, affinity, taints, privacy), with priority preemption
/// and all-or-nothing gangs.
#[derive(Debug, Parser)]
#[command(name = "hm-scheduler", version)]
struct Args {
    /// The apiserver.
    #[arg(long, env = "HM_SERVER", default_value = "http://127.0.0.1:7443")]
    server: String,

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
    // Every part of the scheduler is essential: any panic ends it with a failure, so
    // its service manager restarts it.
    hypermesh_runtime::process::exit_on_panic();
    let args = Args::parse();
    let channel = hypermesh_api::client::connect(&args.server)
        .await
        .context("connecting to the apiserver")?;
    let config = hypermesh_scheduler::Config {
        profile: match args.profile {
            ProfileArg::Spread => hypermesh_scheduler::Profile::Spread,
            ProfileArg::Binpack => hypermesh_scheduler::Profile::Binpack,
        },
        bind_concurrency: args.bind_concurrency,
        ..Default::default()
    };
    let shutdown = hypermesh_runtime::process::shutdown_on_signals();
    if args.no_leader_elect {
        hypermesh_scheduler::run(channel, config, shutdown).await;
    } else {
        let identity = args
            .identity
            .unwrap_or_else(hypermesh_runtime::leader::default_identity);
        hypermesh_scheduler::run_elected(channel, config, identity, shutdown).await;
    }
    Ok(())
}
