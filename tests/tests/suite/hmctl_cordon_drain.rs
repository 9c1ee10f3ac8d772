//! Node maintenance with the real `hmctl` against a real `hm-apiserver` process and
//! simulated nodes: `cordon`/`uncordon` flip `spec.unschedulable`; `drain` cordons,
//! evicts every Instance bound to the node in every namespace with progress lines,
//! waits until they are gone (finalizers included, within `--timeout`), and refuses
//! Instances no Workload manages unless `--force`. `get instances -o wide` shows
//! where each Instance runs. End to end, with the Workload controller and a real
//! `hm-scheduler`, a drained replica is recreated on the other node.

use hypermesh_tests::hmctl;

use std::collections::BTreeMap;

use hmctl::{COMMAND_TIMEOUT, Hmctl, read_until, web_workload};
use hypermesh_api::v1::{
    self, BindRequest, Condition, Instance, Namespace, Node, ObjectMeta, OwnerReference, Workload,
};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::{ApiServerProcess, bin_path, wait_for};
use tonic::Code;
use tonic::transport::Channel;

/// An apiserver without controllers (the Instances here are simulated: created and
/// bound by the test, and nothing recreates what drain evicts), hmctl pointed at it,
/// and nodes `n1` and `n2`.
async fn cluster() -> (ApiServerProcess, Hmctl, Channel) {
    cluster_with(&["--controllers", "none"]).await
}

/// Like [`cluster`], with these `hm-apiserver` arguments.
async fn cluster_with(args: &[&str]) -> (ApiServerProcess, Hmctl, Channel) {
    let server = ApiServerProcess::start_with_args(args)
        .await
        .expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let channel = server.channel().await.expect("channel");
    let nodes = Api::<Node>::new(channel.clone());
    let assets = Api::<v1::Asset>::new(channel.clone());
    for name in ["n1", "n2"] {
        hypermesh_tests::proofs::create_offering_node(
            &nodes,
            &assets,
            Node {
                metadata: Some(ObjectMeta {
                    name: name.into(),
                    labels: BTreeMap::from([("zone".to_string(), "eu-1".to_string())]),
                    ..Default::default()
                }),
                spec: Some(v1::NodeSpec::default()),
                status: Some(v1::NodeStatus {
                    allocatable: BTreeMap::from([
                        ("cpu".to_string(), "4".to_string()),
                        ("memory".to_string(), "8Gi".to_string()),
                    ]),
                    conditions: vec![Condition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
        )
        .await
        .expect("create node");
    }
    (server, hmctl, channel)
}

/// Creates Instance `namespace/name`, optionally controlled by `owner`, holding
/// `finalizers`, and binds it to `node`.
async fn bound_instance(
    channel: &Channel,
    namespace: &str,
    name: &str,
    node: &str,
    owner: Option<&Workload>,
    finalizers: &[&str],
) {
    let api = Api::<Instance>::new(channel.clone());
    api.create(&Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            owner_references: owner
                .map(|w| OwnerReference {
                    kind: "Workload".into(),
                    name: w.meta().name.clone(),
                    uid: w.meta().uid.clone(),
                    controller: true,
                })
                .into_iter()
                .collect(),
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: "hypermesh.local/busybox:latest".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    })
    .await
    .unwrap_or_else(|e| panic!("create {namespace}/{name}: {e:?}"));
    api.bind(BindRequest {
        namespace: namespace.into(),
        name: name.into(),
        node_name: node.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("bind {namespace}/{name}: {e:?}"));
}

/// Workload `namespace/name` (its controller does not run in [`cluster`], so evicted
/// Instances are not recreated).
async fn workload(channel: &Channel, namespace: &str, name: &str) -> Workload {
    let selector = BTreeMap::from([("app".to_string(), name.to_string())]);
    Api::<Workload>::new(channel.clone())
        .create(&Workload {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: namespace.into(),
                ..Default::default()
            }),
            spec: Some(v1::WorkloadSpec {
                replicas: 2,
                selector: selector.clone(),
                template: Some(v1::InstanceTemplate {
                    labels: selector,
                    containers: vec![v1::Container {
                        name: "main".into(),
                        image: "hypermesh.local/busybox:latest".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("create workload")
}

async fn unschedulable(channel: &Channel, node: &str) -> bool {
    Api::<Node>::new(channel.clone())
        .get("", node)
        .await
        .expect("get node")
        .spec
        .is_some_and(|s| s.unschedulable)
}

async fn exists(channel: &Channel, namespace: &str, name: &str) -> bool {
    match Api::<Instance>::new(channel.clone())
        .get(namespace, name)
        .await
    {
        Ok(_) => true,
        Err(e) if e.code() == Code::NotFound => false,
        Err(e) => panic!("get {namespace}/{name}: {e:?}"),
    }
}

#[tokio::test]
async fn hmctl_cordon_and_uncordon() {
    let (_server, hmctl, channel) = cluster().await;

    let out = hmctl.run(&["cordon", "n1"]).await.ok();
    assert_eq!(out.stdout, "node/n1 cordoned\n");
    assert!(unschedulable(&channel, "n1").await);
    assert!(!unschedulable(&channel, "n2").await);
    let out = hmctl.run(&["get", "nodes"]).await.ok();
    let row = out
        .lines()
        .into_iter()
        .find(|l| l.starts_with("n1 "))
        .expect("n1 row")
        .to_string();
    assert!(row.contains("Ready,SchedulingDisabled"), "{out:#?}");

    // Labels and status written by others survive the Update.
    let node = Api::<Node>::new(channel.clone())
        .get("", "n1")
        .await
        .expect("get node");
    assert_eq!(
        node.meta().labels.get("zone").map(String::as_str),
        Some("eu-1")
    );
    assert_eq!(
        node.status
            .as_ref()
            .and_then(|s| s.allocatable.get("cpu"))
            .map(String::as_str),
        Some("4")
    );

    let out = hmctl.run(&["cordon", "n1"]).await.ok();
    assert_eq!(out.stdout, "node/n1 already cordoned\n");
    let out = hmctl.run(&["uncordon", "n1"]).await.ok();
    assert_eq!(out.stdout, "node/n1 uncordoned\n");
    assert!(!unschedulable(&channel, "n1").await);
    let out = hmctl.run(&["uncordon", "n1"]).await.ok();
    assert_eq!(out.stdout, "node/n1 already uncordoned\n");

    let out = hmctl.run(&["cordon", "nope"]).await.failed();
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): nodes \"nope\" not found\n"
    );
    let out = hmctl.run(&["drain", "nope"]).await.failed();
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): nodes \"nope\" not found\n"
    );

    // Nodes are cluster-scoped: a namespace is refused, and nothing changes.
    for verb in ["cordon", "uncordon", "drain"] {
        let out = hmctl.run(&[verb, "n1", "-n", "team-a"]).await.failed();
        assert_eq!(
            out.stderr,
            format!(
                "error: {verb}: nodes are cluster-scoped; -n/--namespace does not apply \
                 (drop -n team-a)\n"
            ),
        );
    }
    assert!(!unschedulable(&channel, "n1").await);
}

#[tokio::test]
async fn hmctl_drain_evicts_every_instance_on_the_node() {
    let (_server, hmctl, channel) = cluster().await;
    Api::<Namespace>::new(channel.clone())
        .create(&Namespace {
            metadata: Some(ObjectMeta {
                name: "team-a".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("namespace");
    let web = workload(&channel, "default", "web").await;
    let batch = workload(&channel, "team-a", "batch").await;
    bound_instance(&channel, "default", "web-abc12", "n1", Some(&web), &[]).await;
    bound_instance(&channel, "default", "web-def34", "n2", Some(&web), &[]).await;
    bound_instance(&channel, "team-a", "batch-x1", "n1", Some(&batch), &[]).await;

    // Where everything runs, before.
    let out = hmctl
        .run(&["get", "instances", "-A", "-o", "wide"])
        .await
        .ok();
    let header: Vec<&str> = out.lines()[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "NODE",
            "AGE",
            "PHASE",
            "ADDRESS"
        ],
        "{out:#?}"
    );
    let nodes: BTreeMap<String, String> = out.lines()[1..]
        .iter()
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (format!("{}/{}", cells[0], cells[1]), cells[5].to_string())
        })
        .collect();
    assert_eq!(
        nodes,
        BTreeMap::from([
            ("default/web-abc12".to_string(), "n1".to_string()),
            ("default/web-def34".into(), "n2".into()),
            ("team-a/batch-x1".into(), "n1".into()),
        ])
    );

    let out = hmctl.run(&["drain", "n1"]).await.ok();
    let lines = out.lines();
    assert_eq!(lines.first(), Some(&"node/n1 cordoned"), "{out:#?}");
    assert_eq!(lines.last(), Some(&"node/n1 drained"), "{out:#?}");
    for name in ["default/web-abc12", "team-a/batch-x1"] {
        assert!(
            lines.contains(&format!("evicting instance {name}").as_str()),
            "{out:#?}"
        );
        assert!(
            lines.contains(&format!("evicted instance {name}").as_str()),
            "{out:#?}"
        );
    }
    assert_eq!(lines.len(), 6, "{out:#?}");
    assert!(!out.stdout.contains("web-def34"), "{out:#?}");

    assert!(unschedulable(&channel, "n1").await);
    assert!(!exists(&channel, "default", "web-abc12").await);
    assert!(!exists(&channel, "team-a", "batch-x1").await);
    assert!(exists(&channel, "default", "web-def34").await);

    // Draining an empty, cordoned node is quick and says so.
    let out = hmctl.run(&["drain", "n1"]).await.ok();
    assert_eq!(out.stdout, "node/n1 already cordoned\nnode/n1 drained\n");
}

#[tokio::test]
async fn hmctl_drain_needs_force_for_unmanaged_instances() {
    let (_server, hmctl, channel) = cluster().await;
    let web = workload(&channel, "default", "web").await;
    bound_instance(&channel, "default", "web-abc12", "n1", Some(&web), &[]).await;
    bound_instance(&channel, "default", "loose", "n1", None, &[]).await;

    let out = hmctl.run(&["drain", "n1"]).await.failed();
    assert_eq!(out.stdout, "node/n1 cordoned\n");
    assert!(
        out.stderr.contains("no Workload manages") && out.stderr.contains("default/loose"),
        "{out:#?}"
    );
    assert!(exists(&channel, "default", "loose").await);
    assert!(
        exists(&channel, "default", "web-abc12").await,
        "nothing is evicted when drain refuses"
    );

    let out = hmctl.run(&["drain", "n1", "--force"]).await.ok();
    assert!(out.stderr.contains("warning:"), "{out:#?}");
    assert!(
        out.stdout.contains("evicting instance default/loose\n"),
        "{out:#?}"
    );
    assert!(out.stdout.ends_with("node/n1 drained\n"), "{out:#?}");
    assert!(!exists(&channel, "default", "loose").await);
    assert!(!exists(&channel, "default", "web-abc12").await);
}

#[tokio::test]
async fn hmctl_drain_waits_for_finalizers_within_the_timeout() {
    let (_server, hmctl, channel) = cluster().await;
    let web = workload(&channel, "default", "web").await;
    bound_instance(
        &channel,
        "default",
        "slow",
        "n1",
        Some(&web),
        &["example.com/hold"],
    )
    .await;

    // The finalizer holds the Instance: drain gives up at its timeout.
    let out = hmctl
        .run(&["drain", "n1", "--timeout", "300ms"])
        .await
        .failed();
    assert!(
        out.stdout.contains("evicting instance default/slow\n"),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("drained"), "{out:#?}");
    assert_eq!(
        out.stderr,
        "error: timed out after 300ms waiting for 1 instance(s) to leave node/n1: default/slow\n"
    );

    // A drain that waits finishes once the finalizer is released.
    let (mut child, mut lines) = hmctl.spawn(&["drain", "n1", "--timeout", "30s"]);
    read_until(&mut lines, COMMAND_TIMEOUT, |l| {
        l == "evicting instance default/slow"
    })
    .await
    .expect("eviction line");
    let api = Api::<Instance>::new(channel.clone());
    let mut slow = api.get("default", "slow").await.expect("still there");
    assert!(slow.meta().deletion_timestamp.is_some());
    slow.meta_mut().finalizers.clear();
    api.update(&slow).await.expect("release finalizer");
    let seen = read_until(&mut lines, COMMAND_TIMEOUT, |l| l == "node/n1 drained")
        .await
        .expect("drained");
    assert!(
        seen.contains(&"evicted instance default/slow".to_string()),
        "{seen:#?}"
    );
    let status = tokio::time::timeout(COMMAND_TIMEOUT, child.wait())
        .await
        .expect("drain exits")
        .expect("wait");
    assert!(status.success());
    assert!(!exists(&channel, "default", "slow").await);
}

/// Where the Instances of `namespace` are bound: name → node ("" when unbound).
async fn placement(channel: &Channel, namespace: &str) -> BTreeMap<String, String> {
    let (all, _) = Api::<Instance>::new(channel.clone())
        .list_all(v1::ListRequest {
            namespace: namespace.into(),
            ..Default::default()
        })
        .await
        .expect("list instances");
    all.iter()
        .filter(|i| i.meta().deletion_timestamp.is_none())
        .map(|i| {
            let node = i
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default();
            (i.meta().name.clone(), node)
        })
        .collect()
}

#[tokio::test]
async fn hmctl_drain_moves_a_workload_to_the_other_node() {
    // The whole path: the apiserver's Workload controller and a real hm-scheduler.
    let (server, hmctl, channel) = cluster_with(&["--controllers", "all"]).await;
    let _scheduler = tokio::process::Command::new(bin_path("hm-scheduler"))
        .arg("--server")
        .arg(server.url())
        .env("HM_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hm-scheduler");
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 2))
        .await
        .ok();
    // Spread puts one replica on each node.
    let before = wait_for(COMMAND_TIMEOUT, || async {
        let p = placement(&channel, "default").await;
        let mut nodes: Vec<&String> = p.values().collect();
        nodes.sort();
        (nodes == ["n1", "n2"]).then_some(p)
    })
    .await
    .expect("one replica per node");
    let on_n1 = before
        .iter()
        .find(|(_, n)| *n == "n1")
        .map(|(name, _)| name.clone())
        .expect("a replica on n1");

    let out = hmctl.run(&["drain", "n1"]).await.ok();
    assert_eq!(
        out.lines(),
        [
            "node/n1 cordoned".to_string(),
            format!("evicting instance default/{on_n1}"),
            format!("evicted instance default/{on_n1}"),
            "node/n1 drained".to_string(),
        ],
        "{out:#?}"
    );

    // The Workload replaces the evicted replica, and the scheduler keeps it off n1.
    let moved = wait_for(COMMAND_TIMEOUT, || async {
        let p = placement(&channel, "default").await;
        (p.len() == 2 && p.values().all(|n| n == "n2")).then_some(())
    })
    .await;
    assert!(
        moved.is_ok(),
        "both replicas should run on n2: {:?}",
        placement(&channel, "default").await
    );
    let out = hmctl.run(&["get", "inst", "-o", "wide"]).await.ok();
    assert!(
        out.lines()[1..]
            .iter()
            .all(|l| l.split_whitespace().nth(4) == Some("n2")),
        "{out:#?}"
    );
}
