//! Reading `/metrics` endpoints as Prometheus does: a plain HTTP scrape (classic text,
//! or OpenMetrics when asked for), one sample's value, waiting for a sample, and
//! `promtool check metrics` (Debian's `prometheus` package) on a body.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wait_for;

/// A loopback address nothing listens on yet.
pub fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// `GET /metrics` with `accept` (if any): the content type and the body.
pub async fn scrape(address: SocketAddr, accept: Option<&str>) -> anyhow::Result<(String, String)> {
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
pub fn promtool_check(what: &str, body: &str) {
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

/// The value of the sample `series` (name with labels, as printed) in a classic body.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes `address` until the sample `series` satisfies `ok` (within `timeout`); the
/// classic body. Panics with the last scrape otherwise.
pub async fn wait_sample_within(
    address: SocketAddr,
    series: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> String {
    let found = wait_for(timeout, || async {
        let (_, body) = scrape(address, None).await.ok()?;
        sample(&body, series).filter(|v| ok(*v)).map(|_| body)
    })
    .await;
    match found {
        Ok(body) => body,
        Err(e) => {
            let body = scrape(address, None).await.map(|(_, b)| b);
            panic!("{series}: {e}; last scrape:\n{body:?}")
        }
    }
}

/// [`wait_sample_within`] 30 s.
pub async fn wait_sample(address: SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> String {
    wait_sample_within(address, series, Duration::from_secs(30), ok).await
}
