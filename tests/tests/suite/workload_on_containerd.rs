//! The whole path on one host, as `make up` runs it: `hmctl apply -f examples/web.yaml`
//! → the Workload controller (in hm-apiserver) creates Instances → a real scheduler
//! binds them → the agent runs them on a private containerd; the readiness probe makes
//! the Workload available; `hmctl logs` and `hmctl exec` reach the containers through
//! the apiserver; deleting the Workload removes the containers. Told twice: on a
//! plaintext `--insecure-dev` server, and over mTLS as `make up` runs it (the scheduler
//! with its `scheduler.config` identity, the agent joined with a one-use token,
//! hmctl with `admin.config`).

use hypermesh_tests::agent;
use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;

use std::time::Duration;

use agent::Agent;
use containerd::{PrivateContainerd, workspace_root};
use hmctl::Hmctl;
use hypermesh_api::v1::{Instance, InstancePhase, ListRequest, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::{ApiServerProcess, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn applied_workload_runs_serves_and_is_removed() {
    let server = ApiServerProcess::start_with_args(&["--controllers", "all"])
        .await
        .expect("hm-apiserver");
    let hmctl = Hmctl::new(server.url());
    story(
        &server,
        server.channel().await.expect("channel"),
        hmctl,
        |_| {},
    )
    .await;
}

#[tokio::test]
async fn applied_workload_runs_over_mtls_with_a_joined_agent() {
    let server = ApiServerProcess::start_tls_with_args(&["--controllers", "all"])
        .await
        .expect("hm-apiserver");
    let admin = server.channel().await.expect("admin channel");
    let scheduler = server.scheduler_channel().await.expect("scheduler channel");
    let token =
        hypermesh_tests::identities::make_join_token(&Api::new(admin), 1, Duration::from_secs(600))
            .await
            .expect("join token");
    let pin = server.ca_pin().expect("CA pin");
    let hmctl = Hmctl::with_config(
        server.url(),
        &server
            .data_dir()
            .join(hypermesh_apiserver::server::ADMIN_CONFIG),
    );
    story(&server, scheduler, hmctl, move |config| {
        config.join_token = Some(token);
        config.ca_cert_hash = Some(pin);
    })
    .await;
}

/// apply → Running and available → logs and exec → delete, with the scheduler on
/// `scheduler_channel` and the agent configured by `tune`.
async fn story(
    server: &ApiServerProcess,
    scheduler_channel: tonic::transport::Channel,
    hmctl: Hmctl,
    tune: impl FnOnce(&mut hypermesh_agent::Config),
) {
    let channel = server.channel().await.expect("channel");
    let _stop_scheduler = hypermesh_tests::scheduler::spawn_default(scheduler_channel);
    let containerd = PrivateContainerd::start();
    let images = containerd.image_dir();
    let state = tempfile::tempdir().expect("state dir");
    let mut config = agent::config(
        server.url(),
        "host-1",
        state.path(),
        containerd.socket().to_path_buf(),
    );
    config.image_dir = Some(images.path().to_path_buf());
    tune(&mut config);
    let agent = Agent::start(config);

    let example = workspace_root().join("examples/web.yaml");
    let applied = hmctl
        .run(&["apply", "-f", &example.to_string_lossy()])
        .await
        .ok();
    assert_eq!(applied.stdout, "workload.hypermesh.io/web created\n");

    // Three replicas running and ready (the TCP readiness probe passed).
    let workloads: Api<Workload> = Api::new(channel.clone());
    let available = wait_for(TIMEOUT, || {
        let workloads = workloads.clone();
        async move {
            let w = workloads.get("default", "web").await.ok()?;
            let status = w.status.clone().unwrap_or_default();
            (status.available_replicas == 3).then_some(w)
        }
    })
    .await;
    let instances: Api<Instance> = Api::new(channel.clone());
    let (listed, _) = instances
        .list_all(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list instances");
    assert!(
        available.is_ok(),
        "web never had 3 available replicas: {:#?}\ncontainerd log:\n{}",
        listed.iter().map(|i| &i.status).collect::<Vec<_>>(),
        containerd.log()
    );
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|i| {
        i.status
            .as_ref()
            .is_some_and(|s| s.phase == InstancePhase::Running as i32)
    }));
    let name = listed[0].meta().name.clone();

    // The container's own output and a request served inside it.
    let logs = wait_for(TIMEOUT, || {
        let hmctl = &hmctl;
        let name = &name;
        async move {
            let out = hmctl.run(&["logs", name]).await;
            out.stdout.contains("serving /www on :8080").then_some(out)
        }
    })
    .await
    .expect("logs show the server starting");
    assert_eq!(logs.code, 0);
    let page = hmctl
        .run(&[
            "exec",
            &name,
            "--",
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/",
        ])
        .await
        .ok();
    assert_eq!(page.stdout, "hello from hypermesh (prod)\n");
    // workload/NAME picks one of its Instances (saying which).
    let via_workload = hmctl
        .run(&["exec", "workload/web", "--", "cat", "/www/index.html"])
        .await
        .ok();
    assert_eq!(via_workload.stdout, "hello from hypermesh (prod)\n");
    assert!(
        via_workload
            .stderr
            .starts_with("Found 3 instances, using instance/web-"),
        "{via_workload:#?}"
    );
    let table = hmctl.run(&["get", "workloads"]).await.ok();
    assert!(
        table
            .lines()
            .iter()
            .any(|l| l.starts_with("web") && l.contains("3/3")),
        "{table:#?}"
    );

    // Deleting the Workload removes its Instances and their containers.
    hmctl
        .run(&["delete", "workload", "web", "--wait"])
        .await
        .ok();
    let ctr = |args: &[&str]| containerd.ctr(args);
    wait_for(TIMEOUT, || {
        let left = ctr(&["containers", "ls", "-q"]);
        async move { left.trim().is_empty().then_some(()) }
    })
    .await
    .unwrap_or_else(|_| panic!("containers left: {}", ctr(&["containers", "ls"])));
    agent.stop().await;
}
