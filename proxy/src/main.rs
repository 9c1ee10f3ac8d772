//! `hm-proxy`: the command line over [`hypermesh_proxy::run`].

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hypermesh_proxy::{Config, Proxy, RelayChoice};

/// `hm-proxy` flags.
#[derive(Debug, Parser)]
#[command(
    name = "hm-proxy",
    version,
    about = "HyperMesh proxy: reach Instances and Routes by global address over QUIC, via SOCKS5."
)]
struct Args {
    /// Apiserver URL; repeat it (or separate with commas) for several apiservers.
    #[arg(
        long,
        env = "HM_SERVER",
        default_value = "http://127.0.0.1:7443",
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// The agent's state dir (reads pki/ca.crt, pki/node.crt, pki/node.key).
    #[arg(long, env = "HM_STATE_DIR", default_value = "/var/lib/hypermesh/agent")]
    state_dir: PathBuf,
    /// UDP address QUIC is accepted on.
    #[arg(long, env = "HM_LISTEN_QUIC", default_value = "0.0.0.0:7446")]
    listen_quic: SocketAddr,
    /// Endpoint other proxies dial (default: --listen-quic when it names an address).
    #[arg(long, env = "HM_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// Relay for a host that accepts no inbound connections: HOST:PORT of a reachable
    /// proxy, or `auto` to pick one of the cluster's reachable nodes.
    #[arg(long, env = "HM_RELAY")]
    relay: Option<String>,
    /// SOCKS5 listener (e.g. 127.0.0.1:1080).
    #[arg(long, env = "HM_SOCKS")]
    socks: Option<SocketAddr>,
    /// Metrics listener (/metrics, /healthz, /paths).
    #[arg(long, env = "HM_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Transparent listener (e.g. [::1]:15001): also creates the `hm0` TUN device with
    /// the route for fd48:4d00::/32 and an nftables redirect of TCP to it, so unmodified
    /// clients reach global addresses.
    #[arg(long, env = "HM_TRANSPARENT")]
    transparent: Option<SocketAddr>,
    /// containerd socket.
    #[arg(
        long,
        env = "CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd_socket: PathBuf,
}

/// A proxy holds two sockets per flow: lift the soft open-files limit to the hard one.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.maximum != limit.current {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hypermesh_runtime::process::init_logging();
    raise_open_files_limit();
    let args = Args::parse();
    let relay = match args.relay.as_deref() {
        None | Some("") => RelayChoice::None,
        Some("auto") => RelayChoice::Auto,
        Some(addr) => RelayChoice::Addr(
            addr.parse()
                .with_context(|| format!("--relay {addr:?}: expected HOST:PORT or auto"))?,
        ),
    };
    let mut config = Config::new(
        hypermesh_api::client::join_urls(&args.server),
        args.state_dir,
    );
    config.listen_quic = args.listen_quic;
    config.advertise = args.advertise;
    config.relay = relay;
    config.socks = args.socks;
    config.metrics_addr = args.metrics_addr;
    config.transparent = args.transparent;
    config.containerd_socket = args.containerd_socket;
    let shutdown = hypermesh_runtime::process::shutdown_on_signals();
    let proxy = Proxy::bind(config).await.context("starting hm-proxy")?;
    println!(
        "hm-proxy node {} quic {} socks {} metrics {}",
        proxy.node_name(),
        proxy.quic_addr().map(|a| a.to_string()).unwrap_or_default(),
        proxy
            .socks_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into()),
        proxy
            .metrics_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    proxy.serve(shutdown).await.context("hm-proxy")?;
    Ok(())
}
