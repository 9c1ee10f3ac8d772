//! `hmctl get instances` says why an Instance is not running the way kubectl does for
//! pods: a STATUS column with the containers' waiting or terminated reason
//! (`CrashLoopBackOff`, `ImageNotFound`, `OOMKilled`, `Completed`), `Terminating` while
//! it is being deleted; the phase stays visible in `-o wide`.

use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::instance;
use hypermesh_tests::node_env;

use containerd::TEST_IMAGE;
use hmctl::Hmctl;
use hypermesh_api::v1::{self, RestartPolicy};
use hypermesh_tests::wait_for;
use instance::{delete, running, sh};
use node_env::{Env, TIMEOUT};

/// `name`'s row of `hmctl get instances ARGS`, split into cells.
async fn row(hmctl: &Hmctl, name: &str, args: &[&str]) -> Option<Vec<String>> {
    let mut full = vec!["get", "instances"];
    full.extend_from_slice(args);
    let out = hmctl.run(&full).await;
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
}

/// Waits until `name`'s STATUS cell reads `want`; returns the row.
async fn wait_status(hmctl: &Hmctl, name: &str, want: &str) -> Vec<String> {
    let found = wait_for(TIMEOUT, || async {
        row(hmctl, name, &[])
            .await
            .filter(|cells| cells.get(2).map(String::as_str) == Some(want))
    })
    .await;
    match found {
        Ok(cells) => cells,
        Err(_) => panic!(
            "{name}: STATUS never {want}; last row {:?}",
            row(hmctl, name, &[]).await
        ),
    }
}

#[tokio::test]
async fn status_column_says_why_instances_are_not_running() {
    let env = Env::start().await;
    let hmctl = Hmctl::new(env.server.url());
    env.run(
        "crash",
        TEST_IMAGE,
        &["sh", "-c", "exit 1"],
        RestartPolicy::Always,
    )
    .await;
    env.run(
        "missing",
        "no-such-image:1",
        &["true"],
        RestartPolicy::Always,
    )
    .await;
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
    env.run("done", TEST_IMAGE, &["true"], RestartPolicy::Never)
        .await;
    env.run_spec(
        "slow",
        v1::InstanceSpec {
            containers: vec![sh(
                "main",
                "trap 'sleep 2; exit 0' TERM; while true; do sleep 0.1; done",
            )],
            termination_grace_period_seconds: 20,
            ..Default::default()
        },
    )
    .await;

    let header = hmctl.run(&["get", "instances"]).await.ok();
    assert!(
        header.stdout.starts_with("NAME ") && header.lines()[0].contains(" STATUS "),
        "{}",
        header.stdout
    );
    let crash = wait_status(&hmctl, "crash", "CrashLoopBackOff").await;
    assert_eq!(crash[1], "0/1", "{crash:?}");
    wait_status(&hmctl, "missing", "ImageNotFound").await;
    wait_status(&hmctl, "hog", "OOMKilled").await;
    wait_status(&hmctl, "done", "Completed").await;
    env.wait_status("slow", "runs", |s| running(s, "main"))
        .await;
    wait_status(&hmctl, "slow", "Running").await;

    // The phase is in -o wide: a crash-looping Instance is still Running underneath.
    let wide = hmctl.run(&["get", "instances", "-o", "wide"]).await.ok();
    let headers: Vec<&str> = wide.lines()[0].split_whitespace().collect();
    let phase = headers
        .iter()
        .position(|h| *h == "PHASE")
        .expect("PHASE column");
    let missing = row(&hmctl, "missing", &["-o", "wide"]).await.expect("row");
    assert_eq!(missing[phase], "Scheduled", "{missing:?}");

    // Deleting: Terminating until the container has stopped.
    delete(&env, "slow").await;
    wait_status(&hmctl, "slow", "Terminating").await;
    env.stop().await;
}
