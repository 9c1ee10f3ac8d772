//! Story (issue 19, item 3): a whole cluster on three hosts loses a host and an
//! apiserver, and the service it runs keeps answering.
//!
//! - The control plane: a 3-member etcd, two `hm-apiserver` processes on it (TLS, their
//!   controllers leader-elected), reached from the hosts at 198.51.100.10 and .11 on the
//!   lab's bridge, and two leader-elected `hm-scheduler` processes.
//! - Three hosts a, b, c (network namespaces on the bridge at 198.51.100.1-3), each with
//!   its own containerd, `hm-agent` and `hm-proxy`; each agent joins with a one-use
//!   token and the CA pin over mTLS, and agents and proxies are given both apiservers.
//! - A Workload of 6 replicas spreads 2 per host (the scheduler's default spread
//!   score), every Instance Running on its host's containerd; a Route over them answers
//!   through A's proxy, polled from then on with every failure counted.
//! - b's agent is killed (SIGKILL) and, at once, the apiserver that leads the
//!   controllers and that every client tries first. Node b goes NotReady within its
//!   Lease (plus the controllers' leader hand-over); its Instances are evicted once
//!   their toleration of an unreachable node (5 s) runs out, and run again on a and c;
//!   a and c stay Ready throughout, their agents on the surviving apiserver. An admin
//!   client writing all along continues on it.
//! - Then host b dies whole (its containers, containerd, proxy and namespace): the
//!   Workload stays at 6 Running on a and c, and the Route keeps answering.
//! - Nothing is lost: every object the test created is read back by name at the end
//!   (each join token used once).
//!
//! Timings (setup, time to NotReady, time to 6 Running again, the Route's longest gap,
//! the longest write across the apiserver's death) are printed and kept in
//! `target/test-artifacts/e2e_multi_host.txt`.

use hypermesh_tests::containerd;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd::build_test_archive;
use hypermesh_api::v1::{
    self, Asset, Instance, InstancePhase, JoinToken, Lease, ListRequest, Node, Probe, Route,
    RoutePort, RouteSpec, TcpSocketAction, Workload,
};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::agent::wait_registered;
use hypermesh_tests::etcd::require_etcd;
use hypermesh_tests::fixtures::meta;
use hypermesh_tests::hosts::{Containerds, crash_host, kill9, try_route_get};
use hypermesh_tests::multi_host::{self, ControlPlane, start_host};
use hypermesh_tests::netns::require_netns_tools;
use hypermesh_tests::node_lifecycle::{ready, tainted, tolerate_unreachable};
use hypermesh_tests::traffic::{RoutePoller, Writer};
use hypermesh_tests::wait_for;

const HOSTS: [(&str, &str); 3] = [
    ("a", "198.51.100.1"),
    ("b", "198.51.100.2"),
    ("c", "198.51.100.3"),
];
/// The agents' Lease (`--lease-duration`): the node timeout.
const NODE_LEASE: Duration = Duration::from_secs(5);
/// The controllers' leader Lease (`--controllers-lease-seconds`).
const CONTROLLERS_LEASE: Duration = Duration::from_secs(5);
/// How long the web Instances tolerate their node being unreachable before they are
/// evicted (their toleration of the unreachable taint; without one, hm-apiserver's
/// eviction grace of 30 s applies).
const EVICTION_GRACE: Duration = Duration::from_secs(5);
const REPLICAS: usize = 6;
/// The longest the Route may go without answering.
const ROUTE_GAP_LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_lose_a_host_and_an_apiserver_and_the_route_keeps_answering() {
    require_netns_tools();
    containerd::require_tools();
    require_etcd();
    let started = Instant::now();
    let lab = Arc::new(multi_host::lab(&[
        ("a", "198.51.100.1/25", "fd00:1::1/64"),
        ("b", "198.51.100.2/25", "fd00:1::2/64"),
        ("c", "198.51.100.3/25", "fd00:1::3/64"),
    ]));
    let controllers_lease = CONTROLLERS_LEASE.as_secs().to_string();
    let mut control_plane =
        ControlPlane::start(&lab, &["--controllers-lease-seconds", &controllers_lease]).await;
    let channel = control_plane.channel();
    let nodes: Api<Node> = Api::new(channel.clone());
    let instances: Api<Instance> = Api::new(channel.clone());
    let workloads: Api<Workload> = Api::new(channel.clone());
    let routes: Api<Route> = Api::new(channel.clone());
    let leases: Api<Lease> = Api::new(channel.clone());
    let assets: Api<Asset> = Api::new(channel.clone());
    let join_tokens: Api<JoinToken> = Api::new(channel.clone());

    let images = tempfile::tempdir().expect("image dir");
    build_test_archive(images.path());
    let mut containerds = Containerds(Vec::new());
    let node_lease = format!("{}s", NODE_LEASE.as_secs());
    let mut hosts = Vec::new();
    let mut tokens = Vec::new();
    for host in HOSTS {
        let (host, token) = start_host(
            &lab,
            &control_plane,
            host,
            images.path(),
            &mut containerds,
            &["--lease-duration", &node_lease],
        )
        .await;
        hosts.push(host);
        tokens.push(token);
    }
    let all_ready = wait_for(Duration::from_secs(90), || async {
        let (all, _) = nodes.list_all(ListRequest::default()).await.ok()?;
        let ready = all.iter().filter(|n| is_ready(n)).count();
        (ready == HOSTS.len()).then_some(())
    })
    .await;
    if all_ready.is_err() {
        panic!("three Ready nodes: {}", logs(&hosts));
    }
    // The scheduler counts the capacity of admitted Assets only.
    for (name, _) in HOSTS {
        wait_registered(&nodes, &assets, name).await;
    }
    let setup = started.elapsed();

    // Six replicas, two per host, and a Route over them answering through A's proxy.
    workloads.create(&web(REPLICAS)).await.expect("workload");
    routes.create(&route()).await.expect("route");
    let placed = wait_for(Duration::from_secs(90), || {
        running_web(&instances, &["a", "b", "c"])
    })
    .await;
    let placed = placed.unwrap_or_else(|e| {
        panic!(
            "6 Running: {e}{}{}",
            logs(&hosts),
            control_plane.scheduler_logs()
        )
    });
    let spread = per_node(&placed);
    assert_eq!(
        spread,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]),
        "the scheduler spreads the replicas 2 per host"
    );
    for host in &hosts {
        assert_eq!(
            host.running_tasks(),
            2,
            "containerd of {} runs 2",
            host.name
        );
    }
    wait_for(Duration::from_secs(30), || async {
        try_route_get(&lab, "a", "web").await.ok()
    })
    .await
    .unwrap_or_else(|e| panic!("the Route answers from A: {e}{}", logs(&hosts)));
    let poller = RoutePoller::start(lab.clone(), "a", "web");
    let writer = Writer::start(leases.clone());

    // b's agent dies, and with it the apiserver leading the controllers (the first
    // every agent, proxy, scheduler and client tries).
    let killed = Instant::now();
    kill9(&mut hosts[1].agent).await;
    control_plane.kill_apiserver(0).await;
    let not_ready = wait_for(Duration::from_secs(60), || async {
        let b = nodes.get("", "b").await.ok()?;
        (!is_ready(&b) && tainted(&b)).then(|| killed.elapsed())
    })
    .await
    .expect("node b goes NotReady and is tainted unreachable");
    // The new leader gives every node a full Lease before marking it.
    let node_timeout = CONTROLLERS_LEASE + NODE_LEASE + Duration::from_secs(10);
    assert!(
        not_ready <= node_timeout,
        "node b NotReady after {not_ready:?}, not within {node_timeout:?}"
    );
    let rescheduled = wait_for(EVICTION_GRACE + Duration::from_secs(60), || async {
        running_web(&instances, &["a", "c"]).await
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "b's Instances run elsewhere: {e}{}{}",
            logs(&hosts),
            control_plane.scheduler_logs()
        )
    });
    let back_to_six = killed.elapsed();
    assert_eq!(rescheduled.len(), REPLICAS);
    for name in ["a", "c"] {
        let node = nodes.get("", name).await.expect("node");
        assert!(
            is_ready(&node) && !tainted(&node),
            "node {name} stayed Ready on the surviving apiserver: {node:?}"
        );
    }

    let per_node_after = per_node(&rescheduled);
    for host in [&hosts[0], &hosts[2]] {
        assert_eq!(
            host.running_tasks(),
            per_node_after.get(host.name).copied().unwrap_or(0),
            "containerd of {} runs its Instances",
            host.name
        );
    }

    // Then the whole host b goes: containers, containerd, proxy, namespace.
    let crashed = Instant::now();
    crash_host(&lab, &mut hosts[1]).await;
    wait_for(Duration::from_secs(60), || async {
        let running = running_web(&instances, &["a", "c"]).await?;
        let w = workloads.get("default", "web").await.ok()?;
        let available = w.status.map(|s| s.available_replicas)?;
        (available == REPLICAS as i32).then_some(running)
    })
    .await
    .expect("6 Running on a and c after host b died");
    let six_after_crash = crashed.elapsed();
    // The Route is polled a little longer with b gone.
    poller.answers(10).await;
    let route = poller.stop().await;

    // Last, host c dies whole without warning, its Instances still Running in the API:
    // A's proxy routes around them until they are evicted and run again on a.
    let poller = RoutePoller::start(lab.clone(), "a", "web");
    poller.answers(4).await;
    let c_crashed = Instant::now();
    crash_host(&lab, &mut hosts[2]).await;
    let c_not_ready = wait_for(Duration::from_secs(60), || async {
        let c = nodes.get("", "c").await.ok()?;
        (!is_ready(&c) && tainted(&c)).then(|| c_crashed.elapsed())
    })
    .await
    .expect("node c goes NotReady and is tainted unreachable");
    let within = NODE_LEASE + Duration::from_secs(10);
    assert!(
        c_not_ready <= within,
        "node c NotReady after {c_not_ready:?}, not within {within:?}"
    );
    let all_on_a = wait_for(EVICTION_GRACE + Duration::from_secs(60), || async {
        running_web(&instances, &["a"]).await
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "c's Instances run on a: {e}{}{}",
            logs(&hosts),
            control_plane.scheduler_logs()
        )
    });
    let c_back_to_six = c_crashed.elapsed();
    assert_eq!(
        hosts[0].running_tasks(),
        REPLICAS,
        "a's containerd runs all 6"
    );
    poller.answers(10).await;
    let route_c = poller.stop().await;
    let written = writer.stop().await;

    // Nothing lost: every object created is read back by name.
    let workload = workloads.get("default", "web").await.expect("workload web");
    assert_eq!(workload.spec.as_ref().map(|s| s.replicas), Some(6));
    routes.get("default", "web").await.expect("route web");
    for (name, _) in &written.names {
        leases
            .get("default", name)
            .await
            .unwrap_or_else(|e| panic!("lease {name} written during the failover: {e:?}"));
    }
    for (name, _) in HOSTS {
        nodes.get("", name).await.expect("node");
    }
    for name in &tokens {
        let token = join_tokens.get("", name).await.expect("join token");
        assert_eq!(
            token.status.map(|s| s.used),
            Some(1),
            "join token {name} was used once"
        );
    }
    for instance in &all_on_a {
        instances
            .get("default", &instance.meta().name)
            .await
            .expect("instance");
    }
    assert!(
        control_plane.schedulers_alive(),
        "both schedulers still run"
    );

    let report = format!(
        "e2e_multi_host: setup (etcd x3, apiservers x2, 3 hosts joined and Ready) {setup:.1?}\n\
         e2e_multi_host: agent Lease {NODE_LEASE:?}, controllers Lease {CONTROLLERS_LEASE:?}, \
         the Instances tolerate an unreachable node for {EVICTION_GRACE:?}\n\
         e2e_multi_host: b's agent and the leading apiserver killed: node b NotReady after {not_ready:.1?}, \
         6 Running again (none on b) after {back_to_six:.1?}\n\
         e2e_multi_host: then host b died whole: 6 Running and available {six_after_crash:.1?} later\n\
         e2e_multi_host: Route from A meanwhile: {}\n\
         e2e_multi_host: host c died whole at once: node c NotReady after {c_not_ready:.1?}, \
         6 Running on a after {c_back_to_six:.1?}\n\
         e2e_multi_host: Route from A meanwhile: {}\n\
         e2e_multi_host: {} objects written from before the apiserver's death to the end, longest write {:.1?}, {} retries\n\
         e2e_multi_host: total {:.1?}\n",
        route.summary(),
        route_c.summary(),
        written.names.len(),
        written.longest,
        written.retries,
        started.elapsed(),
    );
    print!("{report}");
    let artifacts = containerd::workspace_root().join("target/test-artifacts");
    let _ = std::fs::create_dir_all(&artifacts);
    let _ = std::fs::write(artifacts.join("e2e_multi_host.txt"), &report);
    for stats in [&route, &route_c] {
        assert!(
            stats.longest_gap <= ROUTE_GAP_LIMIT,
            "the Route went {:?} without answering (limit {ROUTE_GAP_LIMIT:?}); errors: {:?}",
            stats.longest_gap,
            stats.errors
        );
    }
    // A runs 2 (then 3) of the Instances: more means A's proxy balanced over other hosts.
    assert!(
        route.bodies.len() > 3,
        "the Route balances over the hosts' Instances: {:?}",
        route.bodies
    );
    assert!(!written.names.is_empty(), "the writer wrote");

    for host in &mut hosts {
        kill9(&mut host.proxy).await;
        kill9(&mut host.agent).await;
    }
    drop(containerds);
}

fn is_ready(node: &Node) -> bool {
    ready(node).is_some_and(|c| c.status == "True")
}

/// The web Instances when exactly [`REPLICAS`] exist, all Running and Ready with an
/// address, each on one of the nodes `on`.
async fn running_web(instances: &Api<Instance>, on: &[&str]) -> Option<Vec<Instance>> {
    let (all, _) = instances
        .list_all(ListRequest {
            namespace: "default".into(),
            label_selector: "app=web".into(),
            ..Default::default()
        })
        .await
        .ok()?;
    let live: Vec<Instance> = all
        .into_iter()
        .filter(|i| i.meta().deletion_timestamp.is_none())
        .collect();
    let good = |i: &Instance| {
        let node = i.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("");
        i.status.as_ref().is_some_and(|s| {
            s.phase == InstancePhase::Running as i32
                && !s.address.is_empty()
                && s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
        }) && on.contains(&node)
    };
    (live.len() == REPLICAS && live.iter().all(good)).then_some(live)
}

fn per_node(instances: &[Instance]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in instances {
        let node = i
            .spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        *counts.entry(node).or_insert(0) += 1;
    }
    counts
}

/// Workload `default/web`: busybox httpd on 8080 serving `web-<random>` (so answers tell
/// Instances apart), Ready once it accepts connections.
fn web(replicas: usize) -> Workload {
    let mut w = hypermesh_tests::workload::workload(
        "web",
        i32::try_from(replicas).expect("replicas"),
        containerd::TEST_IMAGE,
    );
    let template = w
        .spec
        .as_mut()
        .and_then(|s| s.template.as_mut())
        .expect("template");
    template.restart_policy = v1::RestartPolicy::Always as i32;
    template.tolerations = vec![tolerate_unreachable(
        i64::try_from(EVICTION_GRACE.as_secs()).expect("seconds"),
    )];
    template.termination_grace_period_seconds = 1;
    let container = &mut template.containers[0];
    container.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "mkdir -p /www && echo web-$RANDOM$RANDOM > /www/index.html && exec httpd -f -p 8080 -h /www".into(),
    ];
    container.ports = vec![v1::ContainerPort {
        name: "http".into(),
        container_port: 8080,
        protocol: v1::Protocol::Tcp as i32,
    }];
    container.resources = Some(v1::ResourceRequirements {
        cpu: "100m".into(),
        memory: "32Mi".into(),
        ..Default::default()
    });
    container.readiness_probe = Some(Probe {
        tcp_socket: Some(TcpSocketAction { port: 8080 }),
        period_seconds: 1,
        ..Default::default()
    });
    w
}

/// Route `default/web`: port 80 to the web Instances' 8080.
fn route() -> Route {
    Route {
        metadata: Some(meta("default", "web")),
        spec: Some(RouteSpec {
            selector: [("app".to_string(), "web".to_string())].into(),
            ports: vec![RoutePort {
                name: "http".into(),
                port: 80,
                target_port: 8080,
                protocol: v1::Protocol::Tcp as i32,
            }],
        }),
        status: None,
    }
}

/// The logs of every host's agent and proxy, for failure messages.
fn logs(hosts: &[hypermesh_tests::hosts::Host]) -> String {
    let mut out = String::new();
    for host in hosts {
        for file in ["agent.log", "proxy.log"] {
            let text = std::fs::read_to_string(host.dir.path().join(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("\n--- {} {file} ---\n", host.name));
            out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
        }
    }
    out
}
