//! `hm-bench proxy`: TCP through two hm-proxies (an unmodified client → the transparent
//! listener of proxy A → QUIC → proxy B → into the Instance's network namespace) beside
//! the same path without HyperMesh: direct TCP inside the Instance's namespace, and two
//! `socat` and two `haproxy` relays chained over a unix socket (one of each pair inside
//! the Instance's namespace, as proxy B is). Throughput with iperf3, request/response
//! latency (p50/p99 of 64-byte round trips on one connection), new connections/s, and
//! the proxies' RSS idle and with N open connections.
//!
//! Everything runs in a private network namespace (the command re-executes itself
//! under `unshare --net`), so `hm0` and the nftables redirect never touch the host.
//! The Instance is a busybox container whose `/usr`, `/lib` and `/lib64` are the host's
//! (hostPath, read-only) so it can run the host's iperf3 server next to an echo server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::containerd::PrivateContainerd;
use crate::servers::{self, AgentTarget, Controllers};
use crate::stats::format_duration;

mod measure;
mod setup;

use measure::{connection_rate, iperf, latency, mib, rss_kib, wait_echo};
use setup::{Ca, run_cmd, spawn_in, start_proxy, start_target, task_pid, wait_node, which};

const NETNS_ENV: &str = "HM_BENCH_PROXY_NETNS";
const IPERF_PORT: u16 = 5201;
const ECHO_PORT: u16 = 7000;
const NODE: &str = "bench-node";

/// `hm-bench proxy` arguments.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Directory holding hm-apiserver, hm-agent, hm-logger and hm-proxy (default: beside
    /// hm-bench).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The repository's scripts/ directory.
    #[arg(long, default_value = "scripts")]
    pub scripts: PathBuf,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Round trips per latency series.
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
    /// New connections per connections/s series.
    #[arg(long, default_value_t = 300)]
    pub connections: usize,
    /// Connections held open for the RSS figure.
    #[arg(long, default_value_t = 1000)]
    pub open: usize,
}

/// One way from the client to the Instance.
#[derive(Debug, Clone)]
struct Variant {
    name: &'static str,
    /// iperf3 target.
    iperf: SocketAddr,
    /// Echo target.
    echo: SocketAddr,
    /// Connect from inside the Instance's namespace (direct baseline).
    inside: bool,
}

#[derive(Debug, Default)]
struct Figures {
    gbps: f64,
    p50: Duration,
    p99: Duration,
    conns_per_sec: f64,
}

/// Runs the benchmark (re-executing itself in a private network namespace first).
pub async fn run(args: ProxyArgs) -> Result<()> {
    if std::env::var(NETNS_ENV).as_deref() != Ok("1") {
        let exe = std::env::current_exe().context("own path")?;
        let status = Command::new("unshare")
            .args(["--net", "--fork", "--"])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(NETNS_ENV, "1")
            .status()
            .await
            .context("running unshare --net (util-linux; needs root)")?;
        if !status.success() {
            bail!("the benchmark in its network namespace failed ({status})");
        }
        return Ok(());
    }
    for tool in ["iperf3", "socat", "haproxy", "ip", "nft", "nsenter"] {
        if which(tool).is_none() {
            bail!(
                "{tool} not found: install it (scripts/packages.txt lists iperf3, socat, haproxy)"
            );
        }
    }
    run_cmd("ip", &["link", "set", "lo", "up"]).await?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("hm-bench has no directory")?
            .to_path_buf(),
    };
    let work = tempfile::Builder::new()
        .prefix("hm-bench-proxy-")
        .tempdir()?;

    let apiserver = servers::start_apiserver(
        &bin_dir.join("hm-apiserver"),
        Controllers::None,
        Duration::from_secs(30),
    )
    .await?;
    let channel = hypermesh_api::client::connect(apiserver.url()).await?;
    let containerd = PrivateContainerd::start(
        &args.scripts.join("containerd.sh"),
        &work.path().join("containerd"),
        Path::new("/usr/bin/ctr"),
    )
    .await?;
    let images = work.path().join("images");
    std::fs::create_dir_all(&images)?;
    run_cmd(
        "bash",
        &[
            args.scripts
                .join("build-test-image.sh")
                .to_str()
                .context("utf-8 path")?,
            images
                .join("busybox.oci.tar")
                .to_str()
                .context("utf-8 path")?,
        ],
    )
    .await?;
    let _agent = servers::start_agent(
        &bin_dir.join("hm-agent"),
        AgentTarget {
            server: apiserver.url(),
            node_name: NODE,
            containerd_socket: containerd.socket(),
            image_dir: &images,
        },
    )?;
    wait_node(&channel).await?;

    // Node credentials for the two proxies.
    let ca = Ca::new()?;
    let (state_b, state_a) = (work.path().join("b"), work.path().join("a"));
    ca.write(&state_b, NODE)?;
    ca.write(&state_a, "edge")?;
    let proxy_bin = bin_dir.join("hm-proxy");
    let proxy_b = start_proxy(
        &proxy_bin,
        &state_b,
        apiserver.url(),
        containerd.socket(),
        &["--listen-quic", "127.0.0.1:7446"],
        work.path(),
        "hm-proxy-b",
    )?;
    let proxy_a = start_proxy(
        &proxy_bin,
        &state_a,
        apiserver.url(),
        containerd.socket(),
        &[
            "--listen-quic",
            "127.0.0.1:7447",
            "--transparent",
            "[::1]:15001",
        ],
        work.path(),
        "hm-proxy-a",
    )?;

    let address = start_target(&channel).await?;
    let proxied = SocketAddr::new(IpAddr::V6(address), ECHO_PORT);
    wait_echo(proxied, false, 0)
        .await
        .context("the Instance answers through the proxies")?;
    let pid = task_pid(containerd.socket()).await?;
    let idle_a = rss_kib(proxy_a.pid());
    let idle_b = rss_kib(proxy_b.pid());

    // The peers on the same path: two relays each, joined by a unix socket.
    let sock = |n: &str| work.path().join(n);
    let _socat = [
        spawn_in(
            None,
            "socat",
            &[
                "TCP-LISTEN:16001,bind=127.0.0.1,fork,reuseaddr",
                &format!("UNIX-CONNECT:{}", sock("s1").display()),
            ],
        )?,
        spawn_in(
            Some(pid),
            "socat",
            &[
                &format!("UNIX-LISTEN:{},fork", sock("s1").display()),
                &format!("TCP:127.0.0.1:{IPERF_PORT}"),
            ],
        )?,
        spawn_in(
            None,
            "socat",
            &[
                "TCP-LISTEN:16002,bind=127.0.0.1,fork,reuseaddr",
                &format!("UNIX-CONNECT:{}", sock("s2").display()),
            ],
        )?,
        spawn_in(
            Some(pid),
            "socat",
            &[
                &format!("UNIX-LISTEN:{},fork", sock("s2").display()),
                &format!("TCP:127.0.0.1:{ECHO_PORT},nodelay"),
            ],
        )?,
    ];
    let cfg = |frontends: &[(String, String)]| {
        let mut c = String::from(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n",
        );
        for (i, (bind, server)) in frontends.iter().enumerate() {
            c.push_str(&format!(
                "frontend f{i}\n  bind {bind}\n  default_backend b{i}\nbackend b{i}\n  server s {server}\n"
            ));
        }
        c
    };
    let (h1, h2) = (sock("h1"), sock("h2"));
    std::fs::write(
        work.path().join("haproxy-a.cfg"),
        cfg(&[
            ("127.0.0.1:17001".into(), format!("unix@{}", h1.display())),
            ("127.0.0.1:17002".into(), format!("unix@{}", h2.display())),
        ]),
    )?;
    std::fs::write(
        work.path().join("haproxy-b.cfg"),
        cfg(&[
            (
                format!("unix@{}", h1.display()),
                format!("127.0.0.1:{IPERF_PORT}"),
            ),
            (
                format!("unix@{}", h2.display()),
                format!("127.0.0.1:{ECHO_PORT}"),
            ),
        ]),
    )?;
    let cfg_a = work.path().join("haproxy-a.cfg");
    let cfg_b = work.path().join("haproxy-b.cfg");
    let _haproxy = [
        spawn_in(
            Some(pid),
            "haproxy",
            &["-db", "-f", cfg_b.to_str().context("path")?],
        )?,
        spawn_in(
            None,
            "haproxy",
            &["-db", "-f", cfg_a.to_str().context("path")?],
        )?,
    ];
    let local = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let variants = [
        Variant {
            name: "direct TCP (inside the Instance's netns)",
            iperf: local(IPERF_PORT),
            echo: local(ECHO_PORT),
            inside: true,
        },
        Variant {
            name: "hm-proxy ×2 (transparent → QUIC → netns)",
            iperf: SocketAddr::new(IpAddr::V6(address), IPERF_PORT),
            echo: proxied,
            inside: false,
        },
        Variant {
            name: "socat ×2 (TCP → unix socket → netns)",
            iperf: local(16001),
            echo: local(16002),
            inside: false,
        },
        Variant {
            name: "haproxy ×2 (TCP → unix socket → netns)",
            iperf: local(17001),
            echo: local(17002),
            inside: false,
        },
    ];
    for v in &variants[2..] {
        wait_echo(v.echo, false, 0)
            .await
            .with_context(|| format!("{} answers", v.name))?;
    }

    let mut rows = Vec::new();
    for v in &variants {
        let gbps = iperf(v, pid, args.seconds)
            .await
            .with_context(|| format!("iperf3 via {}", v.name))?;
        let (p50, p99) = latency(v, pid, args.requests).await?;
        let conns_per_sec = connection_rate(v, pid, args.connections).await?;
        eprintln!(
            "{}: {gbps:.2} Gbit/s, p50 {}, p99 {}, {conns_per_sec:.0} conn/s",
            v.name,
            format_duration(p50),
            format_duration(p99)
        );
        rows.push((
            v.name,
            Figures {
                gbps,
                p50,
                p99,
                conns_per_sec,
            },
        ));
    }

    // RSS with many open connections through the proxies.
    let mut open = Vec::with_capacity(args.open);
    for _ in 0..args.open {
        let mut s = TcpStream::connect(proxied)
            .await
            .context("holding a connection open")?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        open.push(s);
    }
    let busy_a = rss_kib(proxy_a.pid());
    let busy_b = rss_kib(proxy_b.pid());
    drop(open);

    let direct = &rows[0].1;
    println!(
        "| path | throughput (iperf3, {} s) | vs direct | round trip p50 | p99 | added p50 | connections/s |",
        args.seconds
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, f) in &rows {
        println!(
            "| {name} | {:.2} Gbit/s | {:.2}x | {} | {} | {} | {:.0} |",
            f.gbps,
            f.gbps / direct.gbps.max(f64::MIN_POSITIVE),
            format_duration(f.p50),
            format_duration(f.p99),
            format_duration(f.p50.saturating_sub(direct.p50)),
            f.conns_per_sec
        );
    }
    println!();
    println!("| hm-proxy RSS | idle | {} open connections |", args.open);
    println!("|---|---|---|");
    println!(
        "| proxy A (client side, transparent listener) | {} | {} |",
        mib(idle_a),
        mib(busy_a)
    );
    println!(
        "| proxy B (target side, into the netns) | {} | {} |",
        mib(idle_b),
        mib(busy_b)
    );
    drop(proxy_a);
    drop(proxy_b);
    let _ = run_cmd("nft", &["delete", "table", "inet", "hypermesh_proxy"]).await;
    let _ = containerd.ctr("hypermesh");
    containerd.stop().await?;
    Ok(())
}
