//! `hmctl get -w` as a child process against a real `hm-apiserver`: it prints the
//! current listing, then a row for each change made afterwards (including deletes),
//! and `-o name` streams too.

use hypermesh_tests::hmctl;

use hmctl::{COMMAND_TIMEOUT, Hmctl, read_until, web_workload};
use hypermesh_api::Api;
use hypermesh_api::v1::{DeleteRequest, Workload};
use hypermesh_tests::ApiServerProcess;

/// The READY cell of a workload row (`0/5`).
fn ready(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)
}

#[tokio::test]
async fn hmctl_get_watch_streams_changes_made_afterwards() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let api = Api::<Workload>::new(server.channel().await.expect("channel"));
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 3))
        .await
        .ok();

    let (mut child, mut lines) = hmctl.spawn(&["get", "workloads", "-w"]);
    let first = read_until(&mut lines, COMMAND_TIMEOUT, |l| l.starts_with("web "))
        .await
        .expect("initial listing");
    assert!(
        first[0].starts_with("NAME   READY   UP-TO-DATE"),
        "{first:?}"
    );
    assert_eq!(ready(&first[1]), Some("0/3"));

    // Changed after the watch started: through hmctl and straight through the API.
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 5))
        .await
        .ok();
    read_until(&mut lines, COMMAND_TIMEOUT, |l| {
        l.starts_with("web ") && ready(l) == Some("0/5")
    })
    .await
    .expect("the scale-up is streamed");

    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("api", 1))
        .await
        .ok();
    read_until(&mut lines, COMMAND_TIMEOUT, |l| l.starts_with("api "))
        .await
        .expect("a new object is streamed");

    api.delete(DeleteRequest {
        namespace: "default".into(),
        name: "api".into(),
        ..Default::default()
    })
    .await
    .expect("delete api");
    let seen = read_until(&mut lines, COMMAND_TIMEOUT, |l| l.starts_with("api "))
        .await
        .expect("the delete is streamed");
    assert_eq!(seen.len(), 1, "nothing else changed: {seen:?}");

    assert!(
        child.try_wait().expect("status").is_none(),
        "still watching"
    );
    child.kill().await.expect("kill hmctl");
}

#[tokio::test]
async fn hmctl_get_watch_one_name_in_name_format() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let both = format!("{}---\n{}", web_workload("web", 1), web_workload("api", 1));
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &both)
        .await
        .ok();

    let (mut child, mut lines) = hmctl.spawn(&["get", "wl", "web", "-w", "-o", "name"]);
    read_until(&mut lines, COMMAND_TIMEOUT, |l| {
        l == "workload.hypermesh.io/web"
    })
    .await
    .expect("initial object");

    // A change to api is not shown; the next change to web is.
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("api", 2))
        .await
        .ok();
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 2))
        .await
        .ok();
    let seen = read_until(&mut lines, COMMAND_TIMEOUT, |l| {
        l.starts_with("workload.hypermesh.io/")
    })
    .await
    .expect("the change to web");
    assert_eq!(seen, ["workload.hypermesh.io/web"]);
    child.kill().await.expect("kill hmctl");

    let out = hmctl.run(&["get", "wl", "missing", "-w"]).await.failed();
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): workloads \"missing\" not found\n"
    );
}
