//! `hmctl delete` against a real `hm-apiserver` process: by name, by manifest, and with
//! `--wait`, which returns only once finalizers are done (or fails at `--timeout`).

use hypermesh_tests::hmctl;

use hmctl::{COMMAND_TIMEOUT, Hmctl, namespace, read_until, web_workload};
use hypermesh_api::v1::{Namespace, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::ApiServerProcess;
use tokio::io::AsyncReadExt;
use tonic::Code;

#[tokio::test]
async fn hmctl_delete_by_name_and_by_manifest() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let channel = server.channel().await.expect("channel");
    let workloads = Api::<Workload>::new(channel.clone());
    let manifest = format!(
        "{}---\n{}---\n{}",
        namespace("team-c"),
        web_workload("web", 1),
        web_workload("api", 1)
    );
    let file = hmctl.write("all.yaml", &manifest);
    let file = file.to_str().expect("utf-8");
    hmctl.run(&["apply", "-f", file]).await.ok();

    let out = hmctl.run(&["delete", "wl", "web"]).await.ok();
    assert_eq!(out.stdout, "workload.hypermesh.io/web deleted\n");
    let err = workloads.get("default", "web").await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);

    let out = hmctl.run(&["delete", "wl", "web"]).await.failed();
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): workloads \"web\" not found\n"
    );
    hmctl
        .run(&["delete", "wl", "web", "--ignore-not-found"])
        .await
        .ok();

    // By label selector: only the matching objects.
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("extra", 1))
        .await
        .ok();
    let out = hmctl.run(&["delete", "wl", "-l", "app=extra"]).await.ok();
    assert_eq!(out.stdout, "workload.hypermesh.io/extra deleted\n");
    workloads
        .get("default", "api")
        .await
        .expect("api is not selected");
    let out = hmctl.run(&["delete", "wl"]).await.failed();
    assert!(out.stderr.contains("-l SELECTOR or --all"), "{out:#?}");

    // From the manifest: what is left goes, Namespaces last.
    let out = hmctl
        .run(&["delete", "-f", file, "--ignore-not-found", "--wait"])
        .await
        .ok();
    assert_eq!(
        out.lines(),
        [
            "workload.hypermesh.io/api deleted",
            "namespace.hypermesh.io/team-c deleted"
        ]
    );
    let err = workloads.get("default", "api").await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    let err = Api::<Namespace>::new(channel)
        .get("", "team-c")
        .await
        .expect_err("namespace gone after --wait");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn hmctl_delete_wait_returns_once_finalizers_are_done() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let workloads = Api::<Workload>::new(server.channel().await.expect("channel"));
    let held = web_workload("held", 1).replace(
        "  name: held\n",
        "  name: held\n  finalizers: [example.com/hold]\n",
    );
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &held)
        .await
        .ok();

    // With the finalizer in place, --wait gives up at its timeout.
    let out = hmctl
        .run(&["delete", "wl", "held", "--wait", "--timeout", "300ms"])
        .await
        .failed();
    assert_eq!(out.stdout, "workload.hypermesh.io/held deleted\n");
    assert!(
        out.stderr
            .contains("timed out waiting for workload.hypermesh.io/held to be deleted")
            && out.stderr.contains("example.com/hold"),
        "{out:#?}"
    );

    // Waiting again in the background; once hmctl has sent the delete and is waiting,
    // the finalizer is removed and hmctl returns.
    let (mut child, mut lines) =
        hmctl.spawn(&["delete", "wl", "held", "--wait", "--timeout", "30s"]);
    read_until(&mut lines, COMMAND_TIMEOUT, |l| {
        l == "workload.hypermesh.io/held deleted"
    })
    .await
    .expect("delete sent");
    let marked = workloads.get("default", "held").await.expect("still held");
    assert!(marked.meta().deletion_timestamp.is_some());
    assert!(
        child.try_wait().expect("child status").is_none(),
        "--wait must not return while the finalizer holds the object"
    );
    let mut released = marked;
    released.meta_mut().finalizers.clear();
    workloads.update(&released).await.expect("remove finalizer");

    let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .expect("hmctl --wait returns after the finalizer goes")
        .expect("wait");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).await.expect("stderr");
    }
    assert!(status.success(), "{stderr}");
    let err = workloads.get("default", "held").await.expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
}
