//! Hosts as network namespaces on one bridge (198.51.100.0/25, fd00:1::/64):
//! [`bridge_lab`] plugs any set of them into the bridge, [`build_lab`] is the lab of the
//! multi-host proxy tests (three hosts, the third behind an nftables masquerade that
//! drops every inbound connection). Each host gets its own containerd, `hm-agent` and
//! `hm-proxy` (real processes entered with `nsenter --net`), Instances built from the
//! busybox test image with the host's programs mounted read-only, and can be taken
//! down whole ([`crash_host`]).

use crate::containerd;
use crate::proxy;

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::bin_path;
use crate::netns::NetLab;
use containerd::{TEST_IMAGE, workspace_root};
use hypermesh_api::Api;
use hypermesh_api::v1::{self, BindRequest, Instance, ObjectMeta, RestartPolicy};
use proxy::{SocksTarget, socks_over, try_http_get_over, try_socks_over};
use tokio::process::Child;

pub const TIMEOUT: Duration = Duration::from_secs(90);
pub const QUIC_PORT: u16 = 7446;
pub const SOCKS: &str = "127.0.0.1:1080";
pub const METRICS: &str = "127.0.0.1:9446";

/// One host: its namespace, containerd, agent and proxy.
pub struct Host {
    pub name: &'static str,
    pub ip: &'static str,
    pub dir: tempfile::TempDir,
    pub secrets: tempfile::TempDir,
    pub socket: PathBuf,
    pub agent: Option<Child>,
    pub proxy: Option<Child>,
}

impl Host {
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn containerd_dir(&self) -> PathBuf {
        self.dir.path().join("containerd")
    }

    /// How many tasks the host's containerd runs (`ctr tasks ls`, status RUNNING):
    /// one per container of the Instances on it.
    pub fn running_tasks(&self) -> usize {
        let output = std::process::Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args([
                "--namespace",
                hypermesh_containers::NAMESPACE,
                "tasks",
                "ls",
            ])
            .output()
            .expect("running ctr");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("RUNNING"))
            .count()
    }

    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }
}

/// Purges and stops every host's containerd on drop (before the lab goes).
pub struct Containerds(pub Vec<PathBuf>);

impl Drop for Containerds {
    fn drop(&mut self) {
        for dir in &self.0 {
            for command in ["purge", "stop"] {
                let _ = std::process::Command::new("bash")
                    .arg(workspace_root().join("scripts/containerd.sh"))
                    .arg(command)
                    .arg(dir)
                    .output();
            }
        }
    }
}

/// Namespace `sw` holding bridge `br0`, and one namespace per member `(name, IPv4/len,
/// IPv6/len)` plugged into it by a veth pair (`eth0` inside, `p<name>` on the bridge).
pub fn bridge_lab(members: &[(&str, &str, &str)]) -> NetLab {
    let mut lab = NetLab::new();
    lab.add("sw").expect("namespace");
    let ok = |r: anyhow::Result<String>| {
        r.expect("network setup");
    };
    ok(lab.ip("sw", &["link", "add", "br0", "type", "bridge"]));
    ok(lab.ip("sw", &["link", "set", "br0", "up"]));
    for (host, v4, v6) in members {
        lab.add(host).expect("namespace");
        let port = format!("p{host}");
        lab.veth("sw", &port, host, "eth0").expect("veth");
        ok(lab.ip("sw", &["link", "set", &port, "master", "br0"]));
        ok(lab.ip(host, &["addr", "add", v4, "dev", "eth0"]));
        ok(lab.ip(host, &["-6", "addr", "add", v6, "dev", "eth0", "nodad"]));
    }
    lab
}

pub fn build_lab() -> NetLab {
    let mut lab = bridge_lab(&[
        ("a", "198.51.100.1/25", "fd00:1::1/64"),
        ("b", "198.51.100.2/25", "fd00:1::2/64"),
        ("nat", "198.51.100.3/25", "fd00:1::3/64"),
    ]);
    lab.add("c").expect("namespace");
    let ok = |r: anyhow::Result<String>| {
        r.expect("network setup");
    };
    // C's private side behind the router.
    lab.veth("nat", "in0", "c", "eth0").expect("veth");
    ok(lab.ip("nat", &["addr", "add", "198.51.100.129/25", "dev", "in0"]));
    ok(lab.ip("c", &["addr", "add", "198.51.100.130/25", "dev", "eth0"]));
    ok(lab.ip("c", &["route", "add", "default", "via", "198.51.100.129"]));
    // A and B know where C's addresses are, so a direct dial to C reaches the router
    // (and is dropped there) instead of failing locally.
    for host in ["a", "b"] {
        ok(lab.ip(
            host,
            &["route", "add", "198.51.100.128/25", "via", "198.51.100.3"],
        ));
    }
    ok(lab.exec("nat", "sysctl", &["-qw", "net.ipv4.ip_forward=1"]));
    lab.nft(
        "nat",
        r#"
table inet hm_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "in0" oifname "eth0" accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "eth0" ct state new drop
    }
}
"#,
    )
    .expect("nft masquerade");
    lab
}

/// Starts a private containerd inside `host`'s namespace (stopped by `containerds` on
/// drop) and records its socket in `host.socket`.
pub fn start_containerd(lab: &NetLab, host: &mut Host, containerds: &mut Containerds) {
    let dir = host.containerd_dir();
    containerds.0.push(dir.clone());
    let script = workspace_root().join("scripts/containerd.sh");
    let socket = lab
        .exec(
            host.name,
            "bash",
            &[
                script.to_str().expect("utf-8 path"),
                "start",
                dir.to_str().expect("utf-8 path"),
            ],
        )
        .expect("containerd starts inside the host");
    host.socket = PathBuf::from(socket.trim());
}

/// `hm-agent` inside `host` against the apiserver on A (plaintext), with node
/// credentials already in its state dir.
pub fn spawn_agent(lab: &NetLab, host: &Host, images: &Path) -> Child {
    spawn_agent_with(lab, host, images, "http://198.51.100.1:7443", &[])
}

/// `hm-agent` inside `host` against `server` (one URL or several, comma-separated),
/// with fast heartbeats plus `extra` flags; its log goes to `agent.log` in the host's dir.
pub fn spawn_agent_with(
    lab: &NetLab,
    host: &Host,
    images: &Path,
    server: &str,
    extra: &[&str],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(host.dir.path().join("agent.log"))
        .expect("agent log");
    lab.command(host.name, bin_path("hm-agent"))
        .args(["--server", server, "--node-name", host.name])
        .arg("--state-dir")
        .arg(host.state())
        .arg("--containerd-socket")
        .arg(&host.socket)
        .arg("--image-dir")
        .arg(images)
        .arg("--secrets-dir")
        .arg(host.secrets.path())
        .args([
            "--heartbeat-interval",
            "300ms",
            "--restart-backoff",
            "200ms",
        ])
        .args(extra)
        .env("HM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn hm-agent")
}

/// `hm-proxy` inside `host` against the apiserver on A; C (behind NAT) relays through
/// A, and A also takes unmodified clients (`hm0` + nftables).
pub fn spawn_proxy(lab: &NetLab, host: &Host) -> Child {
    let quic = format!("{}:{QUIC_PORT}", host.ip);
    let mut extra = Vec::new();
    if host.name == "c" {
        extra.extend(["--advertise", quic.as_str(), "--relay", "198.51.100.1:7446"]);
    }
    if host.name == "a" {
        extra.extend(["--transparent", "[::1]:15001"]);
    }
    spawn_proxy_with(lab, host, "http://198.51.100.1:7443", &extra)
}

/// `hm-proxy` inside `host` against `server` (one URL or several, comma-separated),
/// with QUIC on the host's address, SOCKS on [`SOCKS`] and metrics on [`METRICS`], plus
/// `extra` flags; its log goes to `proxy.log` in the host's dir.
pub fn spawn_proxy_with(lab: &NetLab, host: &Host, server: &str, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(host.dir.path().join("proxy.log"))
        .expect("proxy log");
    let quic = format!("{}:{QUIC_PORT}", host.ip);
    lab.command(host.name, bin_path("hm-proxy"))
        .args(["--server", server])
        .arg("--state-dir")
        .arg(host.state())
        .arg("--containerd-socket")
        .arg(&host.socket)
        .args([
            "--listen-quic",
            &quic,
            "--socks",
            SOCKS,
            "--metrics-addr",
            METRICS,
        ])
        .args(extra)
        .env("HM_LOG", "info,hypermesh_proxy=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn hm-proxy")
}

pub async fn kill9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
}

/// Takes `host` down as a power cut would: its agent and proxy killed (SIGKILL), every
/// container its containerd runs killed (SIGKILL), then every other process in its
/// namespace (containerd, shims, log writers), then the namespace itself with its link
/// to the bridge.
pub async fn crash_host(lab: &NetLab, host: &mut Host) {
    kill9(&mut host.agent).await;
    kill9(&mut host.proxy).await;
    let _ = std::process::Command::new("bash")
        .arg(workspace_root().join("scripts/containerd.sh"))
        .arg("purge")
        .arg(host.containerd_dir())
        .output();
    crate::wait_for(Duration::from_secs(20), || async {
        let pids = lab.pids(host.name).ok()?;
        if pids.is_empty() {
            return Some(());
        }
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .args(pids.iter().map(u32::to_string))
            .output();
        None
    })
    .await
    .expect("every process of the host is gone");
    lab.remove(host.name)
        .expect("the host's namespace is deleted");
}

pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

pub async fn run_instance(
    api: &Api<Instance>,
    name: &str,
    node: &str,
    app: Option<&str>,
    command: Vec<String>,
    port: u32,
) {
    run_instance_with(api, name, node, app, command, port, |_| {}).await
}

/// The host's /usr, /lib and /lib64 read-only in the container, so it can run the
/// host's programs (socat for the UDP echo server).
pub fn host_programs(spec: &mut v1::InstanceSpec) {
    for (name, path, at) in [
        ("usr", "/usr", "/usr"),
        ("lib", "/usr/lib", "/lib"),
        ("lib64", "/usr/lib64", "/lib64"),
    ] {
        spec.volumes.push(v1::Volume {
            name: name.into(),
            source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
                path: path.into(),
            })),
        });
        spec.containers[0].volume_mounts.push(v1::VolumeMount {
            name: name.into(),
            mount_path: at.into(),
            read_only: true,
        });
    }
    spec.containers[0].ports[0].protocol = v1::Protocol::Udp as i32;
}

pub async fn run_instance_with(
    api: &Api<Instance>,
    name: &str,
    node: &str,
    app: Option<&str>,
    command: Vec<String>,
    port: u32,
    tune: impl FnOnce(&mut v1::InstanceSpec),
) {
    let instance = Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: app
                .map(|a| [("app".to_string(), a.to_string())].into_iter().collect())
                .unwrap_or_default(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: TEST_IMAGE.into(),
                command,
                ports: vec![v1::ContainerPort {
                    name: "main".into(),
                    container_port: port,
                    protocol: v1::Protocol::Tcp as i32,
                }],
                resources: Some(v1::ResourceRequirements {
                    cpu: "100m".into(),
                    memory: "32Mi".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            restart_policy: RestartPolicy::Always as i32,
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    };
    let mut instance = instance;
    if let Some(spec) = instance.spec.as_mut() {
        tune(spec);
    }
    api.create(&instance).await.expect("create instance");
    api.bind(BindRequest {
        namespace: "default".into(),
        name: name.into(),
        node_name: node.into(),
        ..Default::default()
    })
    .await
    .expect("bind");
}

/// SOCKS CONNECT from inside `host` through its proxy.
pub async fn socks_from(
    lab: &NetLab,
    host: &str,
    target: SocksTarget<'_>,
    port: u16,
) -> (u8, Option<tokio::net::TcpStream>) {
    let socks: SocketAddr = SOCKS.parse().expect("addr");
    let stream = lab
        .connect(host, socks)
        .await
        .expect("connect to the proxy's SOCKS port");
    socks_over(stream, target, port).await
}

/// `GET path` on `host`'s proxy metrics port.
pub async fn metrics_of(lab: &NetLab, host: &str, path: &str) -> String {
    let addr: SocketAddr = METRICS.parse().expect("addr");
    match lab.connect(host, addr).await {
        Ok(s) => {
            let mut s = s;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s
                .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            out.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or(out)
        }
        Err(e) => format!("unreachable: {e}"),
    }
}

/// One GET of the Route `web` from host A; the body, or None.
pub async fn route_get(lab: &NetLab) -> Option<String> {
    try_route_get(lab, "a", "web").await.ok()
}

/// One GET of Route `default/route` through the SOCKS port of `host`'s proxy; the body,
/// or why there was none.
pub async fn try_route_get(lab: &NetLab, host: &str, route: &str) -> anyhow::Result<String> {
    let socks: SocketAddr = SOCKS.parse()?;
    let stream = lab.connect(host, socks).await?;
    let name = format!("{route}.default.route.hypermesh");
    let (code, stream) = try_socks_over(stream, SocksTarget::Name(&name), 80).await?;
    let stream = stream.ok_or_else(|| anyhow::anyhow!("SOCKS reply code {code}"))?;
    Ok(try_http_get_over(stream, route).await?.trim().to_string())
}

pub fn address_of(i: &Instance) -> Ipv6Addr {
    i.status
        .as_ref()
        .and_then(|s| s.address.parse().ok())
        .expect("instance has a global address")
}
