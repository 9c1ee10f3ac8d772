//! `hmctl scale` and `hmctl rollout status|history|undo` with the real binaries:
//! `hm-apiserver` runs the workload controller in-process by default, and the test
//! plays the agent, reporting Instances as running.

use hypermesh_tests::hmctl;
use hypermesh_tests::workload;

use hmctl::{COMMAND_TIMEOUT, Hmctl, read_until};
use hypermesh_api::Api;
use hypermesh_api::v1::{Instance, Workload};
use hypermesh_tests::ApiServerProcess;
use workload::{Agent, image_of, rolled_out, wait_instances, wait_workload};

fn manifest(image: &str) -> String {
    format!(
        "apiVersion: hypermesh.io/v1
kind: Workload
metadata:
  name: web
spec:
  replicas: 1
  selector: {{app: web}}
  strategy: {{type: ROLLING_UPDATE, maxSurge: \"1\", maxUnavailable: \"0\"}}
  template:
    labels: {{app: web}}
    containers:
      - name: main
        image: {image}
"
    )
}

#[tokio::test]
async fn hmctl_scales_follows_and_undoes_rollouts() {
    // Controllers run by default; say so, so this test does not depend on that.
    let server = ApiServerProcess::start_with_args(&["--controllers", "all"])
        .await
        .expect("hm-apiserver");
    let channel = server.channel().await.expect("channel");
    let workloads = Api::<Workload>::new(channel.clone());
    let instances = Api::<Instance>::new(channel);
    let agent = Agent::start(instances.clone());
    let hmctl = Hmctl::new(server.url());
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &manifest("web:1"))
        .await
        .ok();

    // Scale: the controller inside hm-apiserver creates the Instances.
    let out = hmctl
        .run(&["scale", "workload", "web", "--replicas", "3"])
        .await
        .ok();
    assert_eq!(out.stdout, "workload.hypermesh.io/web scaled\n");
    wait_instances(&instances, "web", 3, |_| true).await;
    let out = hmctl
        .run(&["rollout", "status", "wl/web", "--timeout", "30s"])
        .await
        .ok();
    assert_eq!(
        out.lines().last().copied(),
        Some("workload \"web\" successfully rolled out"),
        "{out:#?}"
    );

    // A new image while the agent is paused: `rollout status` reports progress, then
    // success once the agent runs the new Instances.
    agent.set_enabled(false);
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &manifest("web:2"))
        .await
        .ok();
    let (mut child, mut lines) = hmctl.spawn(&["rollout", "status", "workload", "web"]);
    let waiting = read_until(&mut lines, COMMAND_TIMEOUT, |l| {
        l.starts_with("Waiting for rollout to finish: ")
    })
    .await
    .expect("progress line");
    assert!(
        waiting.iter().all(|l| l.starts_with("Waiting for ")),
        "{waiting:#?}"
    );
    agent.set_enabled(true);
    let rest = read_until(&mut lines, COMMAND_TIMEOUT, |l| {
        l == "workload \"web\" successfully rolled out"
    })
    .await
    .expect("success line");
    assert!(
        rest.iter()
            .chain(&waiting)
            .any(|l| l.ends_with("updated replicas are available...")
                || l.ends_with("new replicas have been updated...")
                || l.ends_with("old replicas are pending termination...")),
        "{waiting:#?} {rest:#?}"
    );
    let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success());

    // History lists both revisions.
    let out = hmctl.run(&["rollout", "history", "wl", "web"]).await.ok();
    let lines = out.lines();
    assert_eq!(lines[0], "workload.hypermesh.io/web");
    assert!(lines[1].starts_with("REVISION"), "{out:#?}");
    assert!(
        lines[2].starts_with("1 ") && lines[2].ends_with("main=web:1"),
        "{out:#?}"
    );
    assert!(
        lines[3].starts_with("2 ") && lines[3].ends_with("main=web:2"),
        "{out:#?}"
    );
    let out = hmctl
        .run(&["rollout", "history", "wl", "web", "--revision", "1"])
        .await
        .ok();
    assert!(
        out.stdout
            .starts_with("workload.hypermesh.io/web with revision #1\n"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("image: web:1"), "{out:#?}");

    // Undo goes back to revision 1's template, which becomes revision 3.
    let out = hmctl.run(&["rollout", "undo", "wl", "web"]).await.ok();
    assert_eq!(
        out.stdout,
        "workload.hypermesh.io/web rolled back to revision 1\n"
    );
    let w = wait_workload(&workloads, "web", "rolled back", |w| {
        rolled_out(w)
            && w.status
                .as_ref()
                .and_then(|s| s.history.last())
                .is_some_and(|r| r.revision == 3)
    })
    .await;
    assert_eq!(image_of(&w), "web:1");
    hmctl
        .run(&["rollout", "status", "wl", "web", "--timeout", "30s"])
        .await
        .ok();
    let out = hmctl.run(&["rollout", "history", "wl", "web"]).await.ok();
    let revisions: Vec<&str> = out.lines()[2..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{out:#?}");

    // --to-revision, an unknown revision, a template already current.
    let out = hmctl
        .run(&["rollout", "undo", "wl", "web", "--to-revision", "2"])
        .await
        .ok();
    assert_eq!(
        out.stdout,
        "workload.hypermesh.io/web rolled back to revision 2\n"
    );
    // Revision 2's template comes back as revision 4.
    wait_workload(&workloads, "web", "back on web:2 as revision 4", |w| {
        image_of(w) == "web:2"
            && w.status
                .as_ref()
                .and_then(|s| s.history.last())
                .is_some_and(|r| r.revision == 4)
    })
    .await;
    let out = hmctl
        .run(&["rollout", "undo", "wl", "web", "--to-revision", "9"])
        .await
        .failed();
    assert_eq!(
        out.stderr,
        "error: revision 9 not found in the history of workload \"web\"\n"
    );
    let out = hmctl
        .run(&["rollout", "undo", "wl", "web", "--to-revision", "4"])
        .await
        .ok();
    assert_eq!(
        out.stdout,
        "workload.hypermesh.io/web skipped rollback (current template already matches revision 4)\n"
    );

    // A rollout that cannot finish times out.
    agent.set_enabled(false);
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &manifest("web:3"))
        .await
        .ok();
    let out = hmctl
        .run(&["rollout", "status", "wl", "web", "--timeout", "500ms"])
        .await
        .failed();
    assert!(out.stdout.starts_with("Waiting for "), "{out:#?}");
    assert_eq!(
        out.stderr,
        "error: timed out after 500ms waiting for workload \"web\" to roll out\n"
    );

    // Only workloads scale; unknown workloads are reported.
    let out = hmctl
        .run(&["scale", "node", "n1", "--replicas", "1"])
        .await
        .failed();
    assert!(out.stderr.contains("works on workloads only"), "{out:#?}");
    let out = hmctl
        .run(&["scale", "wl", "nope", "--replicas", "1"])
        .await
        .failed();
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): workloads \"nope\" not found\n"
    );
}
