//! Command-line arguments of `hm-bench`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// HyperMesh benchmarks, side by side with peers.
#[derive(Debug, Parser)]
#[command(name = "hm-bench", version, about)]
pub struct Cli {
    /// Which benchmark to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, get, list (paged) and watch Workloads on a real hm-apiserver, and the
    /// same on a real etcd through etcd-client.
    Api(ApiArgs),
    /// Bind Instances to simulated nodes through a real hm-apiserver and hm-scheduler:
    /// bindings/s and create→bound latency, plain and GPU-requesting.
    Scheduler(crate::scheduler::SchedulerArgs),
    /// FALCON-1024 keygen/sign/verify and Asset proof build/verify per second, and
    /// Asset registrations/s with proofs through a real hm-apiserver.
    Trust(crate::trust::TrustArgs),
    /// Secrets sealed to a node (ML-KEM-1024 + HKDF + AES-256-GCM) and opened, per
    /// second, 1 KiB and 64 KiB, beside the AES-256-GCM at-rest baseline.
    Sealing(crate::sealing::SealingArgs),
    /// Apply → RUNNING latency of Instances on a real hm-agent and containerd (1 and a
    /// batch at once), side by side with `ctr run -d`; agent, shim and logger memory.
    #[command(name = "runtime")]
    Containers(crate::containers::ContainersArgs),
    /// TCP through two hm-proxies (transparent → QUIC → Instance netns) beside direct
    /// TCP, socat and haproxy on the same path: throughput, p50/p99 latency,
    /// connections/s, proxy RSS idle and with many open connections. Needs root.
    Proxy(crate::proxy::ProxyArgs),
    /// What the trust layer costs: the same creates and gets on a plaintext and a TLS
    /// apiserver (as admin and as an RBAC-checked editor), TLS handshakes/s with
    /// X25519MLKEM768 and X25519, certificate issuance latency.
    Tls(crate::tls::TlsArgs),
    /// Watch fan-out: 1,000 and 10,000 concurrent watchers on one hm-apiserver,
    /// write→delivery p50/p99, creates under that load, CPU per delivery and RSS, with
    /// the watch cache on and off.
    WatchFanout(crate::fanout::FanoutArgs),
    /// N hollow agents in this process (each joins with a token and its own
    /// certificate, registers a Node and proved Assets, heartbeats, and reports bound
    /// Instances Running after --ready-delay) on a real TLS hm-apiserver and
    /// hm-scheduler: registration, heartbeats/s, apiserver CPU and RSS, API latency
    /// idle and under load, bindings/s, and time to detect dead nodes.
    Hollow(crate::hollow::HollowArgs),
    /// Draws the runs `hm-bench hollow --record FILE` appended as a PNG (apiserver
    /// RSS and CPU, API p99 under load, bindings/s, against the number of nodes).
    HollowPlot(crate::hollow::plot::PlotArgs),
    /// CPU per Gbit/s of iperf3 TCP over loopback from a cgroup with the agent's eBPF
    /// accounting programs attached, beside detached (paced at 1 Gbit/s and unpaced).
    /// Needs root.
    Ebpf(crate::ebpf::EbpfArgs),
}

/// A system the `api` benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// `hm-apiserver` with its embedded store, through `hypermesh_api::Api`.
    Hypermesh,
    /// `etcd`, through `etcd-client`, with the same encoded objects.
    Etcd,
    /// `hm-apiserver --store etcd://…` on a fresh single-member etcd (the
    /// high-availability setup), through `hypermesh_api::Api`.
    HypermeshEtcd,
}

/// Arguments of `hm-bench api`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Workloads to create (then get, list and watch).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub objects: u32,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// The etcd binary (Debian package `etcd-server`).
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub etcd: PathBuf,
    /// The hm-apiserver binary (`cargo build --release -p hypermesh-apiserver`).
    #[arg(long, default_value = "target/release/hm-apiserver")]
    pub apiserver: PathBuf,
    /// Which systems to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Hypermesh, Target::Etcd])]
    pub targets: Vec<Target>,
    /// Page size of the list phase.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_size: u32,
    /// An extra flag for hm-apiserver (both HyperMesh targets), repeatable (e.g. `--apiserver-arg=--metrics-addr=127.0.0.1:0`
    /// to measure with request metrics recorded).
    #[arg(
        long = "apiserver-arg",
        value_name = "FLAG",
        allow_hyphen_values = true
    )]
    pub apiserver_args: Vec<String>,
    /// Namespace the Workloads are created in (must exist; `default` always does).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Deadline in seconds for a server to start and for each phase to finish.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Record the result in the benchmarks file (replacing this benchmark's section).
    #[arg(long)]
    pub write: bool,
    /// The file `--write` updates.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks_file: PathBuf,
}
