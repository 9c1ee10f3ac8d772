//! Three hosts as network namespaces on one bridge (198.51.100.0/25, fd00:1::/64), the
//! third behind an nftables masquerade that drops every inbound connection: the lab of
//! the multi-host proxy tests. Each host gets its own containerd, `hm-agent` and
//! `hm-proxy` (real processes entered with `nsenter --net`), and Instances built from
//! the busybox test image with the host's programs mounted read-only.

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
use proxy::{SocksTarget, http_get_over, socks_over};
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

pub fn build_lab() -> NetLab {
    let mut lab = NetLab::new();
    for ns in ["sw", "a", "b", "nat", "c"] {
        lab.add(ns).expect("namespace");
    }
    let ok = |r: anyhow::Result<String>| {
        r.expect("network setup");
    };
    ok(lab.ip("sw", &["link", "add", "br0", "type", "bridge"]));
    ok(lab.ip("sw", &["link", "set", "br0", "up"]));
    for (host, port, v4, v6) in [
        ("a", "pa", "198.51.100.1/25", "fd00:1::1/64"),
        ("b", "pb", "198.51.100.2/25", "fd00:1::2/64"),
        ("nat", "pn", "198.51.100.3/25", "fd00:1::3/64"),
    ] {
        lab.veth("sw", port, host, "eth0").expect("veth");
        ok(lab.ip("sw", &["link", "set", port, "master", "br0"]));
        ok(lab.ip(host, &["addr", "add", v4, "dev", "eth0"]));
        ok(lab.ip(host, &["-6", "addr", "add", v6, "dev", "eth0", "nodad"]));
    }
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

pub fn spawn_agent(lab: &NetLab, host: &Host, images: &Path) -> Child {
    lab.command(host.name, bin_path("hm-agent"))
        .args([
            "--server",
            "http://198.51.100.1:7443",
            "--node-name",
            host.name,
        ])
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
        .env("HM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hm-agent")
}

pub fn spawn_proxy(lab: &NetLab, host: &Host) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(host.dir.path().join("proxy.log"))
        .expect("proxy log");
    let quic = format!("{}:{QUIC_PORT}", host.ip);
    let mut c = lab.command(host.name, bin_path("hm-proxy"));
    c.args(["--server", "http://198.51.100.1:7443"])
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
        ]);
    if host.name == "c" {
        c.args(["--advertise", &quic, "--relay", "198.51.100.1:7446"]);
    }
    if host.name == "a" {
        // Unmodified clients on A: hm0 + nftables redirect into this listener.
        c.args(["--transparent", "[::1]:15001"]);
    }
    c.env("HM_LOG", "info,hypermesh_proxy=debug")
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

/// One GET of the Route from host A; the body, or None.
pub async fn route_get(lab: &NetLab) -> Option<String> {
    let (code, stream) = socks_from(
        lab,
        "a",
        SocksTarget::Name("web.default.route.hypermesh"),
        80,
    )
    .await;
    if code != 0 {
        return None;
    }
    Some(http_get_over(stream?, "web").await.trim().to_string())
}

pub fn address_of(i: &Instance) -> Ipv6Addr {
    i.status
        .as_ref()
        .and_then(|s| s.address.parse().ok())
        .expect("instance has a global address")
}
