//! `hmctl get` of several kinds at once (`wl,inst`, `all`: one table per kind, names
//! as `kind/name`, like kubectl), the table flags `--no-headers`, `--show-labels` and
//! `-L`, and a bad kind in a list refused by hmctl itself, naming the kind.

use hypermesh_tests::hmctl;
use hypermesh_tests::instance::sh;

use hmctl::{Hmctl, web_workload};
use hypermesh_api::Api;
use hypermesh_api::v1::{self, Instance, ObjectMeta};
use hypermesh_tests::ApiServerProcess;

/// A server with Workload `web` (label app=web, 2 replicas) and Instance `job-1`
/// (labels app=job, tier=batch) in `default`; no controllers, so nothing else.
async fn server() -> (ApiServerProcess, Hmctl) {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 2))
        .await
        .ok();
    let instance = Instance {
        metadata: Some(ObjectMeta {
            name: "job-1".into(),
            namespace: "default".into(),
            labels: [
                ("app".into(), "job".into()),
                ("tier".into(), "batch".into()),
            ]
            .into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![sh("main", "true")],
            ..Default::default()
        }),
        status: None,
    };
    Api::<Instance>::new(server.channel().await.expect("channel"))
        .create(&instance)
        .await
        .expect("create instance");
    (server, hmctl)
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[tokio::test]
async fn hmctl_get_several_kinds_prints_one_table_each() {
    let (_server, hmctl) = server().await;

    let out = hmctl.run(&["get", "wl,inst"]).await.ok();
    let tables: Vec<&str> = out.stdout.split("\n\n").collect();
    assert_eq!(tables.len(), 2, "two tables, a blank line apart: {out:#?}");
    let workloads: Vec<&str> = tables[0].lines().collect();
    assert_eq!(
        words(workloads[0]),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(words(workloads[1])[..2], ["workload/web", "0/2"]);
    assert_eq!(workloads.len(), 2, "{out:#?}");
    let instances: Vec<&str> = tables[1].lines().collect();
    assert_eq!(words(instances[0])[..3], ["NAME", "READY", "STATUS"]);
    assert_eq!(words(instances[1])[0], "instance/job-1");

    // `all` is the namespaced kinds of an application; empty kinds are left out.
    let out = hmctl.run(&["get", "all", "-o", "name"]).await.ok();
    assert_eq!(
        out.stdout,
        "instance.hypermesh.io/job-1\nworkload.hypermesh.io/web\n"
    );
    let out = hmctl.run(&["get", "all"]).await.ok();
    assert!(out.stdout.contains("\ninstance/job-1 "), "{out:#?}");
    assert!(out.stdout.contains("\nworkload/web "), "{out:#?}");
    assert!(!out.stdout.contains("route"), "no routes exist: {out:#?}");
    let out = hmctl.run(&["get", "all", "-n", "team-x"]).await.ok();
    assert_eq!(out.stderr, "No resources found in team-x namespace.\n");

    // Names apply to every kind; JSON of several kinds is one List.
    let out = hmctl.run(&["get", "wl,inst", "web"]).await.failed();
    assert!(out.stdout.contains("workload/web"), "{out:#?}");
    assert!(
        out.stderr.contains("instances \"web\" not found"),
        "{out:#?}"
    );
    let out = hmctl.run(&["get", "inst,wl", "-o", "json"]).await.ok();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "Instance");
    assert_eq!(list["items"][1]["kind"], "Workload");
}

#[tokio::test]
async fn hmctl_get_refuses_a_bad_kind_in_a_list_before_asking_the_server() {
    let (_server, hmctl) = server().await;
    let out = hmctl.run(&["get", "wl,pods"]).await.failed();
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .starts_with("error: unknown resource type \"pods\": `hmctl api-resources`"),
        "{out:#?}"
    );
    assert!(!out.stderr.contains("server"), "{out:#?}");
    let out = hmctl.run(&["get", "wl,inst", "-w"]).await.failed();
    assert!(
        out.stderr.contains("only supported on one kind"),
        "{out:#?}"
    );
}

#[tokio::test]
async fn hmctl_get_no_headers_show_labels_and_label_columns() {
    let (_server, hmctl) = server().await;

    let out = hmctl.run(&["get", "wl", "--no-headers"]).await.ok();
    assert_eq!(out.lines().len(), 1, "{out:#?}");
    assert_eq!(words(out.lines()[0])[..2], ["web", "0/2"]);

    let out = hmctl.run(&["get", "inst", "--show-labels"]).await.ok();
    assert!(out.lines()[0].ends_with("   LABELS"), "{out:#?}");
    assert!(
        out.lines()[1].ends_with("   app=job,tier=batch"),
        "{out:#?}"
    );

    let out = hmctl
        .run(&["get", "wl,inst", "-L", "tier,hypermesh.io/app", "-L", "app"])
        .await
        .ok();
    let lines = out.lines();
    assert!(lines[0].ends_with("AGE   TIER   APP   APP"), "{out:#?}");
    let web = words(lines[1]);
    assert_eq!(web[0], "workload/web");
    assert_eq!(web.last(), Some(&"web"), "tier blank, app=web: {out:#?}");
    let job = lines
        .iter()
        .find(|l| l.starts_with("instance/job-1"))
        .expect("job-1 row");
    assert!(job.ends_with("   batch         job"), "{out:#?}");

    // Watches honour the flags too.
    let (mut child, mut lines) = hmctl.spawn(&["get", "inst", "-w", "--no-headers", "-L", "tier"]);
    let seen = hmctl::read_until(&mut lines, hmctl::COMMAND_TIMEOUT, |l| l.contains("job-1"))
        .await
        .expect("watch row");
    assert_eq!(seen.len(), 1, "no header: {seen:#?}");
    assert!(
        seen[0].starts_with("job-1 ") && seen[0].ends_with("   batch"),
        "{seen:#?}"
    );
    child.kill().await.ok();
}
