//! Every `/metrics` endpoint passes `promtool check metrics` (Prometheus' own linter,
//! Debian's `prometheus` package): the apiserver's and the agent's, served in the
//! classic text format to a plain scraper, and in OpenMetrics (ending in `# EOF`) to
//! one that asks for it, as Prometheus does.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use hypermesh_api::v1::Workload;
use hypermesh_tests::agent::{self, Agent};
use hypermesh_tests::{InProcessApiServer, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// A loopback address nothing listens on yet.
fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// `GET /metrics` with `accept` (if any): the content type and the body.
async fn scrape(address: SocketAddr, accept: Option<&str>) -> anyhow::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: x\r\n{accept}\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no header end in {response:?}"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.0 200"), "status: {head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    Ok((content_type, body.to_string()))
}

/// Runs `promtool check metrics` on `body`; panics with its complaints if any.
fn promtool_check(what: &str, body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed on the {what}'s /metrics:\n{}{}\n--- body ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

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
