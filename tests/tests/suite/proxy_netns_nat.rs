//! Story: three hosts as network namespaces on one bridge (198.51.100.0/25,
//! fd00:1::/64); host C sits behind an nftables masquerade on a router that drops every
//! inbound connection, so C's proxy keeps an outbound QUIC connection to A's proxy (its
//! relay). Each host runs its own containerd, hm-agent and hm-proxy; the apiserver is
//! reached at A's address.
//!
//! - A client on A reaches a TCP echo server and an HTTP server running as Instances on
//!   C by global address and by name through A's SOCKS5 listener.
//! - A client on B reaches C too: the direct dial to C is tried first (and dropped by
//!   C's NAT), then the relay on A carries it; B's /paths says so.
//! - A Route over Instances on B and C answers from both, and keeps answering while B's
//!   proxy is killed with SIGKILL under traffic.
//! - Restarted with the same state dir, B's and C's proxies come back with the same
//!   identity and new connections work within seconds.
//! - An unmodified client on A (no SOCKS) reaches C through `hm0` and the nftables
//!   redirect into A's transparent listener; an unknown address is reset.
//! - `hmctl port-forward instance/echo-c` on A reaches the echo server on C.
//! - A UDP echo server on C answers datagrams sent through A's SOCKS5 UDP ASSOCIATE.
//! - An unknown global address gets a clean SOCKS refusal.

use hypermesh_tests::containerd;
use hypermesh_tests::proxy;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use containerd::build_test_archive;
use hypermesh_api::Api;
use hypermesh_api::v1::{
    self, Instance, InstancePhase, Node, ObjectMeta, Route, RoutePort, RouteSpec,
};
use hypermesh_tests::hosts::{
    Containerds, Host, SOCKS, TIMEOUT, address_of, build_lab, host_programs, kill9, metrics_of,
    route_get, run_instance, run_instance_with, sh, socks_from, spawn_agent, spawn_proxy,
    start_containerd,
};
use hypermesh_tests::netns::require_netns_tools;
use hypermesh_tests::pki::TestCa;
use hypermesh_tests::{InProcessApiServer, bin_path, wait_for};
use proxy::{SocksTarget, echo, http_get_over, unknown_global};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_reach_instances_across_nat_by_global_address() {
    require_netns_tools();
    containerd::require_tools();
    assert!(
        Path::new("/usr/bin/socat").exists(),
        "/usr/bin/socat not found: the UDP echo server of this test is the host's socat \
         (Debian package `socat`); run scripts/setup.sh"
    );
    let lab = build_lab();

    // The apiserver, reached at A's address.
    let server = InProcessApiServer::start().await.expect("apiserver");
    // The UDP echo runs the host's socat from read-only hostPath mounts: an admin's
    // choice the workload policy only allows in a privileged namespace.
    let namespaces = server.api::<v1::Namespace>();
    let mut default = namespaces.get("", "default").await.expect("default");
    default
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert("hypermesh.io/policy".into(), "privileged".into());
    namespaces.update(&default).await.expect("label default");
    let api_addr: SocketAddr = server
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("apiserver address");
    let _forward = lab
        .forward_in("a", "198.51.100.1:7443".parse().expect("addr"), api_addr)
        .await
        .expect("apiserver reachable on A");

    let ca = TestCa::new().expect("cluster CA");
    let mut hosts: Vec<Host> = [
        ("a", "198.51.100.1"),
        ("b", "198.51.100.2"),
        ("c", "198.51.100.130"),
    ]
    .into_iter()
    .map(|(name, ip)| {
        let dir = tempfile::Builder::new()
            .prefix("hm-proxy-e2e-")
            .tempdir()
            .expect("dir");
        let secrets = tempfile::Builder::new()
            .prefix("hm-secrets-")
            .tempdir_in("/dev/shm")
            .expect("secrets dir");
        Host {
            name,
            ip,
            dir,
            secrets,
            socket: PathBuf::new(),
            agent: None,
            proxy: None,
        }
    })
    .collect();
    let mut containerds = Containerds(Vec::new());
    let images = tempfile::tempdir().expect("image dir");
    build_test_archive(images.path());
    for host in &mut hosts {
        std::fs::create_dir_all(host.state()).expect("state dir");
        ca.write_node(&host.state(), host.name)
            .expect("node credentials");
        start_containerd(&lab, host, &mut containerds);
        host.agent = Some(spawn_agent(&lab, host, images.path()));
        host.proxy = Some(spawn_proxy(&lab, host));
    }

    let nodes: Api<Node> = server.api();
    wait_for(TIMEOUT, || async {
        let (all, _) = nodes.list_all(Default::default()).await.ok()?;
        let ready = all
            .iter()
            .filter(|n| {
                n.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.r#type == "Ready" && c.status == "True")
                })
            })
            .count();
        (ready == 3).then_some(())
    })
    .await
    .expect("the agents of A, B and C (behind NAT) register Ready nodes");

    let instances: Api<Instance> = server.api();
    run_instance(
        &instances,
        "echo-c",
        "c",
        None,
        sh("exec nc -ll -p 7000 -e /bin/cat"),
        7000,
    )
    .await;
    let httpd = |body: &str| {
        sh(&format!(
            "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 8080 -h /www"
        ))
    };
    run_instance(&instances, "http-c", "c", None, httpd("hello-from-c"), 8080).await;
    run_instance(&instances, "web-b", "b", Some("web"), httpd("b"), 8080).await;
    run_instance(&instances, "web-c", "c", Some("web"), httpd("c"), 8080).await;
    run_instance_with(
        &instances,
        "udp-c",
        "c",
        None,
        vec![
            "/usr/bin/socat".into(),
            "UDP4-LISTEN:7001,reuseaddr,fork".into(),
            "PIPE".into(),
        ],
        7001,
        host_programs,
    )
    .await;
    let routes: Api<Route> = server.api();
    routes
        .create(&Route {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(RouteSpec {
                selector: [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
                ports: vec![RoutePort {
                    name: "http".into(),
                    port: 80,
                    target_port: 8080,
                    protocol: v1::Protocol::Tcp as i32,
                }],
            }),
            status: None,
        })
        .await
        .expect("create route");
    let ready = |i: &Instance| {
        i.status.as_ref().is_some_and(|s| {
            s.phase == InstancePhase::Running as i32
                && !s.address.is_empty()
                && s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
        })
    };
    let all = wait_for(TIMEOUT, || async {
        let (all, _) = instances.list_all(Default::default()).await.ok()?;
        (all.len() == 5 && all.iter().all(ready)).then_some(all)
    })
    .await
    .expect("five Instances run with global addresses");
    let by_name = |n: &str| {
        all.iter()
            .find(|i| i.metadata.as_ref().is_some_and(|m| m.name == n))
            .expect("instance")
    };
    let echo_c = address_of(by_name("echo-c"));
    let web_b = address_of(by_name("web-b"));

    // A → C (behind NAT) by address: over the connection C keeps to A.
    let mut stream = wait_for(TIMEOUT, || async {
        let (code, s) = socks_from(&lab, "a", SocksTarget::Ip(IpAddr::V6(echo_c)), 7000).await;
        (code == 0).then_some(s).flatten()
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "A reaches the echo server on C: {e}\nC proxy log:\n{}",
            hosts[2].proxy_log()
        )
    });
    assert_eq!(
        echo(&mut stream, b"ping across NAT\n").await,
        b"ping across NAT\n"
    );
    drop(stream);

    // An unmodified client on A: a plain connect to the global address.
    let target = SocketAddr::new(IpAddr::V6(echo_c), 7000);
    let mut plain = lab
        .connect("a", target)
        .await
        .expect("plain TCP connect to a global address on A");
    assert_eq!(echo(&mut plain, b"no socks\n").await, b"no socks\n");
    drop(plain);
    // ... and to an address nobody has: reset, no data.
    let unknown = SocketAddr::new(IpAddr::V6(unknown_global()), 80);
    if let Ok(mut s) = lab.connect("a", unknown).await {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("refused in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "unknown address refused: {read:?}"
        );
    }

    // UDP: SOCKS5 UDP ASSOCIATE on A to the UDP echo server on C.
    let udp_c = address_of(by_name("udp-c"));
    let (control, relay) = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut control = lab
            .connect("a", SOCKS.parse().expect("addr"))
            .await
            .expect("SOCKS control connection");
        control.write_all(&[5, 1, 0]).await.expect("greeting");
        let mut m = [0u8; 2];
        control.read_exact(&mut m).await.expect("method");
        control
            .write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
            .await
            .expect("UDP ASSOCIATE");
        let mut r = [0u8; 10];
        control.read_exact(&mut r).await.expect("reply");
        assert_eq!(
            (r[1], r[3]),
            (0, 1),
            "UDP ASSOCIATE succeeds with an IPv4 relay address"
        );
        let relay = SocketAddr::from(([r[4], r[5], r[6], r[7]], u16::from_be_bytes([r[8], r[9]])));
        (control, relay)
    };
    let udp = lab
        .udp("a", "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("UDP socket on A");
    let mut datagram = vec![0, 0, 0, 4];
    datagram.extend_from_slice(&udp_c.octets());
    datagram.extend_from_slice(&7001u16.to_be_bytes());
    datagram.extend_from_slice(b"udp across NAT");
    let answer = wait_for(TIMEOUT, || {
        let (udp, datagram) = (&udp, &datagram);
        async move {
            udp.send_to(datagram, relay).await.ok()?;
            let mut buf = [0u8; 512];
            let (n, _) = tokio::time::timeout(Duration::from_secs(1), udp.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            Some(buf[..n].to_vec())
        }
    })
    .await
    .expect("a UDP answer from C");
    assert_eq!(&answer[..4], &[0, 0, 0, 4], "SOCKS UDP header");
    assert_eq!(
        &answer[4..20],
        &udp_c.octets(),
        "from the echo server's global address"
    );
    assert_eq!(&answer[22..], b"udp across NAT");
    drop(control);

    // hmctl port-forward on A to the echo server on C (behind NAT).
    let mut forward = lab
        .command("a", bin_path("hmctl"))
        .args([
            "--server",
            "http://198.51.100.1:7443",
            "port-forward",
            "instance/echo-c",
            "0:7000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn hmctl port-forward");
    let line = {
        use tokio::io::AsyncBufReadExt;
        let stdout = forward.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("hmctl port-forward reports its port")
            .expect("read")
            .expect("a line")
    };
    let local: SocketAddr = line
        .strip_prefix("Forwarding from ")
        .and_then(|l| l.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let mut forwarded = lab
        .connect("a", local)
        .await
        .expect("connect to the forwarded port");
    assert_eq!(echo(&mut forwarded, b"forwarded\n").await, b"forwarded\n");
    drop(forwarded);
    let _ = forward.start_kill();

    // A → C's HTTP server by name.
    let (code, stream) = socks_from(
        &lab,
        "a",
        SocksTarget::Name("http-c.default.instance.hypermesh"),
        8080,
    )
    .await;
    assert_eq!(code, 0, "SOCKS by name");
    let body = http_get_over(stream.expect("stream"), "http-c").await;
    assert_eq!(body.trim(), "hello-from-c");

    // B → C: the direct dial is dropped by C's NAT, the relay on A carries the flow.
    let mut stream = wait_for(TIMEOUT, || async {
        let (code, s) = socks_from(&lab, "b", SocksTarget::Ip(IpAddr::V6(echo_c)), 7000).await;
        (code == 0).then_some(s).flatten()
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "B reaches C through the relay: {e}\nB proxy log:\n{}",
            hosts[1].proxy_log()
        )
    });
    assert_eq!(echo(&mut stream, b"via relay\n").await, b"via relay\n");
    drop(stream);
    let paths = metrics_of(&lab, "b", "/paths").await;
    assert!(
        paths.contains("c relay via=a"),
        "B's path to C is the relay on A:\n{paths}"
    );
    let metrics = metrics_of(&lab, "b", "/metrics").await;
    assert!(
        metrics.contains("hypermesh_proxy_peer_path{peer=\"c\",path=\"relay\",via=\"a\"} 1"),
        "{metrics}"
    );
    let c_node = nodes.get("", "c").await.expect("node c");
    let annotations = &c_node.metadata.as_ref().expect("meta").annotations;
    assert_eq!(
        annotations
            .get("proxy.hypermesh.io/relay")
            .map(String::as_str),
        Some("a")
    );

    // Unknown global address: clean refusal.
    let (code, _) = socks_from(&lab, "a", SocksTarget::Ip(IpAddr::V6(unknown_global())), 80).await;
    assert_eq!(code, 4, "unknown global address: host unreachable");

    // The Route answers from both B and C.
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        if let Some(body) = route_get(&lab).await {
            seen.insert(body);
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["b".to_string(), "c".to_string()]),
        "Route answers from both"
    );

    // Kill B's proxy under traffic: every new request still gets an answer (from C).
    let b_endpoint_before = nodes.get("", "b").await.ok().and_then(|n| {
        n.metadata?
            .annotations
            .get("proxy.hypermesh.io/endpoint")
            .cloned()
    });
    kill9(&mut hosts[1].proxy).await;
    for i in 0..8 {
        let started = Instant::now();
        let body = route_get(&lab).await;
        assert!(
            body.is_some(),
            "request {i} after B's proxy died went unanswered\nA proxy log:\n{}",
            hosts[0].proxy_log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "request {i} took {:?}",
            started.elapsed()
        );
    }

    // B's proxy comes back with the same identity; new connections to B work within seconds.
    hosts[1].proxy = Some(spawn_proxy(&lab, &hosts[1]));
    let restarted = Instant::now();
    let stream = wait_for(Duration::from_secs(30), || async {
        let (code, s) = socks_from(&lab, "a", SocksTarget::Ip(IpAddr::V6(web_b)), 8080).await;
        (code == 0).then_some(s).flatten()
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "A reaches B after its proxy restarted: {e}\nA log:\n{}",
            hosts[0].proxy_log()
        )
    });
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "B reachable again after {took:?}"
    );
    let body = http_get_over(stream, "web-b").await;
    assert_eq!(body.trim(), "b");
    let b_endpoint_after = nodes.get("", "b").await.ok().and_then(|n| {
        n.metadata?
            .annotations
            .get("proxy.hypermesh.io/endpoint")
            .cloned()
    });
    assert_eq!(b_endpoint_before, b_endpoint_after, "same endpoint");
    let paths = metrics_of(&lab, "a", "/paths").await;
    assert!(
        paths.contains("b direct"),
        "A talks to node b (name from its certificate):\n{paths}"
    );

    // Kill C's proxy (behind NAT): it re-attaches to its relay and C is reachable again.
    kill9(&mut hosts[2].proxy).await;
    hosts[2].proxy = Some(spawn_proxy(&lab, &hosts[2]));
    let restarted = Instant::now();
    let mut stream = wait_for(Duration::from_secs(30), || async {
        let (code, s) = socks_from(&lab, "a", SocksTarget::Ip(IpAddr::V6(echo_c)), 7000).await;
        (code == 0).then_some(s).flatten()
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "C reachable after its proxy restarted: {e}\nC log:\n{}",
            hosts[2].proxy_log()
        )
    });
    assert!(
        restarted.elapsed() < Duration::from_secs(12),
        "C back after {:?}",
        restarted.elapsed()
    );
    assert_eq!(echo(&mut stream, b"back\n").await, b"back\n");

    for host in &mut hosts {
        kill9(&mut host.proxy).await;
        kill9(&mut host.agent).await;
    }
    drop(containerds);
    drop(lab);
}
