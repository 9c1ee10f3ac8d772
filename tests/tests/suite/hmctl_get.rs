//! `hmctl get` against a real `hm-apiserver` process, in every output format: the
//! table (and `-o wide`), YAML and JSON that parse back to the stored objects, names;
//! selectors, `-A`, paging, an empty listing, a missing name and an unknown kind.

use hypermesh_tests::hmctl;

use hmctl::{Hmctl, namespace, web_workload};
use hypermesh_api::manifest::parse_yaml;
use hypermesh_api::v1::Workload;
use hypermesh_api::{Api, DynObject};
use hypermesh_tests::ApiServerProcess;
use serde_json::Value;

/// A server with Workloads `web` (3 replicas) and `api` (1) in `default` and `batch`
/// (2) in `team-a`.
async fn server_with_workloads() -> (ApiServerProcess, Hmctl) {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let manifest = format!(
        "{}---\n{}---\n{}---\n{}",
        web_workload("web", 3),
        web_workload("api", 1),
        namespace("team-a"),
        web_workload("batch", 2).replace("  name: batch\n", "  name: batch\n  namespace: team-a\n"),
    );
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &manifest)
        .await
        .ok();
    (server, hmctl)
}

#[tokio::test]
async fn hmctl_get_prints_tables() {
    let (_server, hmctl) = server_with_workloads().await;

    let out = hmctl.run(&["get", "workloads"]).await.ok();
    let lines = out.lines();
    assert_eq!(lines.len(), 3, "{out:#?}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let web: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("web "))
        .expect("web row")
        .split_whitespace()
        .collect();
    assert_eq!(&web[..4], ["web", "0/3", "0", "0"]);
    assert!(
        !out.stdout.contains("batch"),
        "other namespaces are not listed"
    );

    let out = hmctl.run(&["get", "wl", "-o", "wide"]).await.ok();
    assert!(
        out.lines()[0].ends_with("CONTAINERS   IMAGES                           SELECTOR"),
        "{out:#?}"
    );
    assert!(
        out.stdout
            .contains("hypermesh.local/busybox:latest   app=web"),
        "{out:#?}"
    );

    let out = hmctl.run(&["get", "wl", "-A"]).await.ok();
    assert!(out.lines()[0].starts_with("NAMESPACE   NAME "), "{out:#?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("team-a      batch ")),
        "{out:#?}"
    );
    assert_eq!(out.lines().len(), 4);

    let out = hmctl.run(&["get", "wl", "-n", "team-a"]).await.ok();
    assert!(out.stdout.contains("batch"), "{out:#?}");

    let out = hmctl.run(&["get", "ns"]).await.ok();
    let names: Vec<&str> = out.lines()[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["default", "hypermesh-system", "team-a"]);
}

#[tokio::test]
async fn hmctl_get_yaml_and_json_parse_back_to_the_stored_objects() {
    let (server, hmctl) = server_with_workloads().await;
    let api = Api::<Workload>::new(server.channel().await.expect("channel"));
    let web = api.get("default", "web").await.expect("web");

    let out = hmctl.run(&["get", "wl", "web", "-o", "yaml"]).await.ok();
    assert_eq!(
        parse_yaml(&out.stdout).expect("valid manifest"),
        [DynObject::Workload(web.clone())]
    );

    let out = hmctl.run(&["get", "wl", "-o", "yaml"]).await.ok();
    let objects = parse_yaml(&out.stdout).expect("several documents");
    let names: Vec<&str> = objects.iter().map(|o| o.meta().name.as_str()).collect();
    assert_eq!(names, ["api", "web"]);

    let out = hmctl.run(&["get", "wl", "web", "-o", "json"]).await.ok();
    let mut one: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(one["apiVersion"], "hypermesh.io/v1");
    assert_eq!(one["kind"], "Workload");
    let fields = one.as_object_mut().expect("object");
    fields.remove("apiVersion");
    fields.remove("kind");
    let parsed: Workload = serde_json::from_value(one).expect("a Workload");
    assert_eq!(parsed, web);

    let out = hmctl.run(&["get", "wl", "-o", "json"]).await.ok();
    let list: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["apiVersion"], "hypermesh.io/v1");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(list["items"][1]["metadata"]["name"], "web");
    assert_eq!(list["items"][1]["kind"], "Workload");
}

#[tokio::test]
async fn hmctl_get_names_selectors_and_pages() {
    let (_server, hmctl) = server_with_workloads().await;

    let out = hmctl.run(&["get", "wl", "-o", "name"]).await.ok();
    assert_eq!(
        out.stdout,
        "workload.hypermesh.io/api\nworkload.hypermesh.io/web\n"
    );

    let out = hmctl
        .run(&["get", "wl", "-l", "app=web", "-o", "name"])
        .await
        .ok();
    assert_eq!(out.stdout, "workload.hypermesh.io/web\n");

    let out = hmctl
        .run(&[
            "get",
            "wl",
            "--field-selector",
            "metadata.name=api",
            "-o",
            "name",
        ])
        .await
        .ok();
    assert_eq!(out.stdout, "workload.hypermesh.io/api\n");

    let out = hmctl
        .run(&["get", "wl", "-A", "--chunk-size", "1", "-o", "name"])
        .await
        .ok();
    assert_eq!(out.lines().len(), 3, "every page is read: {out:#?}");

    let out = hmctl
        .run(&["get", "workload/web", "api", "-o", "name"])
        .await
        .ok();
    assert_eq!(
        out.stdout,
        "workload.hypermesh.io/web\nworkload.hypermesh.io/api\n"
    );
}

#[tokio::test]
async fn hmctl_get_reports_empty_listings_missing_names_and_unknown_kinds() {
    let (_server, hmctl) = server_with_workloads().await;

    let out = hmctl.run(&["get", "routes"]).await.ok();
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "No resources found in default namespace.\n");

    let out = hmctl.run(&["get", "wl", "nope"]).await.failed();
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): workloads \"nope\" not found\n"
    );

    // Found names are printed, missing ones reported, and the exit code says so.
    let out = hmctl
        .run(&["get", "wl", "web", "nope", "-o", "name"])
        .await
        .failed();
    assert_eq!(out.stdout, "workload.hypermesh.io/web\n");
    assert!(
        out.stderr.contains("workloads \"nope\" not found"),
        "{out:#?}"
    );

    let out = hmctl.run(&["get", "pods"]).await.failed();
    assert_eq!(
        out.stderr,
        "error: unknown resource type \"pods\": `hmctl api-resources` lists the kinds \
         and their short names\n"
    );
}
