//! Probes on a real containerd: a TCP readiness probe (connecting inside the container's
//! own network namespace) keeps the container and the Instance's `Ready` condition false
//! until the port listens; a failing TCP liveness probe kills the container, which the
//! restart policy restarts with "Liveness probe failed" in its last state; a passing one
//! leaves it alone. Exec probes (`test -f …` run in the container) do the same.

use hypermesh_tests::instance;
use hypermesh_tests::node_env;

use std::time::{Duration, Instant};

use hypermesh_api::v1::{self, InstancePhase, RestartPolicy};
use instance::{container_status, ready_condition, running, sh};
use node_env::Env;

fn tcp_probe(port: u32, period_seconds: u32, failure_threshold: u32) -> v1::Probe {
    v1::Probe {
        tcp_socket: Some(v1::TcpSocketAction { port }),
        period_seconds,
        failure_threshold,
        ..Default::default()
    }
}

fn spec(containers: Vec<v1::Container>, volumes: Vec<v1::Volume>) -> v1::InstanceSpec {
    v1::InstanceSpec {
        containers,
        volumes,
        restart_policy: RestartPolicy::Always as i32,
        termination_grace_period_seconds: 1,
        ..Default::default()
    }
}

/// Polls the Instance for `window`, failing if `bad` ever holds (for "stays so" checks;
/// `window` spans several probe periods).
async fn never_during(
    env: &Env,
    name: &str,
    window: Duration,
    what: &str,
    bad: impl Fn(&v1::InstanceStatus) -> bool,
) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        let i = env
            .instances()
            .get("default", name)
            .await
            .expect("instance");
        let status = i.status.unwrap_or_default();
        assert!(!bad(&status), "{what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_tcp_readiness_probe_makes_the_instance_ready_once_the_port_listens() {
    let env = Env::start().await;
    // The test decides when the server starts: it creates `go` in a hostPath dir.
    let control = tempfile::tempdir().expect("control dir");
    let mut web = sh(
        "web",
        "until [ -f /control/go ]; do sleep 0.1; done; exec httpd -f -p 8080",
    );
    web.readiness_probe = Some(tcp_probe(8080, 1, 1));
    web.volume_mounts = vec![v1::VolumeMount {
        name: "control".into(),
        mount_path: "/control".into(),
        read_only: true,
    }];
    let volume = v1::Volume {
        name: "control".into(),
        source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
            path: control.path().display().to_string(),
        })),
    };
    env.run_spec("web", spec(vec![web], vec![volume])).await;
    let started = env
        .wait_status("web", "RUNNING", |s| {
            s.phase == InstancePhase::Running as i32 && running(s, "web")
        })
        .await;
    let status = started.status.as_ref().expect("status");
    assert!(!container_status(status, "web").expect("web").ready);
    assert_eq!(ready_condition(status), Some("False"));
    // Three probe periods with nothing listening: still not ready.
    never_during(
        &env,
        "web",
        Duration::from_secs(3),
        "ready before the port listens",
        |s| {
            container_status(s, "web").is_some_and(|c| c.ready)
                || ready_condition(s) == Some("True")
        },
    )
    .await;

    std::fs::write(control.path().join("go"), "").expect("start the server");
    let ready = env
        .wait_status("web", "Ready once httpd listens", |s| {
            ready_condition(s) == Some("True")
        })
        .await;
    let status = ready.status.as_ref().expect("status");
    let web = container_status(status, "web").expect("web");
    assert!(web.ready);
    assert_eq!(web.restart_count, 0, "readiness never restarts");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .expect("Ready");
    assert_eq!(condition.reason, "ContainersReady");
    env.stop().await;
}

#[tokio::test]
async fn a_failing_tcp_liveness_probe_restarts_the_container() {
    let env = Env::start().await;
    let mut deaf = sh("deaf", "exec sleep 300");
    deaf.liveness_probe = Some(tcp_probe(8080, 1, 2));
    env.run_spec("deaf", spec(vec![deaf], vec![])).await;
    let restarted = env
        .wait_status("deaf", "restarted by its liveness probe", |s| {
            container_status(s, "deaf").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    let status = restarted.status.as_ref().expect("status");
    let c = container_status(status, "deaf").expect("deaf");
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last state terminated");
    assert!(
        last.message
            .starts_with("Liveness probe failed: dial tcp 127.0.0.1:8080: "),
        "{last:?}"
    );
    assert_eq!(
        last.exit_code, 137,
        "sleep ignores SIGTERM as pid 1: killed after the grace"
    );
    // Restarted, and it runs again.
    env.wait_status("deaf", "running again", |s| running(s, "deaf"))
        .await;
    env.stop().await;
}

#[tokio::test]
async fn a_passing_tcp_liveness_probe_leaves_the_container_running() {
    let env = Env::start().await;
    let mut web = sh("web", "exec httpd -f -p 8080");
    web.liveness_probe = Some(tcp_probe(8080, 1, 3));
    web.readiness_probe = Some(tcp_probe(8080, 1, 1));
    env.run_spec("alive", spec(vec![web], vec![])).await;
    env.wait_status("alive", "Ready", |s| ready_condition(s) == Some("True"))
        .await;
    never_during(
        &env,
        "alive",
        Duration::from_secs(4),
        "restarted or unready",
        |s| container_status(s, "web").is_none_or(|c| c.restart_count > 0 || !c.ready),
    )
    .await;
    env.stop().await;
}

fn exec_probe(command: &[&str], period_seconds: u32, failure_threshold: u32) -> v1::Probe {
    v1::Probe {
        exec: Some(v1::ExecAction {
            command: command.iter().map(|s| s.to_string()).collect(),
        }),
        period_seconds,
        failure_threshold,
        ..Default::default()
    }
}

#[tokio::test]
async fn an_exec_readiness_probe_makes_the_instance_ready_once_the_file_exists() {
    let env = Env::start().await;
    let control = tempfile::tempdir().expect("control dir");
    let mut app = sh(
        "app",
        "until [ -f /control/go ]; do sleep 0.1; done; touch /tmp/ready; exec sleep 300",
    );
    app.readiness_probe = Some(exec_probe(&["test", "-f", "/tmp/ready"], 1, 1));
    app.volume_mounts = vec![v1::VolumeMount {
        name: "control".into(),
        mount_path: "/control".into(),
        read_only: true,
    }];
    let volume = v1::Volume {
        name: "control".into(),
        source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
            path: control.path().display().to_string(),
        })),
    };
    env.run_spec("app", spec(vec![app], vec![volume])).await;
    env.wait_status("app", "RUNNING", |s| running(s, "app"))
        .await;
    never_during(
        &env,
        "app",
        Duration::from_secs(3),
        "ready before /tmp/ready exists",
        |s| {
            container_status(s, "app").is_some_and(|c| c.ready)
                || ready_condition(s) == Some("True")
        },
    )
    .await;
    std::fs::write(control.path().join("go"), "").expect("let the app get ready");
    let ready = env
        .wait_status("app", "Ready once /tmp/ready exists", |s| {
            ready_condition(s) == Some("True")
        })
        .await;
    let app = container_status(ready.status.as_ref().expect("status"), "app").expect("app");
    assert!(app.ready);
    assert_eq!(app.restart_count, 0);
    env.stop().await;
}

#[tokio::test]
async fn a_failing_exec_liveness_probe_restarts_the_container() {
    let env = Env::start().await;
    let mut app = sh(
        "app",
        "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 300",
    );
    app.liveness_probe = Some(exec_probe(&["test", "-f", "/tmp/alive"], 1, 1));
    env.run_spec("wilting", spec(vec![app], vec![])).await;
    let restarted = env
        .wait_status("wilting", "restarted by its liveness probe", |s| {
            container_status(s, "app").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    let c = container_status(restarted.status.as_ref().expect("status"), "app").expect("app");
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last state terminated");
    assert_eq!(
        last.message,
        "Liveness probe failed: command [\"test\", \"-f\", \"/tmp/alive\"] exited with 1",
        "{last:?}"
    );
    env.stop().await;
}
