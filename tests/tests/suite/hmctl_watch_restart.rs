//! `hmctl get -w` outlives the apiserver: after a `kill -9` and after a SIGTERM it
//! says on stderr that the connection was lost, reconnects once the server is back,
//! resumes from the last resource version (no change is missed, nothing is printed
//! twice), and `--output-watch-events` tells deletions from updates.

use hypermesh_tests::hmctl;

use hmctl::{COMMAND_TIMEOUT, Hmctl, read_until, web_workload};
use hypermesh_api::Api;
use hypermesh_api::v1::{DeleteRequest, Workload};
use hypermesh_tests::ApiServerProcess;
use tokio::io::AsyncReadExt;

/// `(EVENT, NAME, READY)` of a `--output-watch-events` workload row.
fn cells(line: &str) -> (&str, &str, &str) {
    let mut words = line.split_whitespace();
    (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    )
}

#[tokio::test]
async fn hmctl_get_watch_survives_apiserver_restarts() {
    let mut server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 1))
        .await
        .ok();

    let (mut child, mut lines) = hmctl.spawn(&["get", "workloads", "-w", "--output-watch-events"]);
    let first = read_until(&mut lines, COMMAND_TIMEOUT, |l| cells(l).1 == "web")
        .await
        .expect("initial listing");
    assert!(first[0].starts_with("EVENT "), "{first:?}");
    assert_eq!(cells(&first[1]), ("ADDED", "web", "0/1"));

    // kill -9: the watch waits for the server instead of failing.
    server.kill9().await.expect("kill -9");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "hmctl exited when the apiserver died"
    );
    server.restart().await.expect("restart");
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 2))
        .await
        .ok();
    let seen = read_until(&mut lines, COMMAND_TIMEOUT, |l| {
        cells(l) == ("MODIFIED", "web", "0/2")
    })
    .await
    .expect("a change after the restart is streamed");
    assert_eq!(seen.len(), 1, "nothing printed twice: {seen:?}");

    // SIGTERM: the stream ends cleanly, which is no reason to stop watching either.
    server.terminate().await.expect("SIGTERM");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "hmctl exited when the apiserver stopped"
    );
    server.restart().await.expect("restart");
    let api = Api::<Workload>::new(server.channel().await.expect("channel"));
    api.delete(DeleteRequest {
        namespace: "default".into(),
        name: "web".into(),
        ..Default::default()
    })
    .await
    .expect("delete web");
    let seen = read_until(&mut lines, COMMAND_TIMEOUT, |l| cells(l).1 == "web")
        .await
        .expect("the deletion is streamed");
    assert_eq!(cells(&seen[0]).0, "DELETED", "{seen:?}");

    child.kill().await.expect("kill hmctl");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .await
        .expect("read stderr");
    assert!(stderr.contains("watch: connection lost"), "{stderr}");
    assert!(
        stderr.contains("watch: the server closed the watch"),
        "{stderr}"
    );
    assert!(
        stderr.contains("watch: reconnected; resuming from resource version"),
        "{stderr}"
    );
    assert!(!stderr.contains("Error from server"), "{stderr}");
}
