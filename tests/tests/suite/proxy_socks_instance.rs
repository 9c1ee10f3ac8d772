//! Story: an Instance runs a TCP echo server in its own network namespace on node
//! `runner`; a client talks SOCKS5 to the proxy of another node (`edge`), which carries
//! the flow over QUIC to `runner`'s proxy, which connects from inside the Instance's
//! namespace. Reached by global address and by name; unknown addresses, IPv4 and a
//! closed port get clean SOCKS reply codes.

use hypermesh_tests::containerd;
use hypermesh_tests::node_env;
use hypermesh_tests::proxy;

use std::net::{IpAddr, Ipv6Addr};

use hypermesh_api::v1::{InstancePhase, RestartPolicy};
use hypermesh_tests::pki::TestCa;
use hypermesh_tests::wait_for;
use proxy::{InProcessProxy, SocksTarget, TIMEOUT, echo, socks_connect, unknown_global};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks_reaches_an_instance_on_another_node_by_address_and_name() {
    let env = node_env::Env::start().await;
    env.run(
        "echo",
        containerd::TEST_IMAGE,
        &["nc", "-ll", "-p", "7000", "-e", "/bin/cat"],
        RestartPolicy::Always,
    )
    .await;
    let instance = env
        .wait_status("echo", "running with an address", |s| {
            s.phase == InstancePhase::Running as i32 && !s.address.is_empty()
        })
        .await;
    let address: Ipv6Addr = instance
        .status
        .as_ref()
        .expect("status")
        .address
        .parse()
        .expect("global address");

    let ca = TestCa::new().expect("ca");
    let _runner = InProcessProxy::start(
        &ca,
        node_env::NODE,
        env.server.url(),
        env.containerd.socket(),
        |c| {
            c.advertise = None;
        },
    )
    .await;
    let edge = InProcessProxy::start(
        &ca,
        "edge",
        env.server.url(),
        env.containerd.socket(),
        |_| {},
    )
    .await;
    let socks = edge.socks.expect("socks");

    // Once the runner's proxy has published its endpoint, the flow goes through.
    let mut stream = wait_for(TIMEOUT, || async move {
        let (code, stream) = socks_connect(socks, SocksTarget::Ip(IpAddr::V6(address)), 7000).await;
        (code == 0).then_some(stream).flatten()
    })
    .await
    .expect("SOCKS CONNECT to the Instance's global address succeeds");
    assert_eq!(
        echo(&mut stream, b"hello through the mesh\n").await,
        b"hello through the mesh\n"
    );
    let big = vec![b'x'; 1 << 20];
    assert_eq!(echo(&mut stream, &big).await.len(), big.len());
    drop(stream);

    // By name.
    let (code, stream) = socks_connect(
        socks,
        SocksTarget::Name("echo.default.instance.hypermesh"),
        7000,
    )
    .await;
    assert_eq!(code, 0, "name resolves");
    let mut stream = stream.expect("stream");
    assert_eq!(echo(&mut stream, b"by name\n").await, b"by name\n");

    // Clean refusals.
    let (code, _) = socks_connect(socks, SocksTarget::Ip(IpAddr::V6(unknown_global())), 7000).await;
    assert_eq!(code, 4, "unknown global address: host unreachable");
    let (code, _) =
        socks_connect(socks, SocksTarget::Name("nope.default.route.hypermesh"), 80).await;
    assert_eq!(code, 4, "unknown name: host unreachable");
    let (code, _) = socks_connect(
        socks,
        SocksTarget::Ip("198.51.100.9".parse().expect("ip")),
        80,
    )
    .await;
    assert_eq!(code, 8, "IPv4: address type not supported");
    let (code, _) = socks_connect(socks, SocksTarget::Ip(IpAddr::V6(address)), 7001).await;
    assert_eq!(code, 5, "closed port in the Instance: connection refused");

    let metrics = edge.http_get("/metrics").await;
    assert!(
        metrics.contains("hypermesh_proxy_peer_path{peer=\"runner\",path=\"direct\",via=\"\"} 1"),
        "path to runner in metrics:\n{metrics}"
    );
    // The echoed megabyte went out over the direct path and came back on it.
    for direction in ["sent", "received"] {
        let series = format!(
            "hypermesh_proxy_mesh_bytes_total{{direction=\"{direction}\",path=\"direct\"}} "
        );
        let bytes: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
        assert!(bytes >= big.len() as u64, "{series}{bytes} < {}", big.len());
    }
    let paths = edge.http_get("/paths").await;
    assert!(paths.starts_with("runner direct rtt="), "{paths}");
}
