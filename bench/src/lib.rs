//! `hm-bench`: benchmarks that start real HyperMesh processes side by side with a peer
//! (etcd) and print `BENCHMARKS.md`-ready tables.
//!
//! The crate is an application, like `hmctl`, so it reports errors with `anyhow` and
//! context instead of typed enums: nothing calls it as a library except its own `main`
//! and its tests.
//!
//! # Layout
//! - [`cli`]: command-line arguments.
//! - [`servers`]: real `hm-apiserver`, `etcd`, `hm-scheduler` and `hm-agent` processes,
//!   killed when dropped (also on error and on Ctrl-C).
//! - [`containerd`]: a private containerd (scripts/containerd.sh) and `ctr` against it.
//! - [`procfs`]: CPU time, RSS/PSS and the process table from `/proc`.
//! - [`workload`]: the ~1 KB Workload every phase writes.
//! - [`stats`]: latency samples → throughput, p50, p99.
//! - [`api`]: the `api` benchmark: create, get, list and watch against HyperMesh and etcd.
//! - [`scheduler`]: the `scheduler` benchmark: bindings/s on simulated nodes.
//! - [`trust`]: the `trust` benchmark: FALCON-1024, proofs, and registrations with proofs.
//! - [`sealing`]: the `sealing` benchmark: Secrets sealed to a node (ML-KEM-1024 +
//!   AES-256-GCM) and opened, beside AES-256-GCM at rest.
//! - [`containers`]: the `runtime` benchmark: apply → RUNNING on a real agent and
//!   containerd next to `ctr run -d`, and the agent's and each container's memory.
//! - [`tls`]: the `tls` benchmark: mTLS and authorization cost, handshakes, issuance.
//! - [`proxy`]: the `proxy` benchmark: TCP through two hm-proxies beside direct TCP,
//!   socat and haproxy on the same path, and the proxies' memory.
//! - [`fanout`]: the `watch-fanout` benchmark: 1,000 and 10,000 watchers on one
//!   apiserver, write→delivery latency, CPU and RSS, watch cache on and off.
//! - [`hollow`]: the `hollow` benchmark: N hollow agents (real join, registration
//!   with proofs, heartbeats; fake containers) on one apiserver, under load and failure.
//! - [`ebpf`]: the `ebpf` benchmark: CPU per Gbit/s of iperf3 traffic with the agent's
//!   cgroup_skb accounting programs attached and detached.
//! - [`report`]: the markdown table and the `BENCHMARKS.md` section.

pub mod api;
pub mod cli;
pub mod containerd;
pub mod containers;
pub mod ebpf;
pub mod fanout;
pub mod hollow;
pub mod procfs;
pub mod proven;
pub mod proxy;
pub mod report;
pub mod scheduler;
pub mod sealing;
pub mod servers;
pub mod stats;
pub mod tls;
pub mod trust;
pub mod workload;

use anyhow::Result;

/// Runs the benchmark `cli` selects.
pub async fn run(cli: cli::Cli) -> Result<()> {
    match cli.command {
        cli::Command::Api(args) => api::run(args).await,
        cli::Command::Scheduler(args) => scheduler::run(args).await,
        cli::Command::Trust(args) => trust::run(args).await,
        cli::Command::Sealing(args) => sealing::run(args).await,
        cli::Command::Containers(args) => containers::run(args).await,
        cli::Command::Proxy(args) => proxy::run(args).await,
        cli::Command::Tls(args) => tls::run(args).await,
        cli::Command::WatchFanout(args) => fanout::run(args).await,
        cli::Command::Hollow(args) => hollow::run(args).await,
        cli::Command::HollowPlot(args) => hollow::plot::run(args),
        cli::Command::Ebpf(args) => ebpf::run(args).await,
    }
}
