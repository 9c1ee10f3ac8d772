//! A headless Chromium driven over WebDriver (W3C, JSON over HTTP) through Debian's
//! `chromedriver`: just the few commands the browser tests need (open a URL, run a
//! script, find, type into and click elements, take a screenshot), spoken over a
//! plain HTTP/1.1 connection to chromedriver on loopback.
//!
//! Without `chromium` and `chromium-driver`, [`Browser::start`] returns `None` so a
//! developer's run skips the test with a hint, but under `CI=true` it panics: CI must
//! never pass a browser test it did not run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Where Debian puts them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest a WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest WebDriver answer read (screenshots are the big ones).
const MAX_ANSWER: usize = 64 << 20;

/// One request to `127.0.0.1:port`; returns the status and the body. `Connection:
/// close`, so the body ends at EOF (chunked answers are decoded).
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let body = body.unwrap_or("");
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).await?;
        // Read until the body is complete: by Content-Length when given (chromedriver
        // keeps the connection open), else to EOF.
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if complete_length(&raw).is_some_and(|len| raw.len() >= len) {
                break;
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.len() > MAX_ANSWER {
                bail!("answer over {MAX_ANSWER} bytes");
            }
        }
        parse_answer(&raw)
    };
    tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path} on port {port} took over {COMMAND_TIMEOUT:?}"))?
}

/// The whole answer's length once its headers are in and carry a Content-Length.
fn complete_length(raw: &[u8]) -> Option<usize> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    })?;
    Some(split + 4 + length)
}

fn parse_answer(raw: &[u8]) -> Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        body = dechunk(&body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk header"))?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size_text:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            bail!("chunk cut short");
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// A chromedriver process with one headless Chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// A found element.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium, or `None` when they are not
    /// installed and `CI` is not `true` (panics under CI).
    pub async fn start() -> Option<Browser> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        if !missing.is_empty() {
            let hint = format!(
                "{} missing: install Debian's chromium and chromium-driver (scripts/setup.sh does)",
                missing.join(", ")
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{hint}; CI=true, so the browser test fails instead of skipping");
            }
            eprintln!("skipping the browser test: {hint}");
            return None;
        }
        Some(
            Browser::launch()
                .await
                .expect("start chromedriver and chromium"),
        )
    }

    async fn launch() -> Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn chromedriver")?;
        crate::wait_for(Duration::from_secs(30), || async {
            let (status, body) = http(port, "GET", "/status", &[], None).await.ok()?;
            (status == 200 && body.contains("\"ready\":true")).then_some(())
        })
        .await
        .context("chromedriver never became ready")?;
        let profile = tempfile::tempdir()?;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1800",
                    "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let value = browser.command("POST", "/session", capabilities).await?;
        browser.session = value["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {value}"))?
            .to_string();
        Ok(browser)
    }

    /// One WebDriver command; returns its `value`, or the WebDriver error.
    async fn command(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let body = (method == "POST").then(|| body.to_string());
        let (status, text) = http(
            self.port,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_deref(),
        )
        .await?;
        let answer: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: not JSON: {text:.200}"))?;
        if status != 200 {
            bail!("{method} {path}: {status}: {}", answer["value"]);
        }
        Ok(answer["value"].clone())
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) -> Result<()> {
        self.command("POST", &self.at("/url"), json!({"url": url}))
            .await
            .map(drop)
    }

    /// The page's URL now.
    pub async fn url(&self) -> Result<String> {
        let v = self.command("GET", &self.at("/url"), Value::Null).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn eval(&self, script: &str, args: Value) -> Result<Value> {
        self.command(
            "POST",
            &self.at("/execute/sync"),
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// The first element matching CSS `selector`.
    pub async fn find(&self, selector: &str) -> Result<Element> {
        let v = self
            .command(
                "POST",
                &self.at("/element"),
                json!({"using": "css selector", "value": selector}),
            )
            .await?;
        Ok(Element(
            v[ELEMENT]
                .as_str()
                .ok_or_else(|| anyhow!("no element in {v}"))?
                .to_string(),
        ))
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) -> Result<()> {
        let path = self.at(&format!("/element/{}/click", element.0));
        self.command("POST", &path, json!({})).await.map(drop)
    }

    /// Replaces what the input `element` holds by typing: select all (Ctrl+A), then
    /// `text`, as a user would (WebDriver's Clear also blurs the element, which a page
    /// may answer by re-rendering).
    pub async fn type_into(&self, element: &Element, text: &str) -> Result<()> {
        let value = self.at(&format!("/element/{}/value", element.0));
        let keys = format!("\u{E009}a\u{E000}{text}");
        self.command("POST", &value, json!({"text": keys}))
            .await
            .map(drop)
    }

    /// Saves a PNG of the page as `name` under [`artifacts_dir`]; returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let v = self
            .command("GET", &self.at("/screenshot"), Value::Null)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .context("screenshot base64")?;
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Ends the session and chromedriver.
    pub async fn quit(mut self) {
        let _ = self.command("DELETE", &self.at(""), Value::Null).await;
        let _ = self.driver.kill().await;
    }
}

/// `target/test-artifacts`: where tests leave screenshots (next to the binaries of
/// the running test's target directory).
pub fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> → target
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("test-artifacts")
}
