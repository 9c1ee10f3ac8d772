//! The process user and the pids limit on a real containerd: `user: "1234:5678"` runs
//! the container as that uid and gid, a non-numeric user is the container's
//! `CreateContainerConfigError` naming `containers[i].user` (the Instance's other
//! containers run), and `--pids-limit` is the container cgroup's `pids.max`.

use hypermesh_tests::containerd;
use hypermesh_tests::instance;
use hypermesh_tests::node_env;

use containerd::{TEST_IMAGE, pids_limit_of};
use hypermesh_agent::reconcile::container_id;
use hypermesh_api::Resource;
use hypermesh_api::v1::{self, InstancePhase, RestartPolicy};
use instance::{finished_log_of, running, sh, waiting};
use node_env::Env;

fn spec(containers: Vec<v1::Container>, policy: RestartPolicy) -> v1::InstanceSpec {
    v1::InstanceSpec {
        containers,
        restart_policy: policy as i32,
        termination_grace_period_seconds: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_numeric_user_runs_the_container_as_that_uid_and_gid() {
    let env = Env::start().await;
    let mut c = sh("main", "echo uid=$(id -u) gid=$(id -g)");
    c.user = "1234:5678".into();
    env.run_spec("runas", spec(vec![c], RestartPolicy::Never))
        .await;
    let done = env
        .wait_status("runas", "SUCCEEDED", |s| {
            s.phase == InstancePhase::Succeeded as i32
        })
        .await;
    let log = finished_log_of(&env, &done, "main");
    assert!(log.contains("uid=1234 gid=5678"), "{log:?}");
    env.stop().await;
}

#[tokio::test]
async fn a_user_name_is_a_config_error_and_the_other_container_runs() {
    let env = Env::start().await;
    let mut named = sh("named", "id -u");
    named.user = "nobody".into();
    let fine = sh("fine", "sleep 300");
    env.run_spec("mixed", spec(vec![fine, named], RestartPolicy::Always))
        .await;
    let mixed = env
        .wait_status("mixed", "named waits, fine runs", |s| {
            running(s, "fine")
                && waiting(s, "named").is_some_and(|w| w.reason == "CreateContainerConfigError")
        })
        .await;
    let status = mixed.status.as_ref().expect("status");
    let w = waiting(status, "named").expect("waiting");
    assert_eq!(
        w.message,
        "containers[1].user: \"nobody\" is not a numeric uid[:gid]"
    );
    assert_eq!(status.phase, InstancePhase::Running as i32);
    assert!(
        status
            .container_statuses
            .iter()
            .all(|c| c.restart_count == 0),
        "{status:?}"
    );
    let ready = status.conditions.iter().find(|c| c.r#type == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("False"));
    env.stop().await;
}

#[tokio::test]
async fn the_pids_limit_is_the_container_cgroups_pids_max() {
    let env = Env::start_with(|config| config.pids_limit = Some(77)).await;
    let instance = env
        .run(
            "limited",
            TEST_IMAGE,
            &["sleep", "300"],
            RestartPolicy::Always,
        )
        .await;
    env.wait_status("limited", "RUNNING", |s| running(s, "main"))
        .await;
    let m = instance.meta();
    let id = container_id(&m.namespace, &m.name, &m.uid, "main");
    let pid: u32 = env
        .task_pid(&id)
        .expect("task runs")
        .parse()
        .expect("numeric pid");
    assert_eq!(pids_limit_of(pid), Some(77));
    env.stop().await;
}
