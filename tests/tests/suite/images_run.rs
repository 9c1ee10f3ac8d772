//! The images `make images` builds run under a real (private) containerd the way the
//! Helm chart runs them: imported from their OCI archives under the names the chart's
//! values give, started with the chart's flags, user and mounts. The apiserver image
//! answers `/healthz` and gRPC health over mTLS with the admin config it wrote, which
//! NOTES.txt's `kubectl exec ... /bin/busybox cat` reads, and exits 0 on SIGTERM; the agent image's init step copies hm-logger with the image's busybox,
//! then its agent joins a running apiserver with a one-use token and registers a Ready
//! Node. Built from the debug binaries the test suite builds (see tests/src/images.rs).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_api::v1::{JoinToken, Node};
use hypermesh_containers::container::{BindMount, ProcessUser, Security};
use hypermesh_containers::{ContainerConfig, ContainerdClient, container, exec, image};
use hypermesh_tests::agent::condition;
use hypermesh_tests::attack::http_get;
use hypermesh_tests::containerd::{PrivateContainerd, log_sink, unique_id};
use hypermesh_tests::identities::make_join_token;
use hypermesh_tests::images::{build, chart_image, free_loopback_addr, output_so_far};
use hypermesh_tests::{ApiServerProcess, connect_target, wait_for};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TIMEOUT: Duration = Duration::from_secs(60);
const SIGTERM: u32 = 15;

/// Imports `archive` and checks it carries the name the chart pulls for `component`.
async fn import(client: &ContainerdClient, archive: &Path, component: &str) -> String {
    let images = image::import_archive(client, archive)
        .await
        .unwrap_or_else(|e| panic!("import {}: {e}", archive.display()));
    let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    let expected = chart_image(component);
    assert_eq!(names, [expected.as_str()], "{}", archive.display());
    expected
}

fn bind(source: &Path, destination: &Path, read_only: bool) -> BindMount {
    BindMount {
        source: source.to_path_buf(),
        destination: destination.display().to_string(),
        read_only,
    }
}

/// Sends SIGTERM and returns the exit code once the container has stopped, then
/// deletes it.
async fn terminate(client: &ContainerdClient, id: &str) -> u32 {
    container::kill(client, id, SIGTERM).await.expect("SIGTERM");
    let status = tokio::time::timeout(TIMEOUT, container::wait(client, id))
        .await
        .expect("exits in time after SIGTERM")
        .expect("wait");
    container::delete(client, id).await.expect("delete");
    status.code
}

#[tokio::test]
async fn apiserver_image_serves_health_with_the_charts_flags() {
    let containerd = PrivateContainerd::start();
    let client = ContainerdClient::connect(containerd.socket())
        .await
        .expect("connect to containerd");
    let images = tempfile::tempdir().expect("image dir");
    let [archive] = build(images.path(), &["apiserver"])
        .try_into()
        .expect("one");
    let name = import(&client, &archive, "apiserver").await;

    // The StatefulSet's volumes: the data dir (fsGroup 65532) and the encryption key
    // Secret (0440, group 65532).
    let data = tempfile::tempdir().expect("data dir");
    std::os::unix::fs::chown(data.path(), Some(65532), Some(65532)).expect("chown data");
    let key_dir = tempfile::tempdir().expect("key dir");
    let key = key_dir.path().join("encryption.key");
    std::fs::write(&key, rand::random::<[u8; 32]>()).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).expect("mode");
    std::os::unix::fs::chown(&key, Some(0), Some(65532)).expect("chown key");
    std::fs::set_permissions(key_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("key dir mode");

    let listen = free_loopback_addr();
    let metrics = free_loopback_addr();
    let logs = tempfile::tempdir().expect("log dir");
    let config = ContainerConfig {
        id: unique_id("image-apiserver"),
        image: name,
        // The image's entrypoint and user (65532) as in the chart; its args, with the
        // pod IP as loopback (the container shares the test's network).
        args: vec![
            format!("--listen={listen}"),
            format!("--metrics-addr={metrics}"),
            "--data-dir=/var/lib/hypermesh/apiserver".into(),
            "--encryption-key-file=/etc/hypermesh/encryption/encryption.key".into(),
            "--tls-san=hm-apiserver,hm-apiserver.default.svc,hm-apiserver.default.svc.cluster.local"
                .into(),
            "--store=redb".into(),
        ],
        mounts: vec![
            bind(
                data.path(),
                Path::new("/var/lib/hypermesh/apiserver"),
                false,
            ),
            bind(key_dir.path(), Path::new("/etc/hypermesh/encryption"), true),
        ],
        security: Security {
            host_network: true,
            ..Default::default()
        },
        log: log_sink(logs.path()),
        labels: HashMap::new(),
        ..Default::default()
    };
    container::create(&client, &config)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\ncontainerd log:\n{}", containerd.log()));
    container::start(&client, &config.id).await.expect("start");

    // The chart's probes: GET /healthz on the metrics port.
    let (code, body) = wait_for(TIMEOUT, || async {
        http_get(metrics, "/healthz")
            .await
            .filter(|(c, _)| *c == 200)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "/healthz on {metrics}: {e}\noutput:\n{}",
            output_so_far(logs.path())
        )
    });
    assert_eq!(code, 200, "{body}");

    // The process ran as the image's user and wrote the admin's config into the volume;
    // with it, gRPC health over TLS with a client certificate says SERVING.
    let admin = data.path().join(hypermesh_apiserver::server::ADMIN_CONFIG);
    let meta = std::fs::metadata(&admin).expect("admin.config in the data volume");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65532);
    let file = hypermesh_trust::client_config::ClientConfigFile::load(&admin).expect("load");
    let target = file
        .target(&admin, Some(&format!("https://{listen}")))
        .expect("target");
    let channel = connect_target(&target).await.expect("TLS channel");
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("gRPC health")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    // NOTES.txt step 1: the admin's config read out of the pod with the image's busybox.
    let cat: Vec<String> = [
        "/bin/busybox",
        "cat",
        "/var/lib/hypermesh/apiserver/admin.config",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ran = exec::run_captured(&client, &config.id, &cat, TIMEOUT)
        .await
        .expect("exec busybox cat");
    assert_eq!(ran.exit_code, 0, "{}", String::from_utf8_lossy(&ran.output));
    assert_eq!(ran.output, std::fs::read(&admin).expect("admin.config"));

    // Pod deletion: SIGTERM, a clean exit within the grace period.
    assert_eq!(
        terminate(&client, &config.id).await,
        0,
        "{}",
        output_so_far(logs.path())
    );
}

#[tokio::test]
async fn agent_image_joins_and_registers_its_node() {
    hypermesh_trust::tls::install_default_provider();
    let server = ApiServerProcess::start_tls_with_args(&[])
        .await
        .expect("apiserver");
    let admin = server.channel().await.expect("admin channel");
    let token = make_join_token(&Api::<JoinToken>::new(admin.clone()), 1, TIMEOUT * 10)
        .await
        .expect("join token");
    let pin = server.ca_pin().expect("CA pin");

    let containerd = PrivateContainerd::start();
    let client = ContainerdClient::connect(containerd.socket())
        .await
        .expect("connect to containerd");
    let images = tempfile::tempdir().expect("image dir");
    let [archive] = build(images.path(), &["agent"]).try_into().expect("one");
    let name = import(&client, &archive, "agent").await;

    // The DaemonSet's host paths, each mounted at its own path (containerd opens them).
    let state = tempfile::tempdir().expect("state dir");
    let secrets = tempfile::tempdir().expect("secrets dir");
    let host_bin = tempfile::tempdir().expect("host bin dir");

    // initContainers[install-logger]: the image's busybox copies hm-logger out.
    let logs = tempfile::tempdir().expect("log dir");
    let init = ContainerConfig {
        id: unique_id("image-agent-init"),
        image: name.clone(),
        command: vec![
            "/bin/busybox".into(),
            "cp".into(),
            "/usr/local/bin/hm-logger".into(),
            "/host-bin/hm-logger".into(),
        ],
        mounts: vec![bind(host_bin.path(), Path::new("/host-bin"), false)],
        user: Some(ProcessUser { uid: 0, gid: 0 }),
        log: log_sink(logs.path()),
        ..Default::default()
    };
    container::create(&client, &init)
        .await
        .expect("create init");
    container::start(&client, &init.id)
        .await
        .expect("start init");
    let status = tokio::time::timeout(TIMEOUT, container::wait(&client, &init.id))
        .await
        .expect("init exits in time")
        .expect("wait init");
    assert_eq!(status.code, 0, "{}", output_so_far(logs.path()));
    container::delete(&client, &init.id)
        .await
        .expect("delete init");
    let logger = host_bin.path().join("hm-logger");
    let mode = std::fs::metadata(&logger)
        .expect("hm-logger copied")
        .permissions();
    assert_eq!(mode.mode() & 0o111, 0o111, "hm-logger is executable");

    // containers[agent], with the chart's args and join Secret as env.
    let node = "image-agent-node";
    let metrics = free_loopback_addr();
    let agent_logs = tempfile::tempdir().expect("agent log dir");
    let agent = ContainerConfig {
        id: unique_id("image-agent"),
        image: name,
        args: vec![
            format!("--server={}", server.url()),
            format!("--node-name={node}"),
            format!("--state-dir={}", state.path().display()),
            format!("--containerd-socket={}", containerd.socket().display()),
            format!("--secrets-dir={}", secrets.path().display()),
            format!("--logger={}", logger.display()),
            format!("--metrics-addr={metrics}"),
            "--max-instances=110".into(),
        ],
        env: vec![
            ("NODE_NAME".into(), node.into()),
            ("HM_JOIN_TOKEN".into(), token),
            ("HM_CA_CERT_HASH".into(), pin),
        ],
        mounts: vec![
            bind(containerd.socket(), containerd.socket(), false),
            bind(state.path(), state.path(), false),
            bind(secrets.path(), secrets.path(), false),
            bind(host_bin.path(), host_bin.path(), true),
        ],
        security: Security {
            host_network: true,
            ..Default::default()
        },
        log: log_sink(agent_logs.path()),
        ..Default::default()
    };
    container::create(&client, &agent)
        .await
        .unwrap_or_else(|e| panic!("create agent: {e}\ncontainerd log:\n{}", containerd.log()));
    container::start(&client, &agent.id)
        .await
        .expect("start agent");

    let nodes: Api<Node> = Api::new(admin);
    let registered = wait_for(TIMEOUT, || async {
        let n = nodes.get("", node).await.ok()?;
        (condition(&n, "Ready")?.status == "True").then_some(n)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the agent image registers a Ready node: {e}\noutput:\n{}",
            output_so_far(agent_logs.path())
        )
    });
    let status = registered.status.expect("status");
    assert!(status.capacity.contains_key("cpu"), "{:?}", status.capacity);
    assert_eq!(
        condition_status(&nodes, node, "RuntimeReady")
            .await
            .as_deref(),
        Some("True"),
        "the agent in its container reaches the node's containerd"
    );
    // Its node identity landed in the host state dir the DaemonSet keeps.
    assert!(state.path().join("pki").is_dir(), "pki/ in the state dir");
    let (code, _) = http_get(metrics, "/healthz").await.expect("agent /healthz");
    assert_eq!(code, 200);

    assert_eq!(
        terminate(&client, &agent.id).await,
        0,
        "{}",
        output_so_far(agent_logs.path())
    );
}

async fn condition_status(nodes: &Api<Node>, node: &str, kind: &str) -> Option<String> {
    let n = nodes.get("", node).await.ok()?;
    condition(&n, kind).map(|c| c.status.clone())
}
