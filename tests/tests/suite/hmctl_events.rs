//! Story: the scheduler records `Scheduled` for an Instance it binds and
//! `FailedScheduling` with the count per filter for one that fits nowhere
//! (`0/3 nodes are available: 2 insufficient cpu, 1 node(s) cordoned.`);
//! `hmctl get events --for instance/NAME` shows only that object's Events as a table
//! (LAST SEEN, TYPE, REASON, OBJECT, COUNT, MESSAGE), and `-w --for` follows new ones.

use hypermesh_tests::hmctl;
use hypermesh_tests::scheduler as sim;

use hmctl::{COMMAND_TIMEOUT, Hmctl, read_until};
use sim::SimCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_events_for_one_object_shows_scheduling_and_follows_new_ones() {
    let cluster = SimCluster::start().await;
    cluster
        .add_node(sim::node("small-a", "1", "4Gi").build())
        .await;
    cluster
        .add_node(sim::node("small-b", "1", "4Gi").build())
        .await;
    cluster
        .add_node(
            sim::node("big-cordoned", "64", "64Gi")
                .unschedulable()
                .build(),
        )
        .await;
    cluster.add(sim::instance("fits").cpu("500m").build()).await;
    cluster.add(sim::instance("too-big").cpu("8").build()).await;
    cluster.wait_bound("default", "fits").await;
    let failed = cluster
        .wait_event("default", "too-big", "FailedScheduling")
        .await;
    assert_eq!(
        failed.message,
        "0/3 nodes are available: 2 insufficient cpu, 1 node(s) cordoned."
    );
    let scheduled = cluster.wait_event("default", "fits", "Scheduled").await;
    assert!(
        scheduled
            .message
            .starts_with("Successfully assigned default/fits to small-"),
        "{}",
        scheduled.message
    );
    assert_eq!(scheduled.r#type, "Normal");

    let hmctl = Hmctl::new(cluster.server.url());
    let out = hmctl
        .run(&["get", "events", "--for", "instance/too-big"])
        .await
        .ok();
    let lines = out.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "LAST", "SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"
        ],
        "{}",
        out.stdout
    );
    assert_eq!(lines.len(), 2, "only too-big's Event:\n{}", out.stdout);
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells[1..5],
        ["Warning", "FailedScheduling", "instance/too-big", "1"],
        "{}",
        out.stdout
    );
    assert!(
        lines[1].ends_with("0/3 nodes are available: 2 insufficient cpu, 1 node(s) cordoned."),
        "{}",
        out.stdout
    );

    // Without --for: both, oldest first by when they last happened.
    let all = hmctl.run(&["get", "events"]).await.ok();
    assert!(all.stdout.contains("instance/fits"), "{}", all.stdout);
    assert!(all.stdout.contains("instance/too-big"), "{}", all.stdout);

    // Bad input names the flag.
    let bad = hmctl
        .run(&["get", "events", "--for", "instance"])
        .await
        .failed();
    assert!(
        bad.stderr.contains("--for: expected KIND/NAME"),
        "{}",
        bad.stderr
    );
    let bad = hmctl
        .run(&["get", "instances", "--for", "instance/x"])
        .await
        .failed();
    assert!(
        bad.stderr.contains("--for: only applies to events"),
        "{}",
        bad.stderr
    );

    // -w --for: an Instance created afterwards shows up once it is scheduled, and
    // nothing about other objects does.
    let (mut child, mut lines) = hmctl.spawn(&["get", "events", "-w", "--for", "instance/late"]);
    cluster
        .add(sim::instance("other").cpu("100m").build())
        .await;
    cluster.add(sim::instance("late").cpu("100m").build()).await;
    let seen = read_until(&mut lines, COMMAND_TIMEOUT, |l| l.contains("Scheduled"))
        .await
        .expect("the Scheduled Event of late is followed");
    assert!(
        seen.iter().all(|l| !l.contains("instance/other")),
        "{seen:#?}"
    );
    assert!(
        seen.last().is_some_and(|l| l.contains("instance/late")),
        "{seen:#?}"
    );
    child.kill().await.expect("stop the watch");
}
