//! Pulls one image into containerd with the agent's image pull client (what the Instance
//! reconciler does for a missing image), then prints the seconds the pull and unpack
//! took. Used by scripts/bench-registry-pull.sh to compare with `ctr images pull`.
//!
//!     pull-image --containerd-socket SOCK [--insecure-registry HOST:PORT]
//!                [--registry-auth config.json] REFERENCE

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use hypermesh_containers::pull::{self, PullConfig};
use hypermesh_containers::{ContainerdClient, NAMESPACE};

#[derive(Parser)]
struct Args {
    /// containerd socket.
    #[arg(long)]
    containerd_socket: PathBuf,
    /// containerd namespace.
    #[arg(long, default_value = NAMESPACE)]
    namespace: String,
    /// Registry credentials (docker config.json).
    #[arg(long)]
    registry_auth: Option<PathBuf>,
    /// Registry reached over plain http (repeatable).
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// Extra PEM roots for https registries.
    #[arg(long)]
    registry_ca: Option<PathBuf>,
    /// The image to pull, e.g. 127.0.0.1:5000/hypermesh/busybox:v1.
    reference: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = ContainerdClient::connect_namespace(&args.containerd_socket, &args.namespace)
        .await
        .context("connecting to containerd")?;
    let config = PullConfig {
        auth_file: args.registry_auth,
        insecure: args.insecure_registry,
        ca_file: args.registry_ca,
    };
    let started = Instant::now();
    let image = pull::pull(&client, &config, &args.reference)
        .await
        .with_context(|| format!("pulling {}", args.reference))?;
    println!(
        "{} {} {:.3}s",
        image.name,
        image.manifest,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
