//! `kill -9` of a real `hm-agent` process mid-run: its containers keep running and keep
//! logging (the logger belongs to containerd's shim), the restarted agent adopts them —
//! same tasks, no duplicates, no restarts — and `hmctl logs` shows the output written
//! while the agent was gone.

use hypermesh_tests::agent;
use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::node_env;

use std::process::Stdio;

use agent::condition;
use containerd::{PrivateContainerd, TEST_IMAGE};
use hmctl::Hmctl;
use hypermesh_api::Api;
use hypermesh_api::v1::{self, InstancePhase, Node, RestartPolicy};
use hypermesh_tests::{InProcessApiServer, bin_path, wait_for};
use node_env::{NODE, TIMEOUT};

/// Starts `hm-agent` as a process against the apiserver and containerd.
fn spawn_agent(
    server: &str,
    containerd: &PrivateContainerd,
    state: &std::path::Path,
    images: &std::path::Path,
) -> tokio::process::Child {
    tokio::process::Command::new(bin_path("hm-agent"))
        .args(["--server", server, "--node-name", NODE])
        .arg("--state-dir")
        .arg(state)
        .arg("--containerd-socket")
        .arg(containerd.socket())
        .arg("--image-dir")
        .arg(images)
        .args(["--heartbeat-interval", "300ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hm-agent")
}

#[tokio::test]
async fn killed_agent_restarts_and_adopts_its_running_containers() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let containerd = PrivateContainerd::start();
    let images = containerd.image_dir();
    let state = tempfile::tempdir().expect("state dir");
    let mut agent = spawn_agent(server.url(), &containerd, state.path(), images.path());
    let nodes: Api<Node> = server.api();
    wait_for(TIMEOUT, || async {
        let n = nodes.get("", NODE).await.ok()?;
        (condition(&n, "Ready")?.status == "True").then_some(())
    })
    .await
    .expect("agent registers a Ready node");

    let instances = server.api::<v1::Instance>();
    let names = ["tick-a", "tick-b", "tick-c"];
    for name in names {
        let spec = v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: TEST_IMAGE.into(),
                command: [
                    "sh",
                    "-c",
                    "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                ..Default::default()
            }],
            restart_policy: RestartPolicy::Always as i32,
            termination_grace_period_seconds: 1,
            ..Default::default()
        };
        instances
            .create(&v1::Instance {
                metadata: Some(v1::ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                spec: Some(spec),
                status: None,
            })
            .await
            .expect("create");
        instances
            .bind(v1::BindRequest {
                namespace: "default".into(),
                name: name.into(),
                node_name: NODE.into(),
                ..Default::default()
            })
            .await
            .expect("bind");
    }
    let running = |i: &v1::Instance| {
        i.status
            .as_ref()
            .is_some_and(|s| s.phase == InstancePhase::Running as i32)
    };
    wait_for(TIMEOUT, || async {
        let (all, _) = instances.list_all(Default::default()).await.ok()?;
        (all.len() == 3 && all.iter().all(running)).then_some(())
    })
    .await
    .expect("three Instances run");

    let ctr = |args: &[&str]| containerd.ctr(args);
    // `ctr tasks ls` lists in no fixed order: compare sorted lines.
    let tasks = || {
        let mut lines: Vec<String> = ctr(&["tasks", "ls"]).lines().map(str::to_string).collect();
        lines.sort();
        lines.join("\n")
    };
    let tasks_before = tasks();
    let count = |text: &str| text.lines().filter(|l| l.contains("RUNNING")).count();
    assert_eq!(count(&tasks_before), 3, "{tasks_before}");

    let hmctl = Hmctl::new(server.url());
    let last_tick = |out: &str| -> u64 {
        out.lines()
            .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let before = last_tick(&hmctl.run(&["logs", "tick-a"]).await.ok().stdout);

    // kill -9: no chance to clean up. The containers and their loggers carry on.
    agent.start_kill().expect("kill -9");
    agent.wait().await.expect("agent exits");
    let log_dir = state.path().join("logs");
    let tick_a_log = std::fs::read_dir(&log_dir)
        .expect("log dir")
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("default_tick-a_")
        })
        .map(|e| hypermesh_agent::logs::run_log(&e.path().join("main"), 0))
        .expect("tick-a's log");
    let written_while_gone = wait_for(TIMEOUT, || async {
        let text = std::fs::read_to_string(&tick_a_log).ok()?;
        let lines = text.lines().count() as u64;
        (lines >= before + 10).then_some(lines)
    })
    .await
    .expect("the container keeps logging without the agent");
    assert!(written_while_gone >= before + 10);

    let mut agent = spawn_agent(server.url(), &containerd, state.path(), images.path());
    // The new agent has registered, watched its Instances and heartbeated once its Lease
    // is renewed after the kill; by then it had every chance to (wrongly) recreate.
    let leases = server.api::<v1::Lease>();
    let killed_at = hypermesh_api::time::now();
    wait_for(TIMEOUT, || async {
        let lease = leases
            .get("hypermesh-system", &format!("node-{NODE}"))
            .await
            .ok()?;
        let renewed = lease.spec?.renew_time?;
        ((renewed.seconds, renewed.nanos) > (killed_at.seconds, killed_at.nanos)).then_some(())
    })
    .await
    .expect("the restarted agent renews its Lease");
    // Adopted, not recreated: the same three tasks (same pids), still running, no
    // restart counted, and no extra container.
    let settled = wait_for(TIMEOUT, || async {
        let (all, _) = instances.list_all(Default::default()).await.ok()?;
        let ok = all.iter().all(|i| {
            running(i)
                && i.status.as_ref().is_some_and(|s| {
                    s.container_statuses
                        .iter()
                        .all(|c| c.restart_count == 0 && c.ready)
                })
        });
        ok.then_some(all)
    })
    .await
    .expect("Instances still Running after the restart");
    assert_eq!(settled.len(), 3);
    let tasks_after = tasks();
    assert_eq!(tasks_after, tasks_before, "same tasks with the same pids");
    assert_eq!(ctr(&["containers", "ls", "-q"]).lines().count(), 3);

    // The output written while the agent was down is in `hmctl logs`.
    let after = last_tick(&hmctl.run(&["logs", "tick-a"]).await.ok().stdout);
    assert!(after >= before + 10, "before {before}, after {after}");
    agent.start_kill().expect("stop agent");
    let _ = agent.wait().await;
}
