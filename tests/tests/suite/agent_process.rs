//! The `hm-agent` binary, driven by its flags against a real `hm-apiserver` process,
//! registers its Node with the given labels and reserve, serves its metrics, and exits 0
//! on SIGTERM.

use hypermesh_tests::agent;

use std::process::Stdio;

use agent::{TIMEOUT, condition};
use hypermesh_api::Api;
use hypermesh_api::Resource;
use hypermesh_api::v1::Node;
use hypermesh_tests::{ApiServerProcess, bin_path, wait_for};

#[tokio::test]
async fn hm_agent_registers_and_stops_on_sigterm() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let state = tempfile::tempdir().expect("state dir");
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut child = tokio::process::Command::new(bin_path("hm-agent"))
        .args(["--server", server.url(), "--node-name", "proc-node"])
        .arg("--state-dir")
        .arg(state.path())
        .arg("--containerd-socket")
        .arg(state.path().join("containerd.sock"))
        .args([
            "--label",
            "hypermesh.io/role=edge",
            "--reserve",
            "memory=1Gi",
            "--heartbeat-interval",
            "500ms",
            "--metrics-addr",
            &metrics_addr.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hm-agent");

    let nodes: Api<Node> = Api::new(server.channel().await.expect("channel"));
    let node = wait_for(TIMEOUT, || async {
        let n = nodes.get("", "proc-node").await.ok()?;
        (condition(&n, "Ready")?.status == "True").then_some(n)
    })
    .await
    .expect("hm-agent registers a Ready node");
    assert_eq!(
        node.meta()
            .labels
            .get("hypermesh.io/role")
            .map(String::as_str),
        Some("edge")
    );
    let status = node.status.expect("status");
    assert_ne!(status.capacity["memory"], status.allocatable["memory"]);
    assert_eq!(status.capacity["cpu"], status.allocatable["cpu"]);

    // Heartbeats are counted on /metrics.
    wait_for(TIMEOUT, || async {
        let body = http_get(metrics_addr, "/metrics").await?;
        let count: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix("hypermesh_agent_heartbeats_total "))?
            .trim()
            .parse()
            .ok()?;
        (count >= 1.0).then_some(())
    })
    .await
    .expect("heartbeats counted on /metrics");

    let pid = child.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("hm-agent exits after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "exit status {exit}");
}

/// A plain HTTP/1.0 GET; the body, or None on any failure.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}
