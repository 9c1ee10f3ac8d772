//! End to end with a real agent: `hm-agent` registers and heartbeats against an
//! `hm-apiserver` process running its controllers (default settings). The agent is
//! killed with SIGKILL; within the default Lease duration (10 s, plus slack) the
//! Node is `Ready=Unknown` and tainted unreachable, and after the default eviction
//! grace its Instance is rescheduled onto a second (simulated) node. The agent has a
//! (private) containerd: the scheduler places nothing on a node whose `RuntimeReady`
//! is False.

use hypermesh_tests::containerd;
use hypermesh_tests::node_lifecycle;

use std::process::Stdio;
use std::time::{Duration, Instant};

use hypermesh_api::Api;
use hypermesh_api::v1::{Lease, Node};
use hypermesh_controllers::node_lifecycle::REASON_LEASE_EXPIRED;
use hypermesh_tests::{ApiServerProcess, bin_path, wait_for};
use node_lifecycle::{Heartbeats, node, ready, tainted, workload};

/// Registration includes hardware detection and proofs: give it time.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// The default Lease duration (10 s) plus the agent's heartbeat period and slack.
const NOT_READY_WITHIN: Duration = Duration::from_secs(15);
/// The default eviction grace (30 s) plus scheduling slack.
const RESCHEDULED_WITHIN: Duration = Duration::from_secs(60);

async fn node_where(nodes: &Api<Node>, name: &str, check: impl Fn(&Node) -> bool) -> Option<Node> {
    nodes.get("", name).await.ok().filter(|n| check(n))
}

#[tokio::test]
async fn killed_agent_node_goes_not_ready_and_its_instance_moves() {
    let server = ApiServerProcess::start_with_args(&["--controllers", "all"])
        .await
        .expect("hm-apiserver");
    let channel = server.channel().await.expect("channel");
    let nodes: Api<Node> = Api::new(channel.clone());
    let _stop_scheduler = hypermesh_tests::scheduler::spawn_default(channel.clone());

    let state = tempfile::tempdir().expect("state dir");
    let containerd = containerd::PrivateContainerd::start();
    let mut agent = tokio::process::Command::new(bin_path("hm-agent"))
        .arg("--server")
        .arg(server.url())
        .arg("--node-name")
        .arg("agent-a")
        .arg("--state-dir")
        .arg(state.path())
        .arg("--containerd-socket")
        .arg(containerd.socket())
        .env("HM_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hm-agent");

    let registered = wait_for(REGISTER_TIMEOUT, || {
        node_where(&nodes, "agent-a", |n| {
            ready(n).is_some_and(|c| c.status == "True") && !tainted(n)
        })
    })
    .await;
    assert!(registered.is_ok(), "agent-a never became Ready=True");

    // One replica, on the only node.
    let workloads: Api<hypermesh_api::v1::Workload> = Api::new(channel.clone());
    workloads
        .create(&workload("web", 1, vec![]))
        .await
        .expect("create workload");
    let instances: Api<hypermesh_api::v1::Instance> = Api::new(channel.clone());
    let placement = || async {
        let (items, _) = instances
            .list_all(hypermesh_api::v1::ListRequest {
                namespace: "default".into(),
                ..Default::default()
            })
            .await
            .ok()?;
        Some(
            items
                .into_iter()
                .filter(|i| {
                    i.metadata
                        .as_ref()
                        .is_some_and(|m| m.deletion_timestamp.is_none())
                })
                .map(|i| i.spec.map(|s| s.node_name).unwrap_or_default())
                .collect::<Vec<_>>(),
        )
    };
    wait_for(REGISTER_TIMEOUT, || async {
        placement().await.filter(|p| p == &["agent-a"])
    })
    .await
    .expect("the replica is bound to agent-a");

    // A second, simulated node to move to.
    hypermesh_tests::proofs::create_offering_node(
        &nodes,
        &Api::new(channel.clone()),
        node("sim-b"),
    )
    .await
    .expect("create sim-b");
    let _b = Heartbeats::start(Api::<Lease>::new(channel.clone()), "sim-b").await;

    agent.start_kill().expect("kill -9 hm-agent");
    agent.wait().await.expect("wait for hm-agent");
    let killed = Instant::now();
    let lapsed = wait_for(NOT_READY_WITHIN, || {
        node_where(&nodes, "agent-a", |n| {
            tainted(n) && ready(n).is_some_and(|c| c.status == "Unknown")
        })
    })
    .await
    .unwrap_or_else(|e| panic!("agent-a did not go NotReady: {e}"));
    let condition = ready(&lapsed).expect("Ready condition");
    assert_eq!(condition.reason, REASON_LEASE_EXPIRED);
    eprintln!(
        "agent-a marked Ready=Unknown {:?} after SIGKILL",
        killed.elapsed()
    );

    let moved = wait_for(RESCHEDULED_WITHIN, || async {
        placement().await.filter(|p| p == &["sim-b"])
    })
    .await;
    assert!(
        moved.is_ok(),
        "the replica should move to sim-b: {:?}",
        placement().await
    );
}
