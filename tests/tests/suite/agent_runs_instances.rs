//! The agent runs the Instances bound to its node on a real (private) containerd: a
//! container that exits 0 makes its Instance SUCCEEDED with its output in the log file,
//! one exiting 3 makes it FAILED with exit code 3, deleting a running Instance removes
//! its container and snapshot, and a missing image is reported as `ImageNotFound`.

use hypermesh_tests::agent;
use hypermesh_tests::containerd;
use hypermesh_tests::node_env;

use agent::Agent;
use containerd::TEST_IMAGE;
use hypermesh_agent::reconcile::container_id;
use hypermesh_api::Resource;
use hypermesh_api::v1::{self, DeleteRequest, Instance, InstancePhase, Node, RestartPolicy};
use hypermesh_tests::wait_for;
use node_env::{Env, NODE, TIMEOUT};

fn terminated(status: &v1::InstanceStatus) -> Option<&v1::ContainerStateTerminated> {
    status
        .container_statuses
        .first()?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

fn id_of(instance: &Instance) -> String {
    let m = instance.meta();
    container_id(&m.namespace, &m.name, &m.uid, "main")
}

#[tokio::test]
async fn a_completed_instance_succeeds_with_its_output_logged() {
    let env = Env::start().await;
    let instance = env
        .run(
            "hello",
            TEST_IMAGE,
            &["sh", "-c", "echo hello from hypermesh; exit 0"],
            RestartPolicy::Never,
        )
        .await;
    let done = env
        .wait_status("hello", "SUCCEEDED", |s| {
            s.phase == InstancePhase::Succeeded as i32
        })
        .await;
    let status = done.status.as_ref().expect("status");
    let t = terminated(status).expect("terminated state");
    assert_eq!(t.exit_code, 0);
    assert_eq!(t.reason, "Completed");
    assert!(t.finished_at.is_some());
    assert!(status.start_time.is_some());
    let node = env.server.api::<Node>().get("", NODE).await.expect("node");
    let internal_ip = node
        .status
        .iter()
        .flat_map(|s| &s.addresses)
        .find(|a| a.r#type == "InternalIP")
        .map(|a| a.address.clone())
        .unwrap_or_default();
    assert_eq!(
        status.host_ip, internal_ip,
        "hostIP is the Node's InternalIP"
    );
    let address: std::net::Ipv6Addr = status.address.parse().expect("an IPv6 address");
    assert_eq!(
        address.segments()[..2],
        [0xfd48, 0x4d00],
        "global address in fd48:4d00::/32"
    );
    assert_eq!(
        status.container_statuses[0].container_id,
        format!("containerd://{}", id_of(&instance))
    );
    let log = env.log(&done, "main");
    assert!(log.contains("hello from hypermesh"), "log: {log:?}");
    // A finished Instance leaves no container behind.
    assert!(
        !env.ctr(&["containers", "ls", "-q"])
            .contains(&id_of(&instance))
    );
    env.stop().await;
}

#[tokio::test]
async fn a_failing_instance_fails_with_its_exit_code() {
    let env = Env::start().await;
    env.run(
        "three",
        TEST_IMAGE,
        &["sh", "-c", "exit 3"],
        RestartPolicy::Never,
    )
    .await;
    let done = env
        .wait_status("three", "FAILED", |s| {
            s.phase == InstancePhase::Failed as i32
        })
        .await;
    let t = terminated(done.status.as_ref().expect("status")).expect("terminated");
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason, "Error");
    env.stop().await;
}

#[tokio::test]
async fn deleting_a_running_instance_removes_its_container() {
    let env = Env::start().await;
    let instance = env
        .run(
            "sleeper",
            TEST_IMAGE,
            &["sleep", "300"],
            RestartPolicy::Always,
        )
        .await;
    let running = env
        .wait_status("sleeper", "RUNNING", |s| {
            s.phase == InstancePhase::Running as i32
                && s.container_statuses.first().is_some_and(|c| {
                    c.state.as_ref().is_some_and(|st| {
                        st.running.as_ref().is_some_and(|r| r.started_at.is_some())
                    })
                })
        })
        .await;
    let id = id_of(&instance);
    assert!(env.ctr(&["tasks", "ls", "-q"]).contains(&id), "task runs");
    env.instances()
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "sleeper".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    drop(running);
    wait_for(TIMEOUT, || async {
        let gone = !env.ctr(&["containers", "ls", "-q"]).contains(&id)
            && !env.ctr(&["snapshots", "ls"]).contains(&id);
        gone.then_some(())
    })
    .await
    .expect("container and snapshot removed after delete");
    env.stop().await;
}

#[tokio::test]
async fn a_missing_image_is_reported_as_image_not_found() {
    let env = Env::start().await;
    env.run(
        "ghost",
        "hypermesh/nothing:latest",
        &["true"],
        RestartPolicy::Never,
    )
    .await;
    let waiting = env
        .wait_status("ghost", "waiting ImageNotFound", |s| {
            s.container_statuses.first().is_some_and(|c| {
                c.state.as_ref().is_some_and(|st| {
                    st.waiting
                        .as_ref()
                        .is_some_and(|w| w.reason == "ImageNotFound")
                })
            })
        })
        .await;
    let status = waiting.status.as_ref().expect("status");
    assert_eq!(status.phase, InstancePhase::Scheduled as i32);
    let message = &status.container_statuses[0]
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .expect("waiting")
        .message;
    assert!(message.contains("hypermesh/nothing:latest"), "{message}");
    assert!(env.ctr(&["containers", "ls", "-q"]).trim().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn a_crashing_container_is_restarted_with_back_off() {
    let env = Env::start().await;
    env.run(
        "crasher",
        TEST_IMAGE,
        &["sh", "-c", "exit 1"],
        RestartPolicy::OnFailure,
    )
    .await;
    let crashing = env
        .wait_status("crasher", "CrashLoopBackOff after 2 restarts", |s| {
            s.container_statuses.first().is_some_and(|c| {
                c.restart_count >= 2
                    && c.state.as_ref().is_some_and(|st| {
                        st.waiting
                            .as_ref()
                            .is_some_and(|w| w.reason == "CrashLoopBackOff")
                    })
            })
        })
        .await;
    let c = &crashing.status.as_ref().expect("status").container_statuses[0];
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last state terminated");
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.reason, "Error");
    assert_ne!(
        crashing.status.as_ref().map(|s| s.phase),
        Some(InstancePhase::Failed as i32),
        "OnFailure keeps restarting"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_adopts_running_containers_and_cleans_up_deleted_ones() {
    let mut env = Env::start().await;
    let kept = env
        .run("kept", TEST_IMAGE, &["sleep", "300"], RestartPolicy::Always)
        .await;
    let gone = env
        .run("gone", TEST_IMAGE, &["sleep", "300"], RestartPolicy::Always)
        .await;
    for name in ["kept", "gone"] {
        env.wait_status(name, "RUNNING", |s| {
            s.phase == InstancePhase::Running as i32
        })
        .await;
    }
    let (kept_id, gone_id) = (id_of(&kept), id_of(&gone));
    let pid = env.task_pid(&kept_id).expect("kept task runs");

    let config = env.stop_agent().await;
    env.instances()
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "gone".into(),
            ..Default::default()
        })
        .await
        .expect("delete while the agent is down");
    assert!(env.task_pid(&gone_id).is_some(), "nobody stopped it yet");
    env.agent = Some(Agent::start(config));

    wait_for(TIMEOUT, || async {
        (!env.ctr(&["containers", "ls", "-q"]).contains(&gone_id)).then_some(())
    })
    .await
    .expect("the deleted Instance's container is removed after the restart");
    let containers = env.ctr(&["containers", "ls", "-q"]);
    assert_eq!(containers.lines().count(), 1, "no duplicates: {containers}");
    assert_eq!(env.task_pid(&kept_id), Some(pid), "adopted, not restarted");
    let status = env
        .instances()
        .get("default", "kept")
        .await
        .expect("kept")
        .status
        .expect("status");
    assert_eq!(status.phase, InstancePhase::Running as i32);
    assert_eq!(status.container_statuses[0].restart_count, 0);
    env.stop().await;
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_reported_as_oom_killed() {
    let env = Env::start().await;
    env.run_limited(
        "hog",
        TEST_IMAGE,
        &[
            "sh",
            "-c",
            "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
        RestartPolicy::Never,
        "16Mi",
    )
    .await;
    let done = env
        .wait_status("hog", "FAILED", |s| s.phase == InstancePhase::Failed as i32)
        .await;
    let t = terminated(done.status.as_ref().expect("status")).expect("terminated");
    assert_eq!(t.reason, "OOMKilled", "{t:?}");
    assert_eq!(t.exit_code, 137);
    env.stop().await;
}

#[tokio::test]
async fn a_bad_command_fails_with_a_clear_reason() {
    let env = Env::start().await;
    env.run(
        "badcmd",
        TEST_IMAGE,
        &["/no/such/program"],
        RestartPolicy::Never,
    )
    .await;
    let done = env
        .wait_status("badcmd", "FAILED", |s| {
            s.phase == InstancePhase::Failed as i32
        })
        .await;
    let t = terminated(done.status.as_ref().expect("status")).expect("terminated");
    assert_eq!(t.reason, "StartError", "{t:?}");
    assert!(t.message.contains("/no/such/program"), "{t:?}");
    assert!(env.ctr(&["containers", "ls", "-q"]).trim().is_empty());
    env.stop().await;
}
