//! The containers crate against a real, private containerd: connect, import the
//! busybox OCI archive through the API (no `ctr`), run a container with cpu, memory and
//! pids limits, read its output and exit code, then delete it and its snapshot; a
//! process allocating beyond its memory limit is OOM-killed and reported as such; exec
//! runs extra processes in a running container (captured, timed out, on a tty).

use hypermesh_tests::containerd;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use containerd::{
    PrivateContainerd, TEST_IMAGE, cpu_quota_of, finished_log, log_sink, memory_limit_of,
    pids_limit_of, unique_id,
};
use hypermesh_containers::{
    self as containers, ContainerConfig, ContainerdClient, container, image,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `ctr -n hypermesh <args>` against the private containerd, for observing state only.
fn ctr(containerd: &PrivateContainerd, args: &[&str]) -> String {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(containerd.socket())
        .args(["--namespace", containers::NAMESPACE])
        .args(args)
        .output()
        .expect("running ctr");
    assert!(
        output.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A private containerd with the busybox test image imported, and a client of it.
async fn with_test_image() -> (PrivateContainerd, ContainerdClient) {
    let containerd = PrivateContainerd::start();
    let archive = containerd.build_test_image();
    let client = ContainerdClient::connect(containerd.socket())
        .await
        .expect("connect to containerd");
    image::import_archive(&client, &archive)
        .await
        .expect("import the OCI archive");
    (containerd, client)
}

#[tokio::test]
async fn connects_and_creates_its_namespace() {
    let containerd = PrivateContainerd::start();
    let client = ContainerdClient::connect(containerd.socket())
        .await
        .expect("connect to containerd");
    let version = client.version().await.expect("version");
    assert!(
        version.version.starts_with("1.") || version.version.starts_with("2."),
        "unexpected containerd version {version:?}"
    );
    assert_eq!(client.namespace(), "hypermesh");
    // Connecting again finds the namespace already there.
    ContainerdClient::connect(containerd.socket())
        .await
        .expect("second connect");
    let namespaces = Command::new("ctr")
        .arg("--address")
        .arg(containerd.socket())
        .args(["namespaces", "ls", "-q"])
        .output()
        .expect("ctr namespaces ls");
    assert!(
        String::from_utf8_lossy(&namespaces.stdout)
            .lines()
            .any(|l| l == "hypermesh")
    );
}

#[tokio::test]
async fn connecting_to_a_missing_socket_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = ContainerdClient::connect(dir.path().join("nothing.sock"))
        .await
        .expect_err("no containerd there");
    assert!(err.to_string().contains("nothing.sock"), "{err}");
}

#[tokio::test]
async fn runs_a_container_with_limits_and_cleans_up() {
    let containerd = PrivateContainerd::start();
    let archive = containerd.build_test_image();
    let client = ContainerdClient::connect(containerd.socket())
        .await
        .expect("connect to containerd");

    let images = tokio::time::timeout(TIMEOUT, image::import_archive(&client, &archive))
        .await
        .expect("import in time")
        .expect("import the OCI archive");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name, TEST_IMAGE);
    assert_eq!(images[0].config.cmd, vec!["/bin/sh".to_string()]);
    assert!(ctr(&containerd, &["images", "ls", "-q"]).contains(TEST_IMAGE));
    // Importing again is a no-op that finds everything in place.
    let again = image::import_archive(&client, &archive)
        .await
        .expect("second import");
    assert_eq!(again, images);

    let logs = tempfile::tempdir().expect("log dir");
    let config = ContainerConfig {
        id: unique_id("runtime-test-echo"),
        image: TEST_IMAGE.into(),
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec!["echo hello from hypermesh; echo \"greeting=$GREETING\"; pwd; exit 7".into()],
        env: vec![("GREETING".into(), "hi there".into())],
        working_dir: Some("/tmp".into()),
        cpu: Some("500m".parse().expect("quantity")),
        memory: Some("64Mi".parse().expect("quantity")),
        pids_limit: Some(32),
        log: log_sink(logs.path()),
        labels: HashMap::from([("hypermesh.io/instance".into(), "default/echo".into())]),
        ..Default::default()
    };
    let pid = container::create(&client, &config)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\ncontainerd log:\n{}", containerd.log()));
    assert!(pid > 0);
    // The task exists (runc's init holds the cgroup) before it is started.
    assert_eq!(
        memory_limit_of(pid),
        Some(64 * 1024 * 1024),
        "memory limit of pid {pid} in /sys/fs/cgroup"
    );
    // 500m of a 100 ms CFS period.
    assert_eq!(cpu_quota_of(pid), Some(50_000), "cpu quota of pid {pid}");
    assert_eq!(pids_limit_of(pid), Some(32), "pids limit of pid {pid}");
    container::start(&client, &config.id).await.expect("start");
    let status = tokio::time::timeout(TIMEOUT, container::wait(&client, &config.id))
        .await
        .expect("exit in time")
        .expect("wait");
    assert_eq!(status.code, 7);
    assert!(!status.oom_killed);
    assert_eq!(status.reason(), "Error");

    let deleted = container::delete(&client, &config.id)
        .await
        .expect("delete");
    assert_eq!(deleted.map(|s| s.code), Some(7));
    // Deleting the task closes the output pipes: the logger writes the rest and ends.
    let stdout = finished_log(&config.log.file);
    assert_eq!(stdout, "hello from hypermesh\ngreeting=hi there\n/tmp\n");
    assert!(!ctr(&containerd, &["containers", "ls", "-q"]).contains(&config.id));
    assert!(!ctr(&containerd, &["snapshots", "ls"]).contains(&config.id));
    // Deleting again finds nothing left and succeeds.
    assert_eq!(
        container::delete(&client, &config.id)
            .await
            .expect("delete"),
        None
    );
}

#[tokio::test]
async fn unknown_image_is_a_clear_error() {
    let containerd = PrivateContainerd::start();
    let client = ContainerdClient::connect(containerd.socket())
        .await
        .expect("connect to containerd");
    let logs = tempfile::tempdir().expect("log dir");
    let config = ContainerConfig {
        id: unique_id("runtime-test-missing"),
        image: "hypermesh.local/nothing:latest".into(),
        command: vec!["/bin/true".into()],
        log: log_sink(logs.path()),
        ..Default::default()
    };
    let err = container::create(&client, &config)
        .await
        .expect_err("image does not exist");
    assert!(
        matches!(err, containers::Error::ImageNotFound(ref name) if name == &config.image),
        "{err}"
    );
    assert!(!ctr(&containerd, &["containers", "ls", "-q"]).contains(&config.id));
}

#[tokio::test]
async fn allocating_beyond_the_memory_limit_is_oom_killed() {
    let (containerd, client) = with_test_image().await;
    let logs = tempfile::tempdir().expect("log dir");
    let config = ContainerConfig {
        id: unique_id("runtime-test-oom"),
        image: TEST_IMAGE.into(),
        // dd (the container's main process) allocates and fills one 64 MiB buffer: four
        // times the limit.
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec!["echo allocating; exec dd if=/dev/zero of=/dev/null bs=64M count=1".into()],
        memory: Some("16Mi".parse().expect("quantity")),
        log: log_sink(logs.path()),
        ..Default::default()
    };
    let pid = container::create(&client, &config)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\ncontainerd log:\n{}", containerd.log()));
    assert_eq!(memory_limit_of(pid), Some(16 * 1024 * 1024));
    container::start(&client, &config.id).await.expect("start");
    let status = tokio::time::timeout(TIMEOUT, container::wait(&client, &config.id))
        .await
        .expect("exit in time")
        .expect("wait");
    let deleted = container::delete(&client, &config.id)
        .await
        .expect("delete");
    assert_eq!(deleted.map(|s| s.oom_killed), Some(true));
    let stdout = finished_log(&config.log.file);
    assert!(
        status.oom_killed,
        "not OOM-killed: {status:?}, stdout {stdout:?}"
    );
    assert_eq!(status.reason(), "OOMKilled");
    assert!(stdout.starts_with("allocating\n"), "{stdout:?}");
    // The main process itself was killed: SIGKILL, 128 + 9.
    assert_eq!(status.code, 137, "{stdout:?}");
}

#[tokio::test]
async fn a_command_missing_from_the_image_fails_clearly_and_leaves_nothing() {
    let (containerd, client) = with_test_image().await;
    let logs = tempfile::tempdir().expect("log dir");
    let config = ContainerConfig {
        id: unique_id("runtime-test-badcmd"),
        image: TEST_IMAGE.into(),
        command: vec!["/bin/no-such-command".into()],
        log: log_sink(logs.path()),
        ..Default::default()
    };
    let failed = match container::create(&client, &config).await {
        Err(e) => e,
        Ok(_) => container::start(&client, &config.id)
            .await
            .expect_err("the command does not exist"),
    };
    assert!(
        failed.to_string().contains("/bin/no-such-command"),
        "error names the command: {failed}"
    );
    // create() removes what it made when a step fails; a failed start leaves the task
    // for delete(), which then removes everything.
    container::delete(&client, &config.id)
        .await
        .expect("delete");
    assert!(!ctr(&containerd, &["containers", "ls", "-q"]).contains(&config.id));
    assert!(!ctr(&containerd, &["snapshots", "ls"]).contains(&config.id));
}

#[tokio::test]
async fn exec_runs_in_the_container_with_output_exit_code_stdin_and_tty() {
    use hypermesh_containers::exec::{self, ExecSession, ExecSpec};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (containerd, client) = with_test_image().await;
    let logs = tempfile::tempdir().expect("log dir");
    let config = ContainerConfig {
        id: unique_id("runtime-test-exec"),
        image: TEST_IMAGE.into(),
        command: vec!["/bin/sh".into(), "-c".into()],
        args: vec!["echo main > /tmp/marker; exec sleep 300".into()],
        env: vec![("FROM_SPEC".into(), "yes".into())],
        log: log_sink(logs.path()),
        ..Default::default()
    };
    container::create(&client, &config)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\ncontainerd log:\n{}", containerd.log()));
    container::start(&client, &config.id).await.expect("start");

    // Captured: stdout and stderr, the exit code, the container's env and filesystem.
    let args: Vec<String> = [
        "sh",
        "-c",
        "cat /tmp/marker; echo \"env=$FROM_SPEC\"; echo oops >&2; exit 4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ran = exec::run_captured(&client, &config.id, &args, TIMEOUT)
        .await
        .expect("exec");
    assert_eq!(ran.exit_code, 4);
    assert_eq!(
        String::from_utf8_lossy(&ran.output),
        "main\nenv=yes\noops\n"
    );

    // A command that outlives its timeout is killed and reported as such.
    let slow = vec!["sleep".to_string(), "30".to_string()];
    let err = exec::run_captured(&client, &config.id, &slow, Duration::from_millis(500))
        .await
        .expect_err("times out");
    assert!(matches!(err, containers::Error::Timeout(_)), "{err}");

    // A missing command is an error, not a hang.
    let missing = vec!["/bin/no-such-command".to_string()];
    let failed = tokio::time::timeout(
        TIMEOUT,
        exec::run_captured(&client, &config.id, &missing, TIMEOUT),
    )
    .await
    .expect("answers in time");
    assert!(
        failed.is_err() || failed.as_ref().is_ok_and(|c| c.exit_code != 0),
        "{failed:?}"
    );

    // Interactive on a terminal: input goes in, the shell's output comes back.
    let spec = ExecSpec {
        args: vec!["sh".into()],
        tty: true,
        stdin: true,
    };
    let mut session = ExecSession::start(&client, &config.id, &spec)
        .await
        .expect("start a tty session");
    session.resize(&client, 100, 30).await.expect("resize");
    let mut stdin = session.stdin.take().expect("stdin");
    stdin
        .write_all(b"stty size; echo tty-$((6*7)); exit 3\n")
        .await
        .expect("write stdin");
    let mut output = Vec::new();
    tokio::time::timeout(TIMEOUT, session.stdout.read_to_end(&mut output))
        .await
        .expect("output ends in time")
        .expect("read tty");
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("tty-42"), "{text:?}");
    assert!(text.contains("30 100"), "{text:?}");
    assert_eq!(session.wait(&client).await.expect("wait"), 3);
    session.remove(&client).await;
    drop(stdin);

    container::kill(&client, &config.id, 9).await.expect("kill");
    container::wait(&client, &config.id).await.expect("wait");
    container::delete(&client, &config.id)
        .await
        .expect("delete");
}
