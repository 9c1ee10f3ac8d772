//! Setting up the benchmark's cluster: commands inside the private namespace, proxies
//! with throwaway node certificates, the Instance serving iperf3 and echo.

use crate::servers::{self, ServerProcess};
use anyhow::{Context, Result, bail};
use hypermesh_api::Api;
use hypermesh_api::v1::{self, Instance, InstancePhase, Node};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

use super::*;

pub(super) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

pub(super) async fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
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
pub(super) fn spawn_in(pid: Option<u32>, program: &str, args: &[&str]) -> Result<Child> {
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

pub(super) fn start_proxy(
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

pub(super) async fn wait_node(channel: &tonic::transport::Channel) -> Result<()> {
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
pub(super) async fn start_target(channel: &tonic::transport::Channel) -> Result<Ipv6Addr> {
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
    // The target mounts the host's /usr and libraries (iperf3 comes from the host):
    // only a namespace with the privileged workload policy allows that.
    let namespaces = Api::<v1::Namespace>::new(channel.clone());
    let mut default = namespaces
        .get("", "default")
        .await
        .context("reading namespace default")?;
    default
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert("hypermesh.io/policy".into(), "privileged".into());
    namespaces
        .update(&default)
        .await
        .context("allowing host access in namespace default")?;
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
pub(super) async fn task_pid(socket: &Path) -> Result<u32> {
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

/// A throwaway cluster CA issuing node certificates in the agent's `pki/` layout.
pub(super) struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub(super) fn new() -> Result<Ca> {
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

    pub(super) fn write(&self, state: &Path, node: &str) -> Result<()> {
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
