//! `hmctl apply` against a real `hm-apiserver` process: the first apply creates, the
//! same manifest again changes nothing (no write), an edited manifest updates the
//! object in place; stdin works and Namespaces go first whatever the file order.

use hypermesh_tests::hmctl;

use hmctl::{Hmctl, namespace, web_workload};
use hypermesh_api::Api;
use hypermesh_api::v1::{Namespace, Workload};
use hypermesh_tests::ApiServerProcess;

#[tokio::test]
async fn hmctl_apply_creates_then_leaves_unchanged_then_configures() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let api = Api::<Workload>::new(server.channel().await.expect("channel"));
    let file = hmctl.write("web.yaml", &web_workload("web", 2));
    let file = file.to_str().expect("utf-8 path");

    let out = hmctl.run(&["apply", "-f", file]).await.ok();
    assert_eq!(out.stdout, "workload.hypermesh.io/web created\n");
    let created = api.get("default", "web").await.expect("created in default");
    let created_meta = created.metadata.clone().expect("metadata");

    let out = hmctl.run(&["apply", "-f", file]).await.ok();
    assert_eq!(out.stdout, "workload.hypermesh.io/web unchanged\n");
    let same = api.get("default", "web").await.expect("still there");
    assert_eq!(same, created, "an unchanged apply must not write");

    hmctl.write("web.yaml", &web_workload("web", 5));
    let out = hmctl.run(&["apply", "-f", file]).await.ok();
    assert_eq!(out.stdout, "workload.hypermesh.io/web configured\n");
    let updated = api.get("default", "web").await.expect("updated");
    let meta = updated.metadata.clone().expect("metadata");
    assert_eq!(updated.spec.as_ref().map(|s| s.replicas), Some(5));
    assert_eq!(
        meta.uid, created_meta.uid,
        "updated in place, not recreated"
    );
    assert!(meta.resource_version > created_meta.resource_version);
    assert_eq!(meta.generation, created_meta.generation + 1);
}

#[tokio::test]
async fn hmctl_apply_reads_stdin_and_applies_namespaces_first() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let channel = server.channel().await.expect("channel");

    // The Workload comes first in the text but lives in the Namespace defined after it.
    let manifest = format!("{}---\n{}", web_workload("api", 1), namespace("team-b"));
    let out = hmctl
        .run_with_stdin(&["apply", "-n", "team-b", "-f", "-"], &manifest)
        .await
        .ok();
    assert_eq!(
        out.lines(),
        [
            "namespace.hypermesh.io/team-b created",
            "workload.hypermesh.io/api created"
        ]
    );
    Api::<Namespace>::new(channel.clone())
        .get("", "team-b")
        .await
        .expect("namespace created");
    Api::<Workload>::new(channel)
        .get("team-b", "api")
        .await
        .expect("workload created in the -n namespace");

    let out = hmctl
        .run_with_stdin(&["apply", "-n", "team-b", "-f", "-"], &manifest)
        .await
        .ok();
    assert_eq!(
        out.lines(),
        [
            "namespace.hypermesh.io/team-b unchanged",
            "workload.hypermesh.io/api unchanged"
        ]
    );
}

#[tokio::test]
async fn hmctl_apply_takes_directories_recursively_and_repeated_files() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let api = Api::<Workload>::new(server.channel().await.expect("channel"));
    hmctl.write("manifests/a.yaml", &web_workload("a", 1));
    hmctl.write("manifests/nested/b.yml", &web_workload("b", 1));
    hmctl.write("manifests/nested/c.json", &web_workload_json("c"));
    hmctl.write("manifests/README.md", "not a manifest: ignored");
    let extra = hmctl.write("extra.yaml", &web_workload("d", 1));
    let dir = hmctl.home().join("manifests");

    let out = hmctl
        .run(&[
            "apply",
            "-f",
            dir.to_str().expect("utf-8"),
            "-f",
            extra.to_str().expect("utf-8"),
        ])
        .await
        .ok();
    assert_eq!(
        out.lines(),
        [
            "workload.hypermesh.io/a created",
            "workload.hypermesh.io/b created",
            "workload.hypermesh.io/c created",
            "workload.hypermesh.io/d created",
        ]
    );
    for name in ["a", "b", "c", "d"] {
        api.get("default", name).await.expect(name);
    }
}

fn web_workload_json(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "hypermesh.io/v1",
        "kind": "Workload",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"app": name},
            "template": {
                "labels": {"app": name},
                "containers": [{"name": "main", "image": "hypermesh.local/busybox:latest"}]
            }
        }
    })
    .to_string()
}
