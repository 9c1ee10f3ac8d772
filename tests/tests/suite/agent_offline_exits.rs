//! Containers that end while the agent is down, on a real containerd: one that exits
//! while containerd keeps its task gets containerd's exit time as `finishedAt` (not the
//! agent's restart time); after the whole cluster restarts with its containers gone
//! (`make up`'s purge, a host reboot), RESTARTS goes on from the run that ended rather
//! than starting again at 0, and each run keeps its own log.

use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::node_env;

use containerd::TEST_IMAGE;
use hmctl::Hmctl;
use hypermesh_api::v1::{self, InstancePhase, RestartPolicy};
use hypermesh_tests::agent::Agent;
use hypermesh_tests::wait_for;
use node_env::{Env, TIMEOUT};

fn container_id(instance: &v1::Instance) -> String {
    instance.status.as_ref().expect("status").container_statuses[0]
        .container_id
        .trim_start_matches("containerd://")
        .to_string()
}

fn main_status(s: &v1::InstanceStatus) -> Option<&v1::ContainerStatus> {
    s.container_statuses.first()
}

fn running_with(s: &v1::InstanceStatus, restarts: u32) -> bool {
    s.phase == InstancePhase::Running as i32
        && main_status(s).is_some_and(|c| {
            c.restart_count == restarts && c.state.as_ref().is_some_and(|st| st.running.is_some())
        })
}

fn key(t: &pbjson_types::Timestamp) -> (i64, i32) {
    (t.seconds, t.nanos)
}

#[tokio::test]
async fn a_container_that_died_while_the_agent_was_down_gets_its_real_finish_time() {
    let mut env = Env::start().await;
    env.run(
        "lonely",
        TEST_IMAGE,
        &["sh", "-c", "echo up; exec sleep 600"],
        RestartPolicy::Never,
    )
    .await;
    let running = env
        .wait_status("lonely", "running", |s| running_with(s, 0))
        .await;
    let id = container_id(&running);

    let config = env.stop_agent().await;
    env.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
    wait_for(TIMEOUT, || async {
        env.ctr(&["tasks", "ls"])
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("STOPPED"))
            .then_some(())
    })
    .await
    .expect("the task stops while the agent is down");
    // Everything the restarted agent does happens after this.
    let agent_back = hypermesh_api::time::now();
    env.agent = Some(Agent::start(config));

    let done = env
        .wait_status("lonely", "failed", |s| {
            s.phase == InstancePhase::Failed as i32
        })
        .await;
    let status = done.status.expect("status");
    let terminated = main_status(&status)
        .and_then(|c| c.state.as_ref())
        .and_then(|st| st.terminated.clone())
        .expect("terminated");
    assert_eq!(terminated.exit_code, 137, "{terminated:?}");
    let finished = terminated.finished_at.expect("finishedAt");
    let started = terminated.started_at.expect("startedAt");
    assert!(
        key(&finished) < key(&agent_back),
        "finishedAt {finished:?} is the exit containerd recorded, before the agent came back at {agent_back:?}"
    );
    assert!(key(&started) < key(&finished), "{terminated:?}");
    env.stop().await;
}

#[tokio::test]
async fn restarts_survive_a_cluster_restart_that_lost_the_containers() {
    let mut env = Env::start().await;
    let hmctl = Hmctl::new(env.server.url());
    env.run(
        "survivor",
        TEST_IMAGE,
        &[
            "sh",
            "-c",
            "echo run at $(cat /proc/uptime); exec sleep 600",
        ],
        RestartPolicy::Always,
    )
    .await;
    env.wait_status("survivor", "running", |s| running_with(s, 0))
        .await;
    wait_for(TIMEOUT, || async {
        let out = hmctl.run(&["logs", "survivor"]).await;
        out.stdout.contains("run at").then_some(())
    })
    .await
    .expect("the first run logs");

    // The whole cluster goes down, and its containers with it.
    let config = env.stop_agent().await;
    env.containerd.purge();
    assert_eq!(env.ctr(&["containers", "ls", "-q"]).trim(), "");
    let down = hypermesh_api::time::now();
    env.server.restart().await.expect("apiserver restarts");
    env.agent = Some(Agent::start(config));

    let back = env
        .wait_status("survivor", "running again, one restart counted", |s| {
            running_with(s, 1)
        })
        .await;
    let status = back.status.expect("status");
    let last = main_status(&status)
        .and_then(|c| c.last_state.as_ref())
        .and_then(|st| st.terminated.clone())
        .expect("lastState.terminated");
    assert_eq!(last.reason, "ContainerStatusUnknown", "{last:?}");
    let finished = last.finished_at.expect("finishedAt");
    assert!(
        key(&finished) < key(&down),
        "ended when its output did: {last:?}"
    );

    // Each run has its own log: the current one, and the previous one before it.
    let current = wait_for(TIMEOUT, || async {
        let out = hmctl.run(&["logs", "survivor"]).await;
        (out.code == 0 && out.stdout.contains("run at")).then_some(out)
    })
    .await
    .expect("the second run logs");
    assert_eq!(current.lines().len(), 1, "{current:#?}");
    let previous = hmctl.run(&["logs", "survivor", "--previous"]).await.ok();
    assert_eq!(previous.lines().len(), 1, "{previous:#?}");
    assert_ne!(previous.lines(), current.lines());
    env.stop().await;
}
