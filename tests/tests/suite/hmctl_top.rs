//! Story: an Instance fills 32 MiB of page cache in its container on a real
//! containerd; the agent reports what its cgroup holds, and `hmctl top instances`
//! shows it — the bytes match the cgroup's own memory reading within a tolerance,
//! with the percentage of the Instance's memory limit — while `hmctl top nodes` shows
//! the host with the CPU it used.

use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::node_env;

use std::time::Duration;

use hypermesh_api::Resource;
use hypermesh_api::v1::usage_service_client::UsageServiceClient;
use hypermesh_api::v1::{InstancePhase, RestartPolicy, UsageListRequest};
use hypermesh_containers::container::cgroup_usage;
use hypermesh_tests::wait_for;
use node_env::{Env, NODE, TIMEOUT};

/// What the memory of one Instance may differ by between the agent's sample and ours.
const TOLERANCE: u64 = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_what_the_cgroups_hold() {
    let env = Env::start_with(|c| c.usage_interval = Duration::from_millis(300)).await;
    let instance = env
        .run_limited(
            "filler",
            containerd::TEST_IMAGE,
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/tmp/fill bs=1048576 count=32 2>/dev/null; sleep 3600",
            ],
            RestartPolicy::Always,
            "256Mi",
        )
        .await;
    env.wait_status("filler", "running", |s| {
        s.phase == InstancePhase::Running as i32
    })
    .await;
    let meta = instance.meta();
    let id =
        hypermesh_agent::reconcile::container_id(&meta.namespace, &meta.name, &meta.uid, "main");

    // The reported bytes, once the 32 MiB are in, against the cgroup read right after.
    let usage = UsageServiceClient::new(env.server.channel());
    let (reported, cgroup) = wait_for(TIMEOUT, || {
        let mut usage = usage.clone();
        let id = id.clone();
        async move {
            let items = usage
                .list(UsageListRequest {
                    kind: "instances".into(),
                    namespace: "default".into(),
                })
                .await
                .ok()?
                .into_inner()
                .items;
            let reported = items.into_iter().find(|u| u.name == "filler")?;
            let cgroup = cgroup_usage(&id)?.memory_bytes;
            (reported.memory_bytes >= 32 << 20 && reported.cpu_millicores.is_some())
                .then_some((reported.memory_bytes, cgroup))
        }
    })
    .await
    .expect("the agent reports the filler's memory");
    assert!(
        reported.abs_diff(cgroup) <= TOLERANCE,
        "reported {reported} bytes, the cgroup holds {cgroup}"
    );

    let hmctl = hmctl::Hmctl::new(env.server.url());
    let out = hmctl.run(&["top", "instances"]).await.ok();
    let lines = out.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"],
        "{}",
        out.stdout
    );
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("filler "))
        .unwrap_or_else(|| panic!("no filler row:\n{}", out.stdout))
        .split_whitespace()
        .collect();
    assert!(row[1].ends_with('m'), "cpu in millicores: {row:?}");
    let mebibytes: u64 = row[3]
        .strip_suffix("Mi")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("memory in Mi: {row:?}"));
    let cgroup = cgroup_usage(&id).expect("cgroup").memory_bytes;
    assert!(
        (mebibytes << 20).abs_diff(cgroup) <= TOLERANCE + (1 << 20),
        "hmctl says {mebibytes}Mi, the cgroup holds {cgroup} bytes"
    );
    let percent: u64 = row[4]
        .strip_suffix('%')
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("memory % of the 256Mi limit: {row:?}"));
    assert!((12..=16).contains(&percent), "32+ MiB of 256Mi: {row:?}");

    // The host: its CPU once two samples exist, and memory in use.
    let nodes = wait_for(TIMEOUT, || async {
        let out = hmctl.run(&["top", "nodes"]).await;
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{NODE} ")))?
            .to_string();
        (!row.contains("<unknown>")).then_some(row)
    })
    .await
    .expect("the node's usage with its CPU");
    let cells: Vec<&str> = nodes.split_whitespace().collect();
    assert!(
        cells[1].ends_with('m') && cells[2].ends_with('%'),
        "{nodes}"
    );
    assert!(cells[3] != "0Mi" && cells[4].ends_with('%'), "{nodes}");

    let missing = hmctl.run(&["top", "instances", "nope"]).await.failed();
    assert!(
        missing
            .stderr
            .contains("no usage reported for instances \"nope\""),
        "{}",
        missing.stderr
    );
    env.stop().await;
}
