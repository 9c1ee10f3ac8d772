//! Bad manifests given to `hmctl apply` against a real `hm-apiserver`: malformed YAML,
//! a document without kind, an unknown field, a bad quantity, a missing namespace.
//! Each gives one clear stderr line naming the file, document and field, exits 1, and
//! leaves the stored data as it was.

use hypermesh_tests::hmctl;

use hmctl::{Hmctl, Output, namespace, web_workload};
use hypermesh_api::Api;
use hypermesh_api::v1::{ListRequest, Namespace, Workload};
use hypermesh_tests::ApiServerProcess;
use tonic::transport::Channel;

/// Every stored Workload and Namespace, to compare before and after.
async fn snapshot(channel: &Channel) -> (Vec<Workload>, Vec<Namespace>) {
    let (workloads, _) = Api::<Workload>::new(channel.clone())
        .list_all(ListRequest::default())
        .await
        .expect("list workloads");
    let (namespaces, _) = Api::<Namespace>::new(channel.clone())
        .list_all(ListRequest::default())
        .await
        .expect("list namespaces");
    (workloads, namespaces)
}

fn single_error_line(out: &Output) -> &str {
    assert_eq!(out.stdout, "", "nothing applied: {out:#?}");
    out.stderr.lines().next().expect("an error line")
}

#[tokio::test]
async fn hmctl_bad_manifests_are_named_and_change_nothing() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let channel = server.channel().await.expect("channel");
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 2))
        .await
        .ok();
    let before = snapshot(&channel).await;

    // Malformed YAML after a good document: the file is rejected as a whole.
    let path = hmctl.write(
        "malformed.yaml",
        &format!("{}---\nkind: [unclosed\n", namespace("never")),
    );
    let out = hmctl
        .run(&["apply", "-f", path.to_str().expect("utf-8")])
        .await
        .failed();
    let line = single_error_line(&out);
    assert!(
        line.starts_with(&format!("error: {}: malformed YAML", path.display())),
        "{out:#?}"
    );

    // A document without kind, after a good one in another file: nothing is applied.
    let good = hmctl.write("good.yaml", &namespace("never"));
    let path = hmctl.write(
        "nokind.yaml",
        "apiVersion: hypermesh.io/v1\nmetadata: {name: x}\n",
    );
    let out = hmctl
        .run(&[
            "apply",
            "-f",
            good.to_str().expect("utf-8"),
            "-f",
            path.to_str().expect("utf-8"),
        ])
        .await
        .failed();
    let line = single_error_line(&out);
    assert!(
        line.starts_with(&format!(
            "error: {}: document 1: kind: required",
            path.display()
        )),
        "{out:#?}"
    );

    // An unknown field, in the second document of stdin.
    let manifest = format!(
        "{}---\n{}",
        namespace("never"),
        web_workload("web", 9).replace("  replicas: 9\n", "  replicas: 9\n  replicaz: 1\n")
    );
    let out = hmctl
        .run_with_stdin(&["apply", "-f", "-"], &manifest)
        .await
        .failed();
    let line = single_error_line(&out);
    assert!(
        line.starts_with("error: <stdin>: document 2: spec.replicaz: unknown field `replicaz`"),
        "{out:#?}"
    );

    // A bad quantity is the server's call: it names the field and the reason.
    let bad_cpu = web_workload("web", 9).replace("cpu: 100m", "cpu: lots");
    let out = hmctl
        .run_with_stdin(&["apply", "-f", "-"], &bad_cpu)
        .await
        .failed();
    let line = single_error_line(&out);
    assert!(
        line.starts_with(
            "Error from server (QuantityInvalid): error when updating workload.hypermesh.io/web \
             from \"<stdin>\" document 1: spec.template.containers[0].resources.cpu: invalid quantity \"lots\""
        ),
        "{out:#?}"
    );
    let out = hmctl
        .run_with_stdin(
            &["apply", "-f", "-"],
            &web_workload("fresh", 1).replace("cpu: 100m", "cpu: lots"),
        )
        .await
        .failed();
    assert!(
        out.stderr
            .starts_with("Error from server (QuantityInvalid): error when creating"),
        "{out:#?}"
    );
    assert!(
        out.stderr
            .contains("spec.template.containers[0].resources.cpu"),
        "{out:#?}"
    );

    // A namespace that does not exist.
    let out = hmctl
        .run_with_stdin(
            &["apply", "-n", "nowhere", "-f", "-"],
            &web_workload("web", 9),
        )
        .await
        .failed();
    let line = single_error_line(&out);
    assert!(
        line.starts_with("Error from server (NamespaceNotFound): error when creating workload.hypermesh.io/web from \"<stdin>\" document 1: "),
        "{out:#?}"
    );
    assert!(line.contains("nowhere"), "{out:#?}");

    // -n contradicting the manifest is refused before anything is sent.
    let pinned =
        web_workload("web", 9).replace("  name: web\n", "  name: web\n  namespace: default\n");
    let out = hmctl
        .run_with_stdin(&["apply", "-n", "other", "-f", "-"], &pinned)
        .await
        .failed();
    let line = single_error_line(&out);
    assert!(
        line.starts_with("error: <stdin>: document 1: metadata.namespace: "),
        "{out:#?}"
    );

    assert_eq!(snapshot(&channel).await, before, "stored data unchanged");
}
