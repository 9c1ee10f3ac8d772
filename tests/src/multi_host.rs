//! The lab of the multi-host end-to-end test (`e2e_multi_host.rs`): a highly available
//! control plane, and hosts as network namespaces on one bridge.
//!
//! - [`ControlPlane`]: a 3-member etcd, two `hm-apiserver` processes on it (TLS, one
//!   key file, hence one cluster CA; their in-process controllers leader-elected) and
//!   two leader-elected `hm-scheduler` processes with the `scheduler.config` identity.
//!   The apiservers listen on loopback; hosts reach them at [`APISERVER_IPS`] on the
//!   lab's bridge, through forwarders inside namespace `cp`, and each one's serving
//!   certificate names its address there (`--tls-san`).
//! - [`start_host`]: a host with its own containerd, an `hm-agent` that joins with a
//!   one-use token and the CA pin (no pre-issued certificate), then an `hm-proxy` with
//!   the node certificate that join produced; both are given every apiserver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_api::client::{Target, connect_lazy, join_urls};
use hypermesh_api::v1::{JoinToken, Lease};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::etcd::EtcdCluster;
use crate::ha::{admin_on_all, apiserver_on, controllers_leader_pid};
use crate::hosts::{Containerds, Host, spawn_agent_with, spawn_proxy_with, start_containerd};
use crate::identities::make_join_token;
use crate::netns::NetLab;
use crate::{ApiServerProcess, bin_path, wait_for};

/// Where the hosts reach the two apiservers (inside namespace `cp`).
pub const APISERVER_IPS: [&str; 2] = ["198.51.100.10", "198.51.100.11"];
/// Their port there.
pub const APISERVER_PORT: u16 = 7443;
/// How long one step of bringing the lab up may take.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The bridge members of the lab: `cp` (both apiserver addresses) and the `hosts`
/// `(name, IPv4/len, IPv6/len)`.
pub fn lab(hosts: &[(&str, &str, &str)]) -> NetLab {
    let mut members = vec![("cp", "198.51.100.10/25", "fd00:1::10/64")];
    members.extend_from_slice(hosts);
    let lab = crate::hosts::bridge_lab(&members);
    lab.ip("cp", &["addr", "add", "198.51.100.11/25", "dev", "eth0"])
        .expect("second apiserver address");
    lab
}

/// etcd, two apiservers and two schedulers; see the module doc.
pub struct ControlPlane {
    // Fields drop in order: schedulers, then apiservers, then etcd.
    schedulers: Vec<Child>,
    forwards: Vec<JoinHandle<()>>,
    /// The apiservers; the first one led the controllers when the second started.
    pub apiservers: Vec<ApiServerProcess>,
    /// The 3-member etcd both apiservers store in.
    pub etcd: EtcdCluster,
    /// The key file and the schedulers' logs.
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts it in `lab` (made by [`lab`]). Each apiserver gets `--controllers all`,
    /// `--tls-san <its bridge address>` and `apiserver_args`; the second starts once
    /// the first leads the controllers, so the first is both the leader and the
    /// apiserver every client tries first.
    pub async fn start(lab: &NetLab, apiserver_args: &[&str]) -> ControlPlane {
        let etcd = EtcdCluster::start_members(3).await.expect("3-member etcd");
        let keys = tempfile::tempdir().expect("temp dir");
        let key_file = keys.path().join("encryption.key");
        let mut apiservers: Vec<ApiServerProcess> = Vec::new();
        let mut forwards = Vec::new();
        for ip in APISERVER_IPS {
            let mut args = vec!["--controllers", "all", "--tls-san", ip];
            args.extend_from_slice(apiserver_args);
            let server = apiserver_on(&etcd, &key_file, &args).await;
            let local: SocketAddr = server
                .url()
                .trim_start_matches("https://")
                .parse()
                .expect("the apiserver's loopback address");
            let public = SocketAddr::new(ip.parse().expect("ip"), APISERVER_PORT);
            forwards.push(
                lab.forward_in("cp", public, local)
                    .await
                    .expect("apiserver reachable on the bridge"),
            );
            if apiservers.is_empty() {
                let leases: Api<Lease> = Api::new(server.channel().await.expect("admin"));
                let pid = server.pid();
                wait_for(START_TIMEOUT, || async {
                    (controllers_leader_pid(&leases).await == pid).then_some(())
                })
                .await
                .expect("the first apiserver leads the controllers");
            }
            apiservers.push(server);
        }
        let loopback: Vec<&str> = apiservers.iter().map(|s| s.url()).collect();
        let servers = join_urls(&loopback);
        let config = apiservers[0]
            .data_dir()
            .join(hypermesh_apiserver::server::SCHEDULER_CONFIG);
        let schedulers = (0..2)
            .map(|i| {
                let log = std::fs::File::create(keys.path().join(format!("scheduler-{i}.log")))
                    .expect("scheduler log");
                Command::new(bin_path("hm-scheduler"))
                    .arg("--config")
                    .arg(&config)
                    .args(["--server", &servers])
                    .env("HM_LOG", "warn")
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .expect("spawn hm-scheduler")
            })
            .collect();
        ControlPlane {
            etcd,
            apiservers,
            forwards,
            schedulers,
            dir: keys,
        }
    }

    /// Every apiserver as the hosts reach it, comma-separated.
    pub fn host_urls() -> String {
        let urls: Vec<String> = APISERVER_IPS
            .iter()
            .map(|ip| format!("https://{ip}:{APISERVER_PORT}"))
            .collect();
        join_urls(&urls)
    }

    /// The admin's target listing every apiserver (on loopback).
    pub fn admin(&self) -> Target {
        let servers: Vec<&ApiServerProcess> = self.apiservers.iter().collect();
        admin_on_all(&servers)
    }

    /// A channel as admin that fails over between the apiservers.
    pub fn channel(&self) -> Channel {
        connect_lazy(&self.admin()).expect("admin channel")
    }

    /// The cluster CA's pin, `sha256:…`.
    pub fn ca_pin(&self) -> String {
        self.apiservers[0].ca_pin().expect("CA pin")
    }

    /// Kills apiserver `index` (SIGKILL); its address on the bridge refuses
    /// connections from then on.
    pub async fn kill_apiserver(&mut self, index: usize) {
        self.apiservers[index]
            .kill9()
            .await
            .expect("kill the apiserver");
        self.forwards[index].abort();
    }

    /// The schedulers' logs (warnings and errors), for failure messages.
    pub fn scheduler_logs(&self) -> String {
        (0..self.schedulers.len())
            .map(|i| {
                let path = self.dir.path().join(format!("scheduler-{i}.log"));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                format!("\n--- scheduler {i} ---\n{text}")
            })
            .collect()
    }

    /// Whether both schedulers still run.
    pub fn schedulers_alive(&mut self) -> bool {
        self.schedulers
            .iter_mut()
            .all(|s| s.try_wait().ok().flatten().is_none())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for forward in &self.forwards {
            forward.abort();
        }
    }
}

/// Starts host `name` at `ip` (a member of `lab`): its containerd (stopped through
/// `containerds`), an agent that joins with a fresh one-use token and the CA pin, then
/// its proxy once the join wrote the node's credentials. Both get every apiserver,
/// the agent also `agent_args`. Returns the host and its JoinToken's name.
pub async fn start_host(
    lab: &NetLab,
    control_plane: &ControlPlane,
    (name, ip): (&'static str, &'static str),
    images: &Path,
    containerds: &mut Containerds,
    agent_args: &[&str],
) -> (Host, String) {
    let mut host = Host {
        name,
        ip,
        dir: tempfile::Builder::new()
            .prefix("hm-e2e-host-")
            .tempdir()
            .expect("host dir"),
        secrets: tempfile::Builder::new()
            .prefix("hm-secrets-")
            .tempdir_in("/dev/shm")
            .expect("secrets dir"),
        socket: PathBuf::new(),
        agent: None,
        proxy: None,
    };
    std::fs::create_dir_all(host.state()).expect("state dir");
    start_containerd(lab, &mut host, containerds);
    let token = make_join_token(
        &Api::<JoinToken>::new(control_plane.channel()),
        1,
        Duration::from_secs(600),
    )
    .await
    .expect("join token");
    let pin = control_plane.ca_pin();
    let mut args = vec![
        "--join-token",
        token.as_str(),
        "--ca-cert-hash",
        pin.as_str(),
        // A small storage commitment keeps three agents on one disk light.
        "--storage-commit",
        "4Mi",
    ];
    args.extend_from_slice(agent_args);
    let urls = ControlPlane::host_urls();
    host.agent = Some(spawn_agent_with(lab, &host, images, &urls, &args));
    // The join writes key, certificate, then CA (each atomically).
    let ca = host.state().join("pki").join("ca.crt");
    let joined = wait_for(START_TIMEOUT, || async { ca.exists().then_some(()) }).await;
    if joined.is_err() {
        panic!(
            "host {name} never joined:\n{}",
            std::fs::read_to_string(host.dir.path().join("agent.log")).unwrap_or_default()
        );
    }
    host.proxy = Some(spawn_proxy_with(lab, &host, &urls, &[]));
    let token_name = token.split('.').next().unwrap_or_default().to_string();
    (host, token_name)
}
