//! Task exits come from containerd's event stream ([`TaskExits`]), not one `tasks.Wait`
//! per task: one subscription gives every waiting container its own exit code, a task
//! that exited before anybody waited is found at once, and a container without a task is
//! reported as missing. Across a containerd restart a task that kept running is still
//! waited on (same process), and one that exited while containerd was down is reported,
//! with its exit code, once containerd is back.

use hypermesh_tests::containerd;

use std::collections::HashMap;
use std::time::Duration;

use containerd::{PrivateContainerd, TEST_IMAGE, log_sink, unique_id};
use hypermesh_containers::{
    ContainerConfig, ContainerdClient, ExitStatus, TaskEnd, TaskExits, container, image,
};
use hypermesh_tests::wait_for;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(60);
const SIGKILL: u32 = 9;

/// A private containerd with the test image, a client and the exit subscription.
struct Setup {
    containerd: PrivateContainerd,
    client: ContainerdClient,
    exits: TaskExits,
    shutdown: CancellationToken,
    logs: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let containerd = PrivateContainerd::start();
        let archive = containerd.build_test_image();
        let client = ContainerdClient::connect(containerd.socket())
            .await
            .expect("connect to containerd");
        image::import_archive(&client, &archive)
            .await
            .expect("import the test image");
        let shutdown = CancellationToken::new();
        let exits = TaskExits::start(client.clone(), shutdown.clone());
        Setup {
            containerd,
            client,
            exits,
            shutdown,
            logs: tempfile::tempdir().expect("log dir"),
        }
    }

    /// Creates and starts container `name` running `sh -c <script>`; its id and pid.
    async fn run(&self, name: &str, script: &str) -> (String, u32) {
        let id = unique_id(name);
        let config = ContainerConfig {
            id: id.clone(),
            image: TEST_IMAGE.into(),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            memory: Some("32Mi".parse().expect("quantity")),
            log: log_sink(&self.logs.path().join(name)),
            labels: HashMap::new(),
            ..Default::default()
        };
        container::create(&self.client, &config)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}\n{}", self.containerd.log()));
        let pid = container::start(&self.client, &id)
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        (id, pid)
    }

    /// Waits (with a deadline) for the exit of `id`'s task.
    async fn wait(&self, id: &str) -> TaskEnd {
        tokio::time::timeout(TIMEOUT, self.exits.wait(id))
            .await
            .unwrap_or_else(|_| panic!("{id}: no exit within {TIMEOUT:?}"))
    }

    /// The task status `ctr tasks ls` shows for `id`.
    fn ctr_status(&self, id: &str) -> Option<String> {
        self.containerd
            .ctr(&["tasks", "ls"])
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    }

    async fn delete(&self, id: &str) -> Option<ExitStatus> {
        container::delete(&self.client, id).await.expect("delete")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `end` is an exit with `code`, not OOM, at the time containerd recorded (in the last
/// few minutes: the real exit time, not a default).
fn assert_exited(end: TaskEnd, code: u32, what: &str) {
    let TaskEnd::Exited(ExitStatus {
        code: got,
        oom_killed: false,
        exited_at: Some(at),
    }) = end
    else {
        panic!("{what}: {end:?}");
    };
    assert_eq!(got, code, "{what}: {end:?}");
    let age = std::time::SystemTime::now()
        .duration_since(at)
        .unwrap_or_default();
    assert!(age < std::time::Duration::from_secs(300), "{what}: {end:?}");
}

#[tokio::test]
async fn every_waiter_gets_its_own_exit_code() {
    let setup = Setup::start().await;
    let mut runs = Vec::new();
    for code in [0u32, 3, 7] {
        let name = format!("exit-{code}");
        let (id, _) = setup.run(&name, &format!("sleep 0.5; exit {code}")).await;
        runs.push((id, code));
    }
    let waits = runs.iter().map(|(id, _)| setup.wait(id));
    let ends = futures::future::join_all(waits).await;
    for ((id, code), end) in runs.iter().zip(ends) {
        assert_exited(end, *code, id);
        // The task is kept until deleted; its delete reports the same code.
        assert_eq!(setup.delete(id).await.map(|s| s.code), Some(*code), "{id}");
    }
    assert_eq!(
        setup.exits.waiting(),
        0,
        "finished waits leave nothing behind"
    );

    // Exited before anybody waited: found at once.
    let (early, _) = setup.run("early", "exit 5").await;
    wait_for(TIMEOUT, || async {
        (setup.ctr_status(&early).as_deref() == Some("STOPPED")).then_some(())
    })
    .await
    .expect("the task stops");
    assert_exited(setup.wait(&early).await, 5, "early");
    setup.delete(&early).await;
    // No task at all.
    assert_eq!(setup.wait(&early).await, TaskEnd::Missing);
}

#[tokio::test]
async fn exits_are_not_missed_across_a_containerd_restart() {
    let setup = Setup::start().await;
    let (kept, kept_pid) = setup.run("kept", "exec sleep 300").await;
    let (dies, dies_pid) = setup.run("dies", "exec sleep 300").await;
    let kept_wait = tokio::spawn({
        let (exits, id) = (setup.exits.clone(), kept.clone());
        async move { exits.wait(&id).await }
    });
    let dies_wait = tokio::spawn({
        let (exits, id) = (setup.exits.clone(), dies.clone());
        async move { exits.wait(&id).await }
    });
    wait_for(TIMEOUT, || async {
        (setup.exits.waiting() == 2).then_some(())
    })
    .await
    .expect("both wait");

    // containerd goes away; one container dies meanwhile, the other keeps running.
    setup.containerd.stop();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &dies_pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_for(TIMEOUT, || async {
        (!std::path::Path::new(&format!("/proc/{dies_pid}")).exists()).then_some(())
    })
    .await
    .expect("the process is gone");
    assert!(
        !dies_wait.is_finished(),
        "nobody can tell while containerd is down"
    );
    setup.containerd.restart();

    let end = tokio::time::timeout(TIMEOUT, dies_wait)
        .await
        .expect("the exit while containerd was down is reported once it is back")
        .expect("wait task");
    assert_exited(end, 137, "killed");
    assert!(
        !kept_wait.is_finished(),
        "the running container is still waited on"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{kept_pid}")).exists(),
        "it kept running"
    );
    assert_eq!(setup.ctr_status(&kept).as_deref(), Some("RUNNING"));

    // The new subscription carries later exits.
    container::kill(&setup.client, &kept, SIGKILL)
        .await
        .expect("kill kept");
    let end = tokio::time::timeout(TIMEOUT, kept_wait)
        .await
        .expect("the later exit arrives")
        .expect("wait task");
    assert_exited(end, 137, "killed");
    setup.delete(&kept).await;
    setup.delete(&dies).await;
}
