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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use hypermesh_api::Api;
use hypermesh_api::v1::{self, Instance, InstancePhase, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};

use crate::containerd::PrivateContainerd;
use crate::servers::{self, AgentTarget, Controllers, ServerProcess};
use crate::stats::{format_duration, percentile};

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

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    Some(crate::procfs::memory(pid?)?.rss_kib)
}

async fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program args…`, inside the network namespace of `pid` when given; killed on drop.
fn spawn_in(pid: Option<u32>, program: &str, args: &[&str]) -> Result<Child> {
    let mut c = match pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg(program);
            c
        }
        None => Command::new(program),
    };
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))
}

fn start_proxy(
    binary: &Path,
    state: &Path,
    server: &str,
    containerd: &Path,
    extra: &[&str],
    dir: &Path,
    name: &'static str,
) -> Result<ServerProcess> {
    let mut argv: Vec<std::ffi::OsString> = vec![
        "--server".into(),
        server.into(),
        "--state-dir".into(),
        state.into(),
        "--containerd-socket".into(),
        containerd.into(),
    ];
    argv.extend(extra.iter().map(Into::into));
    let refs: Vec<&std::ffi::OsStr> = argv.iter().map(|a| a.as_os_str()).collect();
    let log_dir = tempfile::Builder::new().prefix(name).tempdir_in(dir)?;
    servers::spawn_logged(name, binary, &refs, &[("HM_LOG", "warn")], log_dir)
}

async fn wait_node(channel: &tonic::transport::Channel) -> Result<()> {
    let nodes = Api::<Node>::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(n) = nodes.get("", NODE).await
            && n.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "RuntimeReady" && c.status == "True")
            })
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {NODE} not runtime-ready within a minute");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the target Instance (iperf3 server + echo) and returns its global address.
async fn start_target(channel: &tonic::transport::Channel) -> Result<Ipv6Addr> {
    let host = |name: &str, path: &str| v1::Volume {
        name: name.into(),
        source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
            path: path.into(),
        })),
    };
    let mount = |name: &str, at: &str| v1::VolumeMount {
        name: name.into(),
        mount_path: at.into(),
        read_only: true,
    };
    let instance = Instance {
        metadata: Some(v1::ObjectMeta {
            name: "bench-target".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: "hypermesh.local/busybox:latest".into(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    format!(
                        "/usr/bin/iperf3 -s -p {IPERF_PORT} & exec nc -ll -p {ECHO_PORT} -e /bin/cat"
                    ),
                ],
                volume_mounts: vec![
                    mount("usr", "/usr"),
                    mount("lib", "/lib"),
                    mount("lib64", "/lib64"),
                ],
                resources: Some(v1::ResourceRequirements {
                    cpu: "1".into(),
                    memory: "1Gi".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: vec![
                host("usr", "/usr"),
                host("lib", "/usr/lib"),
                host("lib64", "/usr/lib64"),
            ],
            restart_policy: v1::RestartPolicy::Always as i32,
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    };
    let api = Api::<Instance>::new(channel.clone());
    api.create(&instance)
        .await
        .context("creating the target Instance")?;
    api.bind(v1::BindRequest {
        namespace: "default".into(),
        name: "bench-target".into(),
        node_name: NODE.into(),
        ..Default::default()
    })
    .await
    .context("binding the target Instance")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let i = api.get("default", "bench-target").await?;
        if let Some(s) = i.status.as_ref()
            && s.phase == InstancePhase::Running as i32
            && let Ok(a) = s.address.parse()
        {
            return Ok(a);
        }
        if Instant::now() > deadline {
            bail!("the target Instance is not running: {:?}", i.status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pid of the only task in the private containerd.
async fn task_pid(socket: &Path) -> Result<u32> {
    let out = run_cmd(
        "ctr",
        &[
            "--address",
            socket.to_str().context("path")?,
            "-n",
            "hypermesh",
            "tasks",
            "ls",
        ],
    )
    .await?;
    out.lines()
        .skip(1)
        .find_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("no running task")
}

/// A connection to `addr`, from inside the namespace of `pid` when `inside`.
async fn connect(addr: SocketAddr, inside: bool, pid: u32) -> std::io::Result<TcpStream> {
    let stream = if inside {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let r = (|| {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    None,
                )?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })();
            let _ = tx.send(r);
        });
        let socket = rx
            .await
            .map_err(|_| std::io::Error::other("netns thread"))??;
        TcpSocket::from_std_stream(socket.into())
            .connect(addr)
            .await?
    } else {
        TcpStream::connect(addr).await?
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn wait_echo(addr: SocketAddr, inside: bool, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let mut s = connect(addr, inside, pid).await?;
            s.write_all(b"ping").await?;
            let mut b = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut b)).await??;
            Ok::<_, anyhow::Error>(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("echo at {addr}"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn iperf(v: &Variant, pid: u32, seconds: u32) -> Result<f64> {
    let secs = seconds.to_string();
    let host = v.iperf.ip().to_string();
    let port = v.iperf.port().to_string();
    let mut argv = vec!["iperf3", "-c", &host, "-p", &port, "-t", &secs, "-J"];
    let out = if v.inside {
        let net = format!("--net=/proc/{pid}/ns/net");
        let mut all = vec![net.as_str()];
        all.append(&mut argv);
        run_cmd("nsenter", &all).await?
    } else {
        run_cmd(argv[0], &argv[1..]).await?
    };
    let json: serde_json::Value = serde_json::from_str(&out).context("iperf3 -J output")?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("no end.sum_received.bits_per_second in iperf3's output")
}

async fn latency(v: &Variant, pid: u32, requests: usize) -> Result<(Duration, Duration)> {
    let mut s = connect(v.echo, v.inside, pid).await?;
    let msg = [b'x'; 64];
    let mut back = [0u8; 64];
    for _ in 0..100 {
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
    }
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

async fn connection_rate(v: &Variant, pid: u32, count: usize) -> Result<f64> {
    let t = Instant::now();
    for _ in 0..count {
        let mut s = connect(v.echo, v.inside, pid).await?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
    }
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

/// A throwaway cluster CA issuing node certificates in the agent's `pki/` layout.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Result<Ca> {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hypermesh-ca");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(Ca { issuer })
    }

    fn write(&self, state: &Path, node: &str) -> Result<()> {
        let mut params = rcgen::CertificateParams::new(vec![format!("{node}.node.hypermesh")])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("node:{node}"));
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let pki = state.join("pki");
        std::fs::create_dir_all(&pki)?;
        std::fs::write(pki.join("ca.crt"), self.issuer.pem())?;
        std::fs::write(pki.join("node.crt"), cert.pem())?;
        std::fs::write(pki.join("node.key"), key.serialize_pem())?;
        Ok(())
    }
}
