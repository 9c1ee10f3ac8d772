//! `make up` (scripts/up.sh, on private ports and directories) supervises its
//! components: a `kill -9` of hm-agent is reported with the component's name and exit
//! status, the agent is restarted, and its running container is adopted — same task,
//! same pid, no restart — instead of the whole cluster being torn down. SIGTERM then
//! stops everything: the components, the containers and containerd.

use hypermesh_tests::containerd;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd::{TEST_IMAGE, build_test_archive, require_tools, workspace_root};
use hypermesh_api::v1::{self, Instance, InstancePhase, Lease, Namespace, Node, ObjectMeta};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::{bin_path, connect_target, wait_for};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Every line up.sh and its components print, stdout and stderr together.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn collect(&self, from: impl AsyncRead + Unpin + Send + 'static) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(from).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = log.0.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
    }

    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn wait_for(&self, what: &str) {
        let found = wait_for(TIMEOUT, || async {
            self.text().contains(what).then_some(())
        })
        .await;
        assert!(found.is_ok(), "never saw {what:?}; log:\n{}", self.text());
    }
}

/// Pids of the processes whose command line holds `marker` and whose program is `program`.
fn pids_of(program: &str, marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let name = Path::new(args.first()?).file_name()?.to_str()?.to_string();
            (name == program && args.iter().any(|a| a.contains(marker))).then_some(pid)
        })
        .collect()
}

fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// Stops up.sh (SIGTERM, which cleans up) if the test ends early.
struct StopOnDrop {
    pid: Option<u32>,
    runtime: PathBuf,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            signal(pid, "-TERM");
            for _ in 0..300 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for command in ["purge", "stop"] {
            let _ = std::process::Command::new("bash")
                .arg(workspace_root().join("scripts/containerd.sh"))
                .arg(command)
                .arg(&self.runtime)
                .output();
        }
    }
}

fn ctr_tasks(runtime: &Path) -> String {
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(runtime.join("containerd.sock"))
        .args(["--namespace", "hypermesh", "tasks", "ls"])
        .output()
        .expect("ctr");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn make_up_restarts_a_killed_agent_which_adopts_the_running_containers() {
    require_tools();
    let base = tempfile::tempdir().expect("temp dir");
    let dir = |name: &str| base.path().join(name);
    let (data, state, runtime, images) =
        (dir("data"), dir("agent"), dir("containerd"), dir("images"));
    std::fs::create_dir_all(&images).expect("image dir");
    // The archive up.sh would otherwise build (and name) itself.
    let archive = build_test_archive(&images);
    std::fs::rename(&archive, images.join("busybox.tar")).expect("name the archive");
    let secrets = tempfile::Builder::new()
        .prefix("hm-up-secrets-")
        .tempdir_in("/dev/shm")
        .expect("secrets dir on tmpfs");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let bin = bin_path("hm-apiserver")
        .parent()
        .expect("bin dir")
        .to_path_buf();

    let mut up = tokio::process::Command::new("bash")
        .arg(workspace_root().join("scripts/up.sh"))
        .env("BIN", &bin)
        .env("LISTEN", &listen)
        .env("DATA_DIR", &data)
        .env("STATE_DIR", &state)
        .env("RUNTIME_DIR", &runtime)
        .env("IMAGE_DIR", &images)
        .env("SECRETS_DIR", secrets.path())
        .env("HM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/up.sh");
    let mut guard = StopOnDrop {
        pid: up.id(),
        runtime: runtime.clone(),
    };
    let log = Log::default();
    log.collect(up.stdout.take().expect("stdout"));
    log.collect(up.stderr.take().expect("stderr"));
    log.wait_for("HyperMesh is up").await;

    // The admin's identity, as a user of `make up` gets it.
    let admin = data.join("admin.config");
    let config =
        hypermesh_trust::client_config::ClientConfigFile::load(&admin).expect("admin.config");
    let target = config.target(&admin, None).expect("target");
    let channel = connect_target(&target).await.expect("connect");
    let nodes = Api::<Node>::new(channel.clone());
    let node = wait_for(TIMEOUT, || async {
        let (items, _) = nodes.list_all(Default::default()).await.ok()?;
        items.into_iter().find(|n| {
            n.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            })
        })
    })
    .await
    .unwrap_or_else(|e| panic!("no Ready node: {e}; log:\n{}", log.text()));
    let node = node.meta().name.clone();

    // A workload on it; root in the container may need the privileged policy here.
    let namespaces = Api::<Namespace>::new(channel.clone());
    let mut ns = namespaces.get("", "default").await.expect("namespace");
    ns.meta_mut()
        .labels
        .insert("hypermesh.io/policy".into(), "privileged".into());
    namespaces.update(&ns).await.expect("label namespace");
    let instances = Api::<Instance>::new(channel.clone());
    instances
        .create(&Instance {
            metadata: Some(ObjectMeta {
                name: "ticker".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::InstanceSpec {
                containers: vec![v1::Container {
                    name: "main".into(),
                    image: TEST_IMAGE.into(),
                    command: ["sh", "-c", "while true; do sleep 0.2; done"]
                        .map(String::from)
                        .to_vec(),
                    ..Default::default()
                }],
                termination_grace_period_seconds: 1,
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("create instance");
    let running = |i: &Instance| {
        i.status.as_ref().is_some_and(|s| {
            s.phase == InstancePhase::Running as i32
                && s.container_statuses.iter().all(|c| c.restart_count == 0)
        })
    };
    wait_for(TIMEOUT, || async {
        instances
            .get("default", "ticker")
            .await
            .ok()
            .filter(running)
    })
    .await
    .unwrap_or_else(|e| panic!("ticker never ran: {e}; log:\n{}", log.text()));
    let tasks_before = ctr_tasks(&runtime);
    assert_eq!(
        tasks_before
            .lines()
            .filter(|l| l.contains("RUNNING"))
            .count(),
        1,
        "{tasks_before}"
    );

    // kill -9 the agent.
    let marker = state.to_string_lossy().into_owned();
    let agents = pids_of("hm-agent", &marker);
    assert_eq!(agents.len(), 1, "one hm-agent runs: {agents:?}");
    let killed_at = hypermesh_api::time::now();
    signal(agents[0], "-KILL");
    log.wait_for("hm-agent exited with status 137; restarting")
        .await;

    // A new agent renews the node's Lease; by then it had every chance to recreate.
    let leases = Api::<Lease>::new(channel.clone());
    wait_for(TIMEOUT, || async {
        let lease = leases
            .get("hypermesh-system", &format!("node-{node}"))
            .await
            .ok()?;
        let renewed = lease.spec?.renew_time?;
        ((renewed.seconds, renewed.nanos) > (killed_at.seconds, killed_at.nanos)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("the agent was not restarted: {e}; log:\n{}", log.text()));
    let restarted = pids_of("hm-agent", &marker);
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert_ne!(restarted, agents, "a new hm-agent process");
    // Adopted: the same task with the same pid, still running, no restart counted.
    let adopted = wait_for(TIMEOUT, || async {
        instances
            .get("default", "ticker")
            .await
            .ok()
            .filter(running)
    })
    .await;
    assert!(adopted.is_ok(), "ticker not Running after the restart");
    assert_eq!(ctr_tasks(&runtime), tasks_before, "same task, same pid");
    for component in ["hm-apiserver", "hm-scheduler"] {
        assert!(
            !log.text().contains(&format!("{component} exited")),
            "{component} was not touched:\n{}",
            log.text()
        );
    }

    // SIGTERM stops everything, the containers and containerd included.
    let up_pid = guard.pid.take().expect("up.sh pid");
    signal(up_pid, "-TERM");
    let status = tokio::time::timeout(TIMEOUT, up.wait())
        .await
        .expect("up.sh exits after SIGTERM")
        .expect("wait");
    assert!(
        log.text().contains("make up: stopping..."),
        "{}",
        log.text()
    );
    assert!(
        pids_of("hm-agent", &marker).is_empty(),
        "hm-agent still runs after SIGTERM ({status})"
    );
    let data_marker = data.to_string_lossy().into_owned();
    assert!(pids_of("hm-apiserver", &data_marker).is_empty());
    assert!(pids_of("hm-scheduler", &data_marker).is_empty());
    let runtime_marker = runtime.to_string_lossy().into_owned();
    assert!(
        pids_of("containerd", &runtime_marker).is_empty(),
        "containerd stopped"
    );
}
