//! Every `/metrics` endpoint passes `promtool check metrics` (Prometheus' own linter,
//! Debian's `prometheus` package): the apiserver's, the agent's, the scheduler's and
//! the proxy's, served in the classic text format to a plain scraper, and in
//! OpenMetrics (ending in `# EOF`) to one that asks for it, as Prometheus does. The
//! values move with what happens: bindings and unschedulable attempts on the
//! scheduler, accepted connections and their handshake latency on the proxy, the
//! containerd calls of a real container start and stop and the Lease renewals' lag on
//! the agent. The agent's per-Instance metrics are checked with an Instance running,
//! in `agent_accounting`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::v1::{InstancePhase, RestartPolicy, Workload};
use hypermesh_proxy::header::{Protocol, Reply, StreamHeader};
use hypermesh_runtime::health::Health;
use hypermesh_scheduler::metrics::SchedulerMetrics;
use hypermesh_tests::agent::{self, Agent};
use hypermesh_tests::containerd::TEST_IMAGE;
use hypermesh_tests::metrics::{free_address, promtool_check, sample, scrape, wait_sample};
use hypermesh_tests::node_env::Env;
use hypermesh_tests::pki::TestCa;
use hypermesh_tests::proxy::{InProcessProxy, quic_client, unknown_global};
use hypermesh_tests::scheduler::{self as sim, SimCluster};
use hypermesh_tests::{InProcessApiServer, wait_for};
use tokio_util::sync::CancellationToken;

const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// Checks both formats of the endpoint at `address`.
async fn check_endpoint(what: &str, address: SocketAddr, must_contain: &str) {
    let (content_type, classic) = scrape(address, None).await.expect("scrape");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(
        classic.contains(must_contain),
        "{what}: no {must_contain} in\n{classic}"
    );
    assert!(!classic.contains("# EOF"), "{classic}");
    promtool_check(what, &classic);

    let (content_type, openmetrics) = scrape(address, Some(OPENMETRICS)).await.expect("scrape");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_and_agent_metrics_pass_promtool() {
    let apiserver_metrics = free_address();
    let server = InProcessApiServer::start_with(|c| c.metrics_addr = Some(apiserver_metrics))
        .await
        .expect("apiserver");
    // Some traffic, so the request counters and histograms have samples.
    let workloads = server.api::<Workload>();
    workloads
        .list(hypermesh_api::v1::ListRequest::default())
        .await
        .expect("list");
    check_endpoint("apiserver", apiserver_metrics, "# TYPE ").await;

    let agent_metrics = free_address();
    let state = tempfile::tempdir().expect("tmp");
    let mut config = agent::config(
        server.url(),
        "metrics-node",
        state.path(),
        state.path().join("no-containerd.sock"),
    );
    config.metrics_addr = Some(agent_metrics);
    let agent = Agent::start(config);
    wait_for(Duration::from_secs(30), || async {
        scrape(agent_metrics, None).await.ok()
    })
    .await
    .expect("agent serves /metrics");
    check_endpoint("agent", agent_metrics, "# TYPE ").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_metrics_pass_promtool_and_count_attempts() {
    let cluster = SimCluster::without_scheduler().await;
    let metrics = Arc::new(SchedulerMetrics::default());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let address = hypermesh_scheduler::metrics::serve(
        "127.0.0.1:0".parse().expect("addr"),
        &metrics,
        Health::new(),
        shutdown.clone(),
    )
    .await
    .expect("scheduler metrics bind");
    cluster.start_scheduler(hypermesh_scheduler::Config {
        metrics: metrics.clone(),
        ..Default::default()
    });
    cluster
        .add_node(sim::node("metrics-a", "2", "4Gi").build())
        .await;
    cluster.add(sim::instance("fits").cpu("500m").build()).await;
    cluster
        .add(sim::instance("too-big").cpu("64").build())
        .await;
    cluster.wait_bound("default", "fits").await;

    let scheduled = "hypermesh_scheduler_schedule_attempts_total{result=\"scheduled\"}";
    wait_sample(address, scheduled, |v| v >= 1.0).await;
    let unschedulable = "hypermesh_scheduler_schedule_attempts_total{result=\"unschedulable\"}";
    wait_sample(address, unschedulable, |v| v >= 1.0).await;
    let parked = "hypermesh_scheduler_pending_instances{queue=\"unschedulable\"}";
    let body = wait_sample(address, parked, |v| v == 1.0).await;
    let binds = sample(&body, "hypermesh_scheduler_binding_duration_seconds_count");
    assert!(binds.is_some_and(|n| n >= 1.0), "one Bind timed:\n{body}");
    check_endpoint("scheduler", address, "# TYPE hypermesh_scheduler_").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_metrics_pass_promtool_and_count_connections() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let ca = TestCa::new().expect("ca");
    let nowhere = std::path::Path::new("/nonexistent/containerd.sock");
    let proxy = InProcessProxy::start(&ca, "metrics-proxy", server.url(), nowhere, |_| {}).await;
    let address = proxy.metrics.expect("metrics address");

    // A peer connects and asks for an address nobody has.
    let (client, _state) = quic_client(&ca, "metrics-peer");
    let connection = client
        .connect(
            proxy.quic,
            &hypermesh_proxy::tls::server_name_for("metrics-proxy"),
        )
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let header = StreamHeader {
        address: unknown_global(),
        port: 80,
        protocol: Protocol::Tcp,
        relayed: false,
    };
    send.write_all(&header.encode()).await.expect("write");
    let mut reply = [0u8; 1];
    recv.read_exact(&mut reply).await.expect("reply");
    assert_eq!(Reply::from_byte(reply[0]), Reply::UnknownAddress);

    let accepted = "hypermesh_proxy_connections_total{side=\"accept\"}";
    let body = wait_sample(address, accepted, |v| v >= 1.0).await;
    let handshakes = sample(
        &body,
        "hypermesh_proxy_handshake_duration_seconds_count{side=\"accept\"}",
    );
    assert!(
        handshakes.is_some_and(|n| n >= 1.0),
        "handshake timed:\n{body}"
    );
    assert_eq!(
        sample(&body, "hypermesh_proxy_peer_connections"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "hypermesh_proxy_flows_total{side=\"target\",result=\"unknown_address\"}"
        ),
        Some(1.0),
        "{body}"
    );
    for path in ["direct", "relay"] {
        let series =
            format!("hypermesh_proxy_mesh_bytes_total{{direction=\"sent\",path=\"{path}\"}}");
        assert!(sample(&body, &series).is_some(), "{series} in\n{body}");
    }
    check_endpoint("proxy", address, "# TYPE hypermesh_proxy_").await;
    connection.close(0u32.into(), b"done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_time_containerd_calls_and_lease_renewals() {
    let address = free_address();
    let env = Env::start_with(|c| c.metrics_addr = Some(address)).await;
    let start = "hypermesh_agent_runtime_operation_duration_seconds_count{operation=\"start\",result=\"ok\"}";
    let before = scrape(address, None)
        .await
        .ok()
        .and_then(|(_, body)| sample(&body, start))
        .unwrap_or(0.0);
    assert_eq!(before, 0.0, "no container started yet");
    env.run(
        "timed",
        TEST_IMAGE,
        &["sleep", "3600"],
        RestartPolicy::Never,
    )
    .await;
    env.wait_status("timed", "RUNNING", |s| {
        s.phase == InstancePhase::Running as i32
    })
    .await;
    // The start on containerd was timed, and so was the create before it; the test
    // image came from an archive import.
    let body = wait_sample(address, start, |v| v == 1.0).await;
    for series in [
        "hypermesh_agent_runtime_operation_duration_seconds_count{operation=\"create\",result=\"ok\"}",
        "hypermesh_agent_runtime_operation_duration_seconds_count{operation=\"import\",result=\"ok\"}",
    ] {
        assert!(
            sample(&body, series).is_some_and(|n| n >= 1.0),
            "{series} in\n{body}"
        );
    }
    let sum = sample(
        &body,
        "hypermesh_agent_runtime_operation_duration_seconds_sum{operation=\"start\",result=\"ok\"}",
    )
    .expect("the start's duration");
    assert!(sum > 0.0 && sum < 60.0, "a start takes a real time: {sum}s");

    // Deleting the Instance stops its container: SIGTERM, then delete, timed each and
    // as a whole.
    hypermesh_tests::instance::delete(&env, "timed").await;
    let stopped = "hypermesh_agent_runtime_operation_duration_seconds_count{operation=\"stop\",result=\"ok\"}";
    let body = wait_sample(address, stopped, |v| v == 1.0).await;
    for operation in ["kill", "delete"] {
        let series = format!(
            "hypermesh_agent_runtime_operation_duration_seconds_count{{operation=\"{operation}\",result=\"ok\"}}"
        );
        assert!(
            sample(&body, &series).is_some_and(|n| n >= 1.0),
            "{series} in\n{body}"
        );
    }

    // Heartbeats every 300 ms: each renewal's lag is observed, and the last one is recent.
    let body = wait_sample(
        address,
        "hypermesh_agent_heartbeat_lag_seconds_count",
        |v| v >= 3.0,
    )
    .await;
    let age = sample(&body, "hypermesh_agent_lease_renewal_age_seconds").expect("lease age");
    assert!(
        (0.0..10.0).contains(&age),
        "the Lease was renewed within the last seconds: {age}"
    );
    check_endpoint(
        "agent",
        address,
        "# TYPE hypermesh_agent_runtime_operation_duration_seconds histogram",
    )
    .await;
}
