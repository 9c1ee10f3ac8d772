//! Story: an Instance on a real containerd downloads a 4 MiB file over HTTP from a
//! server the test runs inside the Instance's network namespace (busybox httpd under
//! `nsenter --net`, so the server's socket stays in the test's cgroup and only the
//! Instance's side is the Instance's). With eBPF the agent's `/metrics` counts the
//! download for that Instance within the headers' overhead (`source="ebpf"`), and its
//! process starts move as processes are exec'd in it; the Node says
//! `NetworkAccounting=True`. The same agent binary without CAP_BPF, CAP_SYS_ADMIN and
//! CAP_PERFMON (dropped from its bounding set by `setpriv`, so the kernel refuses its
//! `bpf()` calls) says
//! `NetworkAccounting=False`/`EbpfUnavailable` with the kernel's refusal, and still
//! counts the download from `/proc/<pid>/net/dev` (`source="netdev"`), with no process
//! starts rather than invented ones. Both bodies pass `promtool check metrics`. A
//! deleted Instance's series go with it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_api::v1::{Condition, DeleteRequest, InstancePhase, Node, RestartPolicy};
use hypermesh_tests::containerd::TEST_IMAGE;
use hypermesh_tests::hmctl::Hmctl;
use hypermesh_tests::metrics::{free_address, promtool_check, sample, scrape, wait_sample};
use hypermesh_tests::node_env::{Env, NODE, TIMEOUT};
use hypermesh_tests::{bin_path, wait_for};

/// What the Instance downloads.
const BLOB: u64 = 4 << 20;
/// Where the test's server listens inside the Instance's network namespace.
const PORT: u16 = 8099;
/// IP and TCP headers, the HTTP exchange and the refused attempts before the server
/// is up, on top of the blob (loopback carries up to 64 KiB per packet).
const OVERHEAD: u64 = BLOB / 50 + (64 << 10);

/// Retries the download until the server answers, then stays up.
fn downloader() -> [String; 3] {
    [
        "sh".into(),
        "-c".into(),
        format!(
            "until wget -q -O /dev/null http://127.0.0.1:{PORT}/blob; do sleep 0.2; done; \
             sleep 3600"
        ),
    ]
}

fn series(metric: &str, source: Option<&str>) -> String {
    let source = source
        .map(|s| format!(",source=\"{s}\""))
        .unwrap_or_default();
    format!(
        "hypermesh_agent_instance_{metric}{{namespace=\"default\",instance=\"downloader\",container=\"main\"{source}}}"
    )
}

/// The Node's `NetworkAccounting` condition once it has one.
async fn accounting_condition(env: &Env, status: &str) -> Condition {
    let nodes: Api<Node> = env.server.api();
    let found = wait_for(TIMEOUT, || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("", NODE).await.ok()?;
            node.status?
                .conditions
                .into_iter()
                .find(|c| c.r#type == "NetworkAccounting" && c.status == status)
        }
    })
    .await;
    found.unwrap_or_else(|e| panic!("NetworkAccounting={status}: {e}"))
}

/// Starts the downloader, then serves the blob in its network namespace: the server,
/// its web root and the downloader's pid.
async fn download(env: &Env) -> (tokio::process::Child, tempfile::TempDir, String) {
    let command = downloader();
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let instance = env
        .run("downloader", TEST_IMAGE, &args, RestartPolicy::Never)
        .await;
    env.wait_status("downloader", "running", |s| {
        s.phase == InstancePhase::Running as i32
    })
    .await;
    let meta = hypermesh_api::Resource::meta(&instance);
    let id =
        hypermesh_agent::reconcile::container_id(&meta.namespace, &meta.name, &meta.uid, "main");
    let pid = wait_for(TIMEOUT, || async { env.task_pid(&id) })
        .await
        .expect("the downloader's task pid");
    let root = tempfile::tempdir().expect("web root");
    std::fs::write(root.path().join("blob"), vec![b'x'; BLOB as usize]).expect("blob");
    let server = serve_in_netns(&pid, root.path());
    (server, root, pid)
}

/// busybox httpd serving `root` on 127.0.0.1:[`PORT`] in the network namespace of `pid`.
fn serve_in_netns(pid: &str, root: &Path) -> tokio::process::Child {
    tokio::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["/bin/busybox", "httpd", "-f", "-p"])
        .arg(format!("127.0.0.1:{PORT}"))
        .arg("-h")
        .arg(root)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nsenter (util-linux) running /bin/busybox httpd (busybox-static)")
}

/// TCP segments retransmitted in the network namespace of `pid` (`RetransSegs` of
/// `/proc/PID/net/snmp`): the server and the downloader share it.
fn retransmitted_segments(pid: &str) -> u64 {
    let snmp = std::fs::read_to_string(format!("/proc/{pid}/net/snmp")).expect("net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().expect("Tcp names"),
        tcp.next().expect("Tcp values"),
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RetransSegs")
        .and_then(|(_, value)| value.parse().ok())
        .expect("RetransSegs")
}

/// Waits until the Instance has received the whole blob; the received bytes and body.
/// A segment the server sent twice (a spurious retransmission on a starved machine) is
/// received twice, so each retransmitted segment may add up to a loopback segment
/// (64 KiB) to the count.
async fn received(metrics: SocketAddr, source: &str, pid: &str) -> (u64, String) {
    let rx = series("network_receive_bytes_total", Some(source));
    let body = wait_sample(metrics, &rx, |v| v >= BLOB as f64).await;
    let bytes = sample(&body, &rx).expect("receive bytes") as u64;
    let retransmitted = retransmitted_segments(pid);
    eprintln!("{source}: {bytes} bytes received, {retransmitted} TCP segments retransmitted");
    assert!(
        bytes <= BLOB + OVERHEAD + retransmitted * (64 << 10),
        "{bytes} bytes counted for a {BLOB}-byte download \
         ({retransmitted} segments retransmitted):\n{body}"
    );
    (bytes, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebpf_counts_what_an_instance_downloads_and_execs() {
    let metrics = free_address();
    let env = Env::start_with(|c| {
        c.usage_interval = Duration::from_millis(300);
        c.metrics_addr = Some(metrics);
    })
    .await;
    let condition = accounting_condition(&env, "True").await;
    assert_eq!(condition.reason, "Ebpf", "{condition:?}");

    let (_server, _root, pid) = download(&env).await;
    let (bytes, body) = received(metrics, "ebpf", &pid).await;
    let sent = sample(
        &body,
        &series("network_transmit_packets_total", Some("ebpf")),
    );
    assert!(
        sent.is_some_and(|p| p >= 1.0),
        "the request and ACKs:\n{body}"
    );
    assert!(!body.contains("source=\"netdev\""), "{body}");
    eprintln!("eBPF counted {bytes} bytes received for a {BLOB}-byte download");

    // sh, then wget at least once, then sleep: each an execve in the container.
    let starts = series("process_starts_total", None);
    let before = sample(&body, &starts).expect("process starts");
    assert!(before >= 2.0, "{before} process starts:\n{body}");
    let hmctl = Hmctl::new(env.server.url());
    for _ in 0..3 {
        hmctl
            .run(&["exec", "downloader", "--", "sh", "-c", "exit 0"])
            .await
            .ok();
    }
    let body = wait_sample(metrics, &starts, |v| v >= before + 3.0).await;
    for metric in [
        "cpu_seconds_total",
        "memory_bytes",
        "disk_read_bytes_total",
        "disk_write_bytes_total",
    ] {
        assert!(
            sample(&body, &series(metric, None)).is_some(),
            "{metric}:\n{body}"
        );
    }
    assert_eq!(sample(&body, "hypermesh_agent_accounting_ebpf"), Some(1.0));
    assert_eq!(
        sample(&body, "hypermesh_agent_accounting_attach_failures_total"),
        Some(0.0)
    );
    promtool_check("agent running an Instance", &body);

    // Deleted: its container's programs are detached and its series go.
    env.instances()
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "downloader".into(),
            ..Default::default()
        })
        .await
        .expect("delete the downloader");
    let gone = wait_for(TIMEOUT, || async {
        let (_, body) = scrape(metrics, None).await.ok()?;
        (!body.contains("instance=\"downloader\"")).then_some(body)
    })
    .await
    .expect("the deleted Instance's series go");
    assert_eq!(
        sample(&gone, "hypermesh_agent_accounting_attach_failures_total"),
        Some(0.0)
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bpf_permission_the_agent_says_so_and_reads_net_dev() {
    let mut env = Env::start().await;
    let config = env.stop_agent().await;
    let metrics = free_address();
    let stderr = tempfile::NamedTempFile::new().expect("agent log");
    // The agent remaps container ids into a user namespace with mounts that need
    // CAP_SYS_ADMIN; this one runs where the kernel shows no user namespaces (a file
    // holding 0 bound over max_user_namespaces in its own mount namespace), so its
    // containers run without one, as on such a host.
    let zero = tempfile::NamedTempFile::new().expect("zero file");
    std::fs::write(zero.path(), "0\n").expect("write zero");
    let mut agent = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount --bind \"$0\" /proc/sys/user/max_user_namespaces && \
             exec setpriv --bounding-set -bpf,-sys_admin,-perfmon \"$@\"",
        )
        .arg(zero.path())
        .arg(bin_path("hm-agent"))
        .args(["--server", env.server.url(), "--node-name", NODE])
        .arg("--state-dir")
        .arg(&config.state_dir)
        .arg("--containerd-socket")
        .arg(&config.containerd_socket)
        .arg("--image-dir")
        .arg(config.image_dir.as_ref().expect("image dir"))
        .arg("--log-dir")
        .arg(config.log_dir.as_ref().expect("log dir"))
        .arg("--secrets-dir")
        .arg(&config.secrets_dir)
        .arg("--logger")
        .arg(&config.logger)
        .args([
            "--storage-commit",
            "4Mi",
            "--heartbeat-interval",
            "300ms",
            "--usage-interval",
            "300ms",
            "--metrics-addr",
            &metrics.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(stderr.reopen().expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("unshare and setpriv (util-linux) running hm-agent");

    let condition = accounting_condition(&env, "False").await;
    assert_eq!(condition.reason, "EbpfUnavailable", "{condition:?}");
    assert!(
        condition.message.contains("Operation not permitted"),
        "the kernel's refusal: {condition:?}"
    );

    let (_server, _root, pid) = download(&env).await;
    let (bytes, body) = received(metrics, "netdev", &pid).await;
    eprintln!("/proc/<pid>/net/dev counted {bytes} bytes received for a {BLOB}-byte download");
    assert!(!body.contains("source=\"ebpf\""), "{body}");
    assert!(
        !body.contains("hypermesh_agent_instance_process_starts"),
        "no process starts without the tracepoint:\n{body}"
    );
    assert_eq!(sample(&body, "hypermesh_agent_accounting_ebpf"), Some(0.0));
    let (_, body) = scrape(metrics, None).await.expect("scrape");
    promtool_check("agent without eBPF", &body);

    agent.start_kill().expect("stop hm-agent");
    let _ = agent.wait().await;
    let log = std::fs::read_to_string(stderr.path()).unwrap_or_default();
    assert!(log.contains("eBPF accounting unavailable"), "{log}");
    env.stop().await;
}
