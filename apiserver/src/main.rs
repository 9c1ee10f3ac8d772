//! `hm-apiserver` command line: parses flags, installs signal handling and runs
//! [`hypermesh_apiserver::serve`], plus the in-process controllers
//! ([`hypermesh_apiserver::in_process`]): the garbage collector always, the
//! leader-elected controllers unless `--controllers none`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use hypermesh_apiserver::in_process;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How long the in-process controllers get to stop (and release their Lease) before
/// the server itself starts draining.
const CONTROLLERS_GRACE: Duration = Duration::from_secs(5);

/// Which controllers run inside the apiserver process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Controllers {
    /// Every controller (workloads, node lifecycle), leader-elected among apiservers.
    All,
    /// None (the garbage collector still runs): run them elsewhere, or not at all.
    None,
}

/// The HyperMesh API server: stores assets, workloads and every other object, and
/// serves them over gRPC (with health and reflection, so grpcurl works).
#[derive(Debug, Parser)]
#[command(name = "hm-apiserver", version)]
struct Args {
    /// Address for gRPC; port 0 picks a free one (the chosen address is printed).
    #[arg(long, env = "HM_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,

    /// Address for Prometheus `/metrics` and `/healthz` over HTTP (off when unset).
    #[arg(long, env = "HM_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Directory of the embedded store (created if missing).
    #[arg(
        long,
        env = "HM_DATA_DIR",
        default_value = "/var/lib/hypermesh/apiserver"
    )]
    data_dir: PathBuf,

    /// Revisions of history kept for watches and paginated lists before compaction.
    #[arg(long, env = "HM_HISTORY_REVISIONS", default_value_t = 100_000)]
    history_revisions: u64,

    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, env = "HM_BOOKMARK_INTERVAL", default_value_t = 10)]
    bookmark_interval: u64,

    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "HM_SHUTDOWN_GRACE", default_value_t = 5)]
    shutdown_grace: u64,

    /// Acknowledge plaintext gRPC for local development (TLS is not implemented yet;
    /// without this flag the server warns that traffic is unencrypted).
    #[arg(long, env = "HM_INSECURE_DEV")]
    insecure_dev: bool,

    /// Controllers to run in this process, talking to this server over gRPC; with
    /// several apiservers a Lease elects the one whose controllers act. Garbage
    /// collection and namespace deletion run in every apiserver either way.
    #[arg(long, env = "HM_CONTROLLERS", value_enum, default_value_t = Controllers::All)]
    controllers: Controllers,
}

// mimalloc: the servers allocate many small short-lived buffers (protobuf messages,
// HTTP/2 frames) across threads, where it is markedly faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hypermesh_runtime::process::init_logging();
    let args = Args::parse();
    if !args.insecure_dev {
        warn!(
            "serving plaintext gRPC: TLS is not implemented yet; pass --insecure-dev to acknowledge"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;

    // A signal stops the controllers first (so they release their Lease while the
    // server still answers), then the server.
    let stop = hypermesh_runtime::process::shutdown_on_signals();
    let shutdown = CancellationToken::new();

    let mut config = hypermesh_apiserver::Config::new(&args.data_dir);
    config.store.retain_revisions = args.history_revisions;
    config.bookmark_interval = Duration::from_secs(args.bookmark_interval.max(1));
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    config.metrics_addr = args.metrics_addr;

    let server = hypermesh_apiserver::ApiServer::open(config, shutdown.clone())
        .await
        .context("hm-apiserver cannot start")?;
    // Scripts and tests wait for this line.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "hm-apiserver listening on {address}")
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;

    let which = match args.controllers {
        Controllers::All => in_process::Controllers::All,
        Controllers::None => in_process::Controllers::None,
    };
    let channel = in_process::self_channel(address)?;
    let token = CancellationToken::new();
    let controllers = tokio::spawn(in_process::run(channel, which, token.clone()));
    tokio::spawn(async move {
        stop.cancelled().await;
        token.cancel();
        if tokio::time::timeout(CONTROLLERS_GRACE, controllers)
            .await
            .is_err()
        {
            warn!("controllers did not stop in time");
        }
        shutdown.cancel();
    });
    server.serve(listener).await.context("hm-apiserver failed")
}
