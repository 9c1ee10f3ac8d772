//! Story: hostile input at a proxy closes only the offending flow. A malformed or
//! truncated QUIC stream header resets that stream while the connection keeps
//! serving; a peer whose certificate another CA issued never gets a connection; a
//! malformed SOCKS message drops that client while others are served.

use hypermesh_tests::proxy;

use std::time::Duration;

use hypermesh_proxy::header::{Protocol, Reply, StreamHeader};
use hypermesh_proxy::tls;
use hypermesh_tests::InProcessApiServer;
use hypermesh_tests::pki::TestCa;
use proxy::{InProcessProxy, SocksTarget, quic_client, socks_connect, unknown_global};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_headers_bad_certificates_and_bad_socks_close_only_that_flow() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let ca = TestCa::new().expect("ca");
    let nowhere = std::path::Path::new("/nonexistent/containerd.sock");
    let proxy = InProcessProxy::start(&ca, "target", server.url(), nowhere, |_| {}).await;

    // A valid peer: one connection, several streams.
    let (client, _state) = quic_client(&ca, "peer");
    let connection = client
        .connect(proxy.quic, &tls::server_name_for("target"))
        .expect("connect")
        .await
        .expect("handshake with a valid certificate");

    // 1. Garbage header: that stream is reset.
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), recv.read_exact(&mut buf)).await;
    assert!(
        matches!(read, Ok(Err(_))),
        "bad header resets the stream: {read:?}"
    );

    // 2. A truncated header that never completes: reset after the header timeout.
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(b"HM\x01").await.expect("write");
    let read = tokio::time::timeout(Duration::from_secs(15), recv.read_exact(&mut buf)).await;
    assert!(
        matches!(read, Ok(Err(_))),
        "late header resets the stream: {read:?}"
    );

    // 3. The same connection still serves: a well-formed header for an unknown address
    // gets a clean reply.
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let header = StreamHeader {
        address: unknown_global(),
        port: 80,
        protocol: Protocol::Tcp,
        relayed: false,
    };
    send.write_all(&header.encode()).await.expect("write");
    recv.read_exact(&mut buf).await.expect("reply");
    assert_eq!(Reply::from_byte(buf[0]), Reply::UnknownAddress);
    assert!(connection.close_reason().is_none(), "connection survives");

    // 4. A peer with a certificate from another CA is refused at the handshake.
    let rogue_ca = TestCa::new().expect("rogue ca");
    let (rogue, _rogue_state) = quic_client(&rogue_ca, "peer");
    let refused = rogue
        .connect(proxy.quic, &tls::server_name_for("target"))
        .expect("connect")
        .await;
    assert!(refused.is_err(), "rogue certificate refused");
    let metrics = proxy.http_get("/metrics").await;
    assert!(
        metrics.contains("hypermesh_proxy_bad_headers_total 2"),
        "{metrics}"
    );

    // 5. SOCKS: a wrong version closes that client; the next one is served.
    let socks = proxy.socks.expect("socks");
    let mut bad = tokio::net::TcpStream::connect(socks)
        .await
        .expect("connect");
    bad.write_all(&[4, 1, 0, 80, 127, 0, 0, 1, 0])
        .await
        .expect("write");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), bad.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "SOCKS4 request closed without an answer");
    // A request with a non-zero reserved byte.
    let mut bad = tokio::net::TcpStream::connect(socks)
        .await
        .expect("connect");
    bad.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut method = [0u8; 2];
    bad.read_exact(&mut method).await.expect("method");
    bad.write_all(&[5, 1, 9, 4]).await.expect("request");
    let n = tokio::time::timeout(Duration::from_secs(10), bad.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "malformed request closed");
    let (code, _) = socks_connect(socks, SocksTarget::Ip(unknown_global().into()), 80).await;
    assert_eq!(code, 4, "the next client gets a clean answer");
    let (code, _) = {
        // BIND is answered "command not supported", not crashed on.
        let mut s = tokio::net::TcpStream::connect(socks)
            .await
            .expect("connect");
        s.write_all(&[5, 1, 0]).await.expect("greeting");
        s.read_exact(&mut method).await.expect("method");
        let mut req = vec![5, 2, 0, 4]; // BIND
        req.extend_from_slice(&unknown_global().octets());
        req.extend_from_slice(&80u16.to_be_bytes());
        s.write_all(&req).await.expect("request");
        let mut reply = [0u8; 22];
        s.read_exact(&mut reply).await.expect("reply");
        (reply[1], ())
    };
    assert_eq!(code, 7, "BIND: command not supported");
}
