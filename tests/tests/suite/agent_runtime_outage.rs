//! containerd stops under a running agent and comes back. Within a few heartbeats the
//! Node says `RuntimeReady=False` (`ContainerdUnreachable`, naming the socket and the
//! error) and the scheduler places nothing new there: an Instance left to it stays
//! Pending with `node(s) runtime not ready`. What is bound to the node is not failed:
//! the running container keeps running and an Instance bound meanwhile waits. Once
//! containerd is back `RuntimeReady` is True again, the running container is adopted as
//! it is (same task pid, restartCount 0, still Running), the waiting and the pending
//! Instances run, and exits are seen again (a killed container is restarted). Its exec
//! probes, which cannot run while containerd is away, count neither way: it stays
//! ready, and its liveness probe never failed.

use hypermesh_tests::containerd;
use hypermesh_tests::node_env;

use std::time::{Duration, Instant};

use containerd::TEST_IMAGE;
use hypermesh_agent::reconcile::container_id;
use hypermesh_api::v1::{
    self, Condition, Instance, InstancePhase, Node, ObjectMeta, RestartPolicy,
};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::wait_for;
use node_env::{Env, NODE, TIMEOUT};

/// How long the Node may take to show containerd's state: a few heartbeats (300 ms
/// apart in tests, each probing the socket for at most 1 s).
const CONDITION_TIMEOUT: Duration = Duration::from_secs(10);

fn id_of(instance: &Instance) -> String {
    let m = instance.meta();
    container_id(&m.namespace, &m.name, &m.uid, "main")
}

/// Waits until the Node's RuntimeReady condition has `status`; returns it.
async fn wait_runtime_ready(nodes: &Api<Node>, status: &str) -> Condition {
    let found = wait_for(CONDITION_TIMEOUT, || async {
        let node = nodes.get("", NODE).await.ok()?;
        node.status?
            .conditions
            .into_iter()
            .find(|c| c.r#type == "RuntimeReady" && c.status == status)
    })
    .await;
    match found {
        Ok(c) => c,
        Err(_) => panic!(
            "RuntimeReady={status} within {CONDITION_TIMEOUT:?}; node conditions: {:?}",
            nodes
                .get("", NODE)
                .await
                .ok()
                .and_then(|n| n.status)
                .map(|s| s.conditions)
        ),
    }
}

/// An Instance sleeping for a while, left to the scheduler (not bound).
fn unbound(name: &str) -> Instance {
    Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: TEST_IMAGE.into(),
                command: vec!["sleep".into(), "300".into()],
                resources: Some(v1::ResourceRequirements {
                    cpu: "100m".into(),
                    memory: "16Mi".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            restart_policy: RestartPolicy::Always as i32,
            termination_grace_period_seconds: 1,
            ..Default::default()
        }),
        status: None,
    }
}

/// An exec probe of `true` every second, acting on the first failure.
fn eager_probe() -> v1::Probe {
    v1::Probe {
        exec: Some(v1::ExecAction {
            command: vec!["true".into()],
        }),
        period_seconds: 1,
        failure_threshold: 1,
        ..Default::default()
    }
}

/// `steady`: sleeps, with readiness and liveness probes that pass while they can run.
fn probed_sleeper() -> v1::InstanceSpec {
    let mut spec = unbound("steady").spec.expect("spec");
    let container = &mut spec.containers[0];
    container.readiness_probe = Some(eager_probe());
    container.liveness_probe = Some(eager_probe());
    spec
}

/// The container is running and ready, and the Instance's Ready condition is True.
fn serving(s: &v1::InstanceStatus) -> bool {
    running(s)
        && s.container_statuses.first().is_some_and(|c| c.ready)
        && s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
}

fn running(s: &v1::InstanceStatus) -> bool {
    s.phase == InstancePhase::Running as i32
}

fn restarts(s: &v1::InstanceStatus) -> u32 {
    s.container_statuses.first().map_or(0, |c| c.restart_count)
}

#[tokio::test]
async fn instances_ride_out_a_containerd_restart() {
    let env = Env::start().await;
    let nodes = env.server.api::<Node>();
    let instances = env.instances();
    wait_runtime_ready(&nodes, "True").await;

    let steady = env.run_spec("steady", probed_sleeper()).await;
    env.wait_status("steady", "RUNNING and ready", serving)
        .await;
    let steady_id = id_of(&steady);
    let pid = env.task_pid(&steady_id).expect("steady's task runs");

    // containerd goes away; its shims keep the containers running.
    env.containerd.stop();
    let down = wait_runtime_ready(&nodes, "False").await;
    assert_eq!(down.reason, "ContainerdUnreachable");
    let socket = env.containerd.socket().display().to_string();
    assert!(
        down.message.contains(&socket) && down.message.len() > socket.len() + 15,
        "names the socket and the error: {}",
        down.message
    );

    // Bound meanwhile: it waits for containerd instead of failing.
    env.run("late", TEST_IMAGE, &["sleep", "300"], RestartPolicy::Always)
        .await;
    // Left to the scheduler (started only now, so it does not race the direct binds
    // above): it stays Pending and says why.
    let _stop_scheduler = hypermesh_tests::scheduler::spawn_default(env.server.channel());
    instances.create(&unbound("placed")).await.expect("create");
    let why = wait_for(TIMEOUT, || async {
        let i = instances.get("default", "placed").await.ok()?;
        i.status?
            .conditions
            .into_iter()
            .find(|c| c.r#type == "Scheduled" && c.status == "False")
            .map(|c| c.message)
    })
    .await
    .expect("the scheduler says why it waits");
    assert_eq!(why, "0/1 nodes are available: 1 node(s) runtime not ready.");
    let placed = instances.get("default", "placed").await.expect("placed");
    assert_eq!(
        placed.spec.as_ref().map(|s| s.node_name.as_str()),
        Some(""),
        "not bound to a node whose runtime is down"
    );
    let late = instances.get("default", "late").await.expect("late");
    let phase = late.status.as_ref().map_or(0, |s| s.phase);
    assert!(
        [
            InstancePhase::Pending as i32,
            InstancePhase::Scheduled as i32
        ]
        .contains(&phase),
        "late waits, not failed: {:?}",
        late.status
    );
    let status = instances
        .get("default", "steady")
        .await
        .expect("steady")
        .status
        .expect("status");
    assert!(serving(&status) && restarts(&status) == 0, "{status:?}");
    // Its probes cannot run meanwhile: for several probe periods it stays running and
    // ready, not restarted.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let status = instances
            .get("default", "steady")
            .await
            .expect("steady")
            .status
            .expect("status");
        assert!(
            serving(&status) && restarts(&status) == 0,
            "steady while containerd is down: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // containerd is back.
    env.containerd.restart();
    wait_runtime_ready(&nodes, "True").await;
    env.wait_status("late", "RUNNING after containerd is back", running)
        .await;
    let placed = env
        .wait_status("placed", "placed and RUNNING", running)
        .await;
    assert_eq!(
        placed.spec.as_ref().map(|s| s.node_name.as_str()),
        Some(NODE)
    );
    let status = instances
        .get("default", "steady")
        .await
        .expect("steady")
        .status
        .expect("status");
    assert!(running(&status), "{status:?}");
    assert_eq!(restarts(&status), 0, "adopted, not restarted: {status:?}");
    assert_eq!(env.task_pid(&steady_id), Some(pid), "the same process runs");

    // Exits are seen again: a killed container is restarted.
    env.ctr(&["tasks", "kill", "--signal", "SIGKILL", &steady_id]);
    let status = env
        .wait_status("steady", "restarted after its kill", |s| {
            restarts(s) == 1
                && s.container_statuses[0]
                    .state
                    .as_ref()
                    .is_some_and(|st| st.running.is_some())
        })
        .await
        .status
        .expect("status");
    let last = status.container_statuses[0]
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("the killed run is the last state");
    assert_eq!(last.exit_code, 137);
    assert!(
        !last.message.contains("Liveness probe failed"),
        "the liveness probe never failed: {last:?}"
    );
    env.stop().await;
}
