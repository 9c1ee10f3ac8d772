//! `hmctl apply --wait`: applies, then waits until the Workload is rolled out — failing
//! with the reason at `--timeout` while nothing runs its Instances, and printing
//! `workload.hypermesh.io/web rolled out` once they run. Not attached to a terminal,
//! its progress comes as plain lines.

use hypermesh_tests::hmctl;
use hypermesh_tests::workload;

use hmctl::{Hmctl, web_workload};
use hypermesh_api::Api;
use hypermesh_api::v1::Instance;
use hypermesh_tests::ApiServerProcess;
use workload::Agent;

#[tokio::test]
async fn apply_wait_returns_once_the_workload_is_rolled_out() {
    let server = ApiServerProcess::start_with_args(&["--controllers", "all"])
        .await
        .expect("hm-apiserver");
    let instances = Api::<Instance>::new(server.channel().await.expect("channel"));
    let agent = Agent::start(instances);
    agent.set_enabled(false);
    let hmctl = Hmctl::new(server.url());

    let out = hmctl
        .run_with_stdin(
            &["apply", "--wait", "--timeout", "2s", "-f", "-"],
            &web_workload("web", 2),
        )
        .await
        .failed();
    assert!(
        out.stdout
            .starts_with("workload.hypermesh.io/web created\n"),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains("Waiting for rollout to finish"),
        "{out:#?}"
    );
    assert!(
        out.stderr
            .contains("timed out after 2s waiting for workload \"web\" to roll out"),
        "{out:#?}"
    );

    agent.set_enabled(true);
    let out = hmctl
        .run_with_stdin(
            &["apply", "--wait", "--timeout", "60s", "-f", "-"],
            &web_workload("web", 2),
        )
        .await
        .ok();
    assert!(
        out.stdout
            .starts_with("workload.hypermesh.io/web unchanged\n"),
        "{out:#?}"
    );
    assert_eq!(
        out.lines().last().copied(),
        Some("workload.hypermesh.io/web rolled out"),
        "{out:#?}"
    );
}
