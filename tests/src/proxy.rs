//! Shared by the proxy_* tests: in-process proxies with rcgen-made node credentials,
//! a raw QUIC client for speaking the stream protocol by hand, and a SOCKS5 client.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::pki::TestCa;
use hypermesh_proxy::{Config, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A proxy running inside the test.
pub struct InProcessProxy {
    pub node: String,
    pub quic: SocketAddr,
    pub socks: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub state: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl InProcessProxy {
    /// Starts a proxy for node `node` (credentials issued by `ca`) on loopback, with
    /// SOCKS and metrics on free ports, advertising its QUIC address.
    pub async fn start(
        ca: &TestCa,
        node: &str,
        server: &str,
        containerd_socket: &Path,
        tune: impl FnOnce(&mut Config),
    ) -> InProcessProxy {
        let state = tempfile::tempdir().expect("state dir");
        ca.write_node(state.path(), node).expect("node credentials");
        let mut config = Config::new(server, state.path());
        config.listen_quic = "127.0.0.1:0".parse().expect("addr");
        config.socks = Some("127.0.0.1:0".parse().expect("addr"));
        config.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
        config.containerd_socket = containerd_socket.to_path_buf();
        tune(&mut config);
        let proxy = Proxy::bind(config).await.expect("proxy binds");
        let quic = proxy.quic_addr().expect("quic addr");
        let socks = proxy.socks_addr();
        let metrics = proxy.metrics_addr();
        let shutdown = CancellationToken::new();
        tokio::spawn(proxy.serve(shutdown.clone()));
        InProcessProxy {
            node: node.into(),
            quic,
            socks,
            metrics,
            state,
            shutdown,
        }
    }

    /// Stops it.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// GET `path` on its metrics port.
    pub async fn http_get(&self, path: &str) -> String {
        http_get(self.metrics.expect("metrics"), path).await
    }
}

impl Drop for InProcessProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A minimal HTTP/1.0 GET; the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

/// A raw QUIC client endpoint with the credentials of node `node` from `ca`.
pub fn quic_client(ca: &TestCa, node: &str) -> (quinn::Endpoint, tempfile::TempDir) {
    let state = tempfile::tempdir().expect("state dir");
    ca.write_node(state.path(), node).expect("credentials");
    let credentials =
        hypermesh_proxy::tls::NodeCredentials::load(state.path()).expect("credentials load");
    let (_, client) = credentials.quic_configs().expect("quic configs");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
    let mut config = quinn::ClientConfig::new(Arc::new(client));
    config.transport_config(Arc::new(hypermesh_proxy::transport::transport_config()));
    endpoint.set_default_client_config(config);
    (endpoint, state)
}

/// Where a SOCKS request points.
pub enum SocksTarget<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// Opens a SOCKS5 CONNECT through `socks`; the reply code and, on success, the stream.
pub async fn socks_connect(
    socks: SocketAddr,
    target: SocksTarget<'_>,
    port: u16,
) -> (u8, Option<TcpStream>) {
    let s = TcpStream::connect(socks).await.expect("connect socks");
    socks_over(s, target, port).await
}

/// SOCKS5 CONNECT over an already connected stream to a SOCKS server.
pub async fn socks_over(
    s: TcpStream,
    target: SocksTarget<'_>,
    port: u16,
) -> (u8, Option<TcpStream>) {
    try_socks_over(s, target, port)
        .await
        .expect("SOCKS5 exchange with the proxy")
}

/// [`socks_over`], failing instead of panicking when the proxy closes the connection
/// or answers nonsense (for pollers that count failures).
pub async fn try_socks_over(
    mut s: TcpStream,
    target: SocksTarget<'_>,
    port: u16,
) -> std::io::Result<(u8, Option<TcpStream>)> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    s.write_all(&[5, 1, 0]).await?;
    let mut method = [0u8; 2];
    s.read_exact(&mut method).await?;
    if method != [5, 0] {
        return Err(bad(format!("no-auth refused: {method:?}")));
    }
    let mut req = vec![5, 1, 0];
    match target {
        SocksTarget::Ip(IpAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.octets());
        }
        SocksTarget::Ip(IpAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.octets());
        }
        SocksTarget::Name(n) => {
            req.push(3);
            req.push(u8::try_from(n.len()).map_err(|_| bad(format!("name too long: {n}")))?);
            req.extend_from_slice(n.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).await?;
    let rest = match reply[3] {
        1 => 4,
        4 => 16,
        other => return Err(bad(format!("unexpected bound address type {other}"))),
    };
    let mut bound = vec![0u8; rest + 2];
    s.read_exact(&mut bound).await?;
    let code = reply[1];
    Ok((code, (code == 0).then_some(s)))
}

/// Sends `line` and reads back as many bytes.
pub async fn echo(stream: &mut TcpStream, line: &[u8]) -> Vec<u8> {
    stream.write_all(line).await.expect("write");
    let mut back = vec![0u8; line.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo read");
    back
}

/// An address in the global prefix that nothing has.
pub fn unknown_global() -> Ipv6Addr {
    "fd48:4d00:dead:beef::1".parse().expect("addr")
}

/// `GET /` over `stream` (HTTP/1.0); the body.
pub async fn http_get_over(stream: TcpStream, host: &str) -> String {
    try_http_get_over(stream, host)
        .await
        .expect("an HTTP response in time")
}

/// [`http_get_over`], failing instead of panicking (15 s at most).
pub async fn try_http_get_over(mut stream: TcpStream, host: &str) -> std::io::Result<String> {
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 15 s"))??;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out))
}
