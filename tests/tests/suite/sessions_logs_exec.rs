//! `hmctl logs`, `hmctl exec` and `hmctl image import` end to end: a real agent runs
//! Instances on a private containerd and serves these sessions over the connection it
//! dials to the apiserver; hmctl talks only to the apiserver.

use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::node_env;

use std::time::Duration;

use containerd::TEST_IMAGE;
use hmctl::{Hmctl, read_until};
use hypermesh_api::v1::{
    self, ExecInput, ExecStart, InstancePhase, RestartPolicy, exec_input, exec_output,
    instance_service_client::InstanceServiceClient,
};
use node_env::{Env, TIMEOUT};

fn running(s: &v1::InstanceStatus) -> bool {
    s.phase == InstancePhase::Running as i32
}

#[tokio::test]
async fn logs_tail_follow_and_previous() {
    let env = Env::start().await;
    let hmctl = Hmctl::new(env.server.url());
    env.run(
        "ticker",
        TEST_IMAGE,
        &[
            "sh",
            "-c",
            "echo first; echo to-stderr >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        ],
        RestartPolicy::Never,
    )
    .await;
    env.wait_status("ticker", "running", running).await;

    // The whole log so far, stdout and stderr interleaved as written.
    let first = hypermesh_tests::wait_for(TIMEOUT, || {
        let hmctl = &hmctl;
        async move {
            let out = hmctl.run(&["logs", "ticker"]).await;
            (out.code == 0 && out.stdout.contains("tick 3")).then_some(out)
        }
    })
    .await
    .expect("logs show ticks");
    // stdout and stderr are separate pipes: each keeps its order, not their interleaving.
    let lines = first.lines();
    assert!(lines.contains(&"to-stderr"), "{first:#?}");
    let stdout_lines: Vec<&str> = lines.into_iter().filter(|l| *l != "to-stderr").collect();
    assert_eq!(
        stdout_lines[..3],
        ["first", "tick 1", "tick 2"],
        "{first:#?}"
    );

    // --tail and --timestamps.
    let tail = hmctl
        .run(&["logs", "inst/ticker", "--tail", "2", "--timestamps"])
        .await
        .ok();
    assert_eq!(tail.lines().len(), 2, "{tail:#?}");
    for line in tail.lines() {
        let (stamp, text) = line.split_once(' ').expect("stamp and text");
        assert!(stamp.starts_with("20") && stamp.ends_with('Z'), "{line}");
        assert!(text.starts_with("tick "), "{line}");
    }

    // -f streams lines written after it started.
    let seen_before: u32 = tail
        .lines()
        .last()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("tick number");
    let target = format!("tick {}", seen_before + 10);
    let (mut child, mut lines) = hmctl.spawn(&["logs", "ticker", "-f", "--tail", "1"]);
    read_until(&mut lines, TIMEOUT, |l| l == target)
        .await
        .expect("follow sees new lines");
    child.kill().await.expect("stop following");

    // No previous run yet.
    let none = hmctl.run(&["logs", "ticker", "--previous"]).await.failed();
    assert!(none.stderr.contains("no previous run"), "{none:#?}");

    // Unknown instance and container.
    let missing = hmctl.run(&["logs", "nope"]).await.failed();
    assert!(missing.stderr.contains("NotFound"), "{missing:#?}");
    let bad = hmctl.run(&["logs", "ticker", "-c", "other"]).await.failed();
    assert!(
        bad.stderr.contains("container \"other\" not found"),
        "{bad:#?}"
    );
    env.stop().await;
}

#[tokio::test]
async fn previous_shows_the_run_before_the_restart() {
    let env = Env::start().await;
    let hmctl = Hmctl::new(env.server.url());
    env.run(
        "crasher",
        TEST_IMAGE,
        &["sh", "-c", "echo run at $(cat /proc/uptime); exit 1"],
        RestartPolicy::OnFailure,
    )
    .await;
    env.wait_status("crasher", "restarted", |s| {
        s.container_statuses
            .first()
            .is_some_and(|c| c.restart_count >= 2)
    })
    .await;
    let previous = hmctl.run(&["logs", "crasher", "--previous"]).await.ok();
    assert_eq!(previous.lines().len(), 1, "{previous:#?}");
    assert!(previous.stdout.starts_with("run at "), "{previous:#?}");
    env.stop().await;
}

#[tokio::test]
async fn previous_during_the_first_back_off_shows_the_run_that_ended() {
    // A back-off long enough that the second run does not start during the test.
    let env = Env::start_with(|c| c.restart_backoff = Duration::from_secs(300)).await;
    let hmctl = Hmctl::new(env.server.url());
    env.run(
        "crasher",
        TEST_IMAGE,
        &["sh", "-c", "echo the first run; exit 3"],
        RestartPolicy::Always,
    )
    .await;
    env.wait_status("crasher", "in its first back-off", |s| {
        s.container_statuses.first().is_some_and(|c| {
            c.restart_count == 1 && c.state.as_ref().is_some_and(|st| st.waiting.is_some())
        })
    })
    .await;
    // RESTARTS is 1: the previous run is the one that ended (kubelet's lastState), and
    // plain `logs` shows it too while nothing runs.
    let found = hypermesh_tests::wait_for(TIMEOUT, || {
        let hmctl = &hmctl;
        async move {
            let out = hmctl.run(&["logs", "crasher", "--previous"]).await;
            (out.code == 0 && out.stdout.contains("the first run")).then_some(out)
        }
    })
    .await;
    let Ok(previous) = found else {
        let last = hmctl.run(&["logs", "crasher", "--previous"]).await;
        panic!("--previous never showed the first run: {last:#?}");
    };
    assert_eq!(previous.lines(), ["the first run"], "{previous:#?}");
    let current = hmctl.run(&["logs", "crasher"]).await.ok();
    assert_eq!(current.lines(), ["the first run"], "{current:#?}");
    env.stop().await;
}

#[tokio::test]
async fn exec_returns_output_and_exit_code_and_takes_stdin() {
    let env = Env::start().await;
    let hmctl = Hmctl::new(env.server.url());
    env.run(
        "sleeper",
        TEST_IMAGE,
        &["sh", "-c", "echo ready > /tmp/state; exec sleep 600"],
        RestartPolicy::Never,
    )
    .await;
    env.wait_status("sleeper", "running", running).await;

    let out = hmctl
        .run(&[
            "exec",
            "sleeper",
            "--",
            "sh",
            "-c",
            "cat /tmp/state; echo oops >&2; exit 5",
        ])
        .await;
    assert_eq!(out.code, 5, "{out:#?}");
    assert_eq!(out.stdout, "ready\n");
    assert_eq!(out.stderr, "oops\n");

    let echoed = hmctl
        .run_with_stdin(&["exec", "-i", "sleeper", "--", "wc", "-c"], "hello exec\n")
        .await
        .ok();
    assert_eq!(echoed.stdout.trim(), "11");

    // A terminal session through the gRPC API (as `hmctl exec -it` drives it).
    let mut client = InstanceServiceClient::new(env.server.channel());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let start = ExecStart {
        namespace: "default".into(),
        name: "sleeper".into(),
        command: vec!["sh".into()],
        tty: true,
        stdin: true,
        size: Some(v1::TerminalSize {
            width: 120,
            height: 40,
        }),
        ..Default::default()
    };
    for input in [
        exec_input::Input::Start(start),
        exec_input::Input::Stdin(b"stty size; echo tty-$((6*7)); exit 3\n".to_vec()),
    ] {
        tx.send(ExecInput { input: Some(input) })
            .await
            .expect("send");
    }
    let mut stream = client
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("exec call")
        .into_inner();
    let mut text = Vec::new();
    let mut code = None;
    while let Some(out) = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("output in time")
        .expect("stream")
    {
        match out.output {
            Some(exec_output::Output::Stdout(data)) => text.extend_from_slice(&data),
            Some(exec_output::Output::ExitCode(c)) => code = Some(c),
            _ => {}
        }
    }
    drop(tx);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("tty-42"), "{text:?}");
    assert!(text.contains("40 120"), "{text:?}");
    assert_eq!(code, Some(3));

    // A command that does not exist or cannot run exits as in a shell (and kubectl).
    let missing = hmctl.run(&["exec", "sleeper", "--", "no-such-cmd"]).await;
    assert_eq!(missing.code, 127, "{missing:#?}");
    assert!(
        missing
            .stderr
            .contains("\"no-such-cmd\": executable file not found"),
        "{missing:#?}"
    );
    let not_executable = hmctl.run(&["exec", "sleeper", "--", "/tmp/state"]).await;
    assert_eq!(not_executable.code, 126, "{not_executable:#?}");
    assert!(
        not_executable.stderr.contains("permission denied"),
        "{not_executable:#?}"
    );

    // Bad input: no command, a finished container.
    let none = hmctl.run(&["exec", "sleeper"]).await.failed();
    assert!(none.stderr.contains("<COMMAND>"), "{none:#?}");
    env.run("done", TEST_IMAGE, &["true"], RestartPolicy::Never)
        .await;
    env.wait_status("done", "succeeded", |s| {
        s.phase == InstancePhase::Succeeded as i32
    })
    .await;
    let finished = hmctl.run(&["exec", "done", "--", "true"]).await.failed();
    assert!(finished.stderr.contains("is not running"), "{finished:#?}");
    env.stop().await;
}

#[tokio::test]
async fn image_import_through_the_apiserver_then_run() {
    let env = Env::start_with(|config| config.image_dir = None).await;
    let hmctl = Hmctl::new(env.server.url());
    let archive = env.containerd.build_test_image();

    // Not there yet: the Instance waits for its image.
    env.run(
        "after-import",
        TEST_IMAGE,
        &["echo", "imported image runs"],
        RestartPolicy::Never,
    )
    .await;
    env.wait_status("after-import", "waiting for the image", |s| {
        s.container_statuses.first().is_some_and(|c| {
            c.state
                .as_ref()
                .and_then(|st| st.waiting.as_ref())
                // hypermesh.local names are local: never pulled, missing until imported.
                .is_some_and(|w| w.reason == "ImageNotFound")
        })
    })
    .await;

    let archive_arg = archive.to_string_lossy().into_owned();
    let imported = hmctl
        .run(&["image", "import", &archive_arg, "--node", node_env::NODE])
        .await
        .ok();
    assert_eq!(
        imported.stdout,
        format!("image {TEST_IMAGE} imported on node {}\n", node_env::NODE)
    );
    // Not a terminal: progress comes as plain lines on stderr, at most one per
    // quarter of the archive, ending at 100%.
    let file_name = archive.file_name().expect("name").to_string_lossy();
    let lines: Vec<&str> = imported.stderr.lines().collect();
    assert!(
        (1..=4).contains(&lines.len())
            && lines
                .iter()
                .all(|l| l.starts_with(&format!("uploading {file_name}: ")))
            && lines.last().is_some_and(|l| l.ends_with(" MiB (100%)")),
        "{:?}",
        imported.stderr
    );
    env.wait_status("after-import", "succeeded", |s| {
        s.phase == InstancePhase::Succeeded as i32
    })
    .await;
    let logs = hmctl.run(&["logs", "after-import"]).await.ok();
    assert_eq!(logs.stdout, "imported image runs\n");

    // A file that is no image archive, an unknown node.
    let junk = hmctl.write("junk.tar", "not a tar archive");
    let junk_arg = junk.to_string_lossy().into_owned();
    let bad = hmctl
        .run(&["image", "import", &junk_arg, "--node", node_env::NODE])
        .await
        .failed();
    assert!(
        bad.stderr
            .contains("junk.tar: not a readable OCI image archive"),
        "{bad:#?}"
    );
    let nowhere = hmctl
        .run(&["image", "import", &archive_arg, "--node", "no-such-node"])
        .await
        .failed();
    assert!(nowhere.stderr.contains("NotFound"), "{nowhere:#?}");
    env.stop().await;
}

#[tokio::test]
async fn a_node_without_a_connected_agent_is_reported() {
    // An apiserver and a Node object, but no agent: sessions cannot be opened.
    let server = hypermesh_tests::InProcessApiServer::start()
        .await
        .expect("apiserver");
    let nodes = server.api::<v1::Node>();
    nodes
        .create(&v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: "ghost".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("node");
    let instances = server.api::<v1::Instance>();
    instances
        .create(&v1::Instance {
            metadata: Some(v1::ObjectMeta {
                name: "orphan".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::InstanceSpec {
                containers: vec![v1::Container {
                    name: "main".into(),
                    image: TEST_IMAGE.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("instance");
    let hmctl = Hmctl::new(server.url());
    let unbound = hmctl.run(&["logs", "orphan"]).await.failed();
    assert!(unbound.stderr.contains("not scheduled"), "{unbound:#?}");
    instances
        .bind(v1::BindRequest {
            namespace: "default".into(),
            name: "orphan".into(),
            node_name: "ghost".into(),
            ..Default::default()
        })
        .await
        .expect("bind");
    let started = std::time::Instant::now();
    let out = hmctl.run(&["logs", "orphan"]).await.failed();
    assert!(out.stderr.contains("no agent connected"), "{out:#?}");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
}
