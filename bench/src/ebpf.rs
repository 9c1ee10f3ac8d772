//! The `ebpf` benchmark: what the agent's eBPF accounting costs per 1 Gbit/s. iperf3
//! runs over loopback with its client in a cgroup of its own, alternately with the
//! agent's cgroup_skb programs attached to that cgroup and detached (the agent's own
//! loader, `hypermesh_agent::accounting::bpf`): TCP paced at 1 Gbit/s and unpaced
//! (large GSO segments), and UDP in 1400-byte datagrams at 1 Gbit/s (one packet per
//! datagram, as on a 1500-byte-MTU wire). The CPU is iperf3's own report (client and server, user + system, which
//! on loopback includes the softirq work the programs run in), so other load on the
//! machine does not count; per run the CPU cores used per Gbit/s is compared. When
//! attached, the bytes the programs counted are printed beside iperf3's. Needs root.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use hypermesh_agent::accounting::bpf::BpfAccounting;
use hypermesh_agent::accounting::cgroup;
use tokio::process::Command;

/// `hm-bench ebpf` options.
#[derive(Debug, Args)]
pub struct EbpfArgs {
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Runs of each mode (attached and detached alternate).
    #[arg(long, default_value_t = 3)]
    pub repeats: u32,
    /// iperf3's port on 127.0.0.1.
    #[arg(long, default_value_t = 5299)]
    pub port: u16,
}

/// One iperf3 run.
#[derive(Debug, Clone, Copy)]
struct Run {
    gbits_per_second: f64,
    /// Client + server CPU, in cores (100% of one core = 1.0).
    cores: f64,
    /// Sent according to iperf3; once attached, what the egress program counted.
    bytes: u64,
    /// Packets the egress program counted (0 when detached).
    packets: u64,
}

impl Run {
    fn cores_per_gbit(&self) -> f64 {
        self.cores / self.gbits_per_second.max(1e-9)
    }
}

/// A cgroup v2 directory removed on drop (after its processes exited).
struct BenchCgroup(PathBuf);

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// What each pair of runs sends: a label and iperf3's extra flags.
const MODES: &[(&str, &str)] = &[
    ("TCP, 1 Gbit/s paced", "-b 1G"),
    ("TCP, unpaced", ""),
    // One skb per datagram (no GSO for UDP): the programs run once per wire-sized packet.
    ("UDP 1400 B datagrams, 1 Gbit/s", "-u -l 1400 -b 1G"),
];

async fn iperf(args: &EbpfArgs, cgroup: &std::path::Path, flags: &str) -> Result<Run> {
    let procs = cgroup.join("cgroup.procs");
    let mut command = format!(
        "echo $$ > {} && exec iperf3 -c 127.0.0.1 -p {} -t {} -J",
        procs.display(),
        args.port,
        args.seconds
    );
    if !flags.is_empty() {
        command.push(' ');
        command.push_str(flags);
    }
    let out = Command::new("sh")
        .args(["-c", &command])
        .output()
        .await
        .context("running iperf3 (Debian package iperf3)")?;
    if !out.status.success() {
        bail!(
            "iperf3 failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J")?;
    let end = &json["end"];
    // TCP reports sum_received; UDP what the receiver got in sum_received or sum.
    let received = if end["sum_received"].is_object() {
        &end["sum_received"]
    } else {
        &end["sum"]
    };
    let bits = received["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second")?;
    let bytes = end["sum_sent"]["bytes"]
        .as_u64()
        .or_else(|| end["sum"]["bytes"].as_u64())
        .unwrap_or(0);
    let cpu = &end["cpu_utilization_percent"];
    let host = cpu["host_total"].as_f64().context("no host_total")?;
    let remote = cpu["remote_total"].as_f64().context("no remote_total")?;
    Ok(Run {
        gbits_per_second: bits / 1e9,
        cores: (host + remote) / 100.0,
        bytes,
        packets: 0,
    })
}

fn mean(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
}

/// Runs the benchmark and prints its table.
pub async fn run(args: EbpfArgs) -> Result<()> {
    let root = cgroup::cgroup2_root().context("no cgroup v2 hierarchy mounted")?;
    let dir = root.join(format!("hm-bench-ebpf-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
    let cgroup = BenchCgroup(dir);
    let mut bpf = BpfAccounting::load().context("loading the agent's eBPF programs")?;
    let mut server = Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &args.port.to_string()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting iperf3 -s")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(status) = server.try_wait()? {
        bail!("iperf3 -s exited: {status}");
    }

    println!(
        "| traffic | programs | Gbit/s | iperf3 CPU (cores) | cores per Gbit/s | counted out by eBPF (mean) |"
    );
    println!("|---|---|---:|---:|---:|---|");
    for (label, flags) in MODES {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for _ in 0..args.repeats {
            off.push(iperf(&args, &cgroup.0, flags).await?);
            let id = bpf.attach("bench", &cgroup.0).context("attaching")?;
            let run = iperf(&args, &cgroup.0, flags).await?;
            let counted = bpf.network(id).context("reading the counters")?;
            bpf.forget("bench");
            on.push(run);
            eprintln!(
                "attached run: iperf3 sent {} bytes; eBPF counted {} bytes in {} packets out, {} bytes in {} packets in",
                run.bytes,
                counted.tx_bytes,
                counted.tx_packets,
                counted.rx_bytes,
                counted.rx_packets
            );
            if let Some(last) = on.last_mut() {
                last.bytes = counted.tx_bytes;
                last.packets = counted.tx_packets;
            }
        }
        for (name, runs) in [("detached", &off), ("attached", &on)] {
            let counted = if name == "attached" {
                let n = runs.len().max(1) as u64;
                format!(
                    "{} B in {} packets",
                    runs.iter().map(|r| r.bytes).sum::<u64>() / n,
                    runs.iter().map(|r| r.packets).sum::<u64>() / n
                )
            } else {
                "-".into()
            };
            println!(
                "| {label} | {name} | {:.2} | {:.3} | {:.4} | {counted} |",
                mean(runs, |r| r.gbits_per_second),
                mean(runs, |r| r.cores),
                mean(runs, Run::cores_per_gbit),
            );
        }
        let overhead = mean(&on, Run::cores_per_gbit) - mean(&off, Run::cores_per_gbit);
        println!(
            "| {label} | overhead | | | {overhead:+.4} ({:+.1}%) | |",
            overhead / mean(&off, Run::cores_per_gbit).max(1e-9) * 100.0
        );
    }
    drop(server);
    Ok(())
}
