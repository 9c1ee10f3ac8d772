//! Events tell the story of what happens to Instances and Workloads: the agent records
//! Started, BackOff, OOMKilled, Failed (image) and Killing; a crash-looping Workload
//! gets at most one RolloutComplete and, past its `progressDeadlineSeconds`, a
//! ProgressDeadlineExceeded, after which `hmctl rollout status` exits non-zero with the
//! reason. Repeats are one Event with a growing count, and Events expire once the TTL
//! has passed since they last happened.

use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::instance;
use hypermesh_tests::node_env;

use std::time::Duration;

use containerd::TEST_IMAGE;
use hmctl::Hmctl;
use hypermesh_api::v1::{self, Event, ListRequest, RestartPolicy};
use hypermesh_tests::wait_for;
use instance::{delete, running, sh};
use node_env::{Env, TIMEOUT};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(20);

async fn events_about(env: &Env, name: &str) -> Vec<v1::EventSpec> {
    let (items, _) = env
        .server
        .api::<Event>()
        .list_all(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list events");
    items
        .into_iter()
        .filter_map(|e| e.spec)
        .filter(|s| s.involved_object.as_ref().is_some_and(|o| o.name == name))
        .collect()
}

async fn wait_event(env: &Env, name: &str, reason: &str, count: u32) -> v1::EventSpec {
    let found = wait_for(TIMEOUT, || async {
        events_about(env, name)
            .await
            .into_iter()
            .find(|e| e.reason == reason && e.count >= count)
    })
    .await;
    match found {
        Ok(e) => e,
        Err(_) => panic!(
            "no {reason} event (count >= {count}) about {name}: {:#?}\nworkloads: {:#?}\ninstances: {:#?}",
            events_about(env, name).await,
            env.server
                .api::<v1::Workload>()
                .list_all(Default::default())
                .await
                .map(|l| l.0),
            env.instances().list_all(Default::default()).await.map(|l| l
                .0
                .into_iter()
                .map(|i| (i.metadata, i.status))
                .collect::<Vec<_>>()),
        ),
    }
}

const CRASHING_WORKLOAD: &str = "apiVersion: hypermesh.io/v1
kind: Workload
metadata: {name: flaky, namespace: default}
spec:
  replicas: 1
  selector: {app: flaky}
  template:
    labels: {app: flaky}
    containers:
      - name: main
        image: hypermesh.local/busybox:latest
        command: [sh, -c, 'sleep 0.3; exit 1']
        resources: {cpu: 100m, memory: 32Mi}
";

const STUCK_WORKLOAD: &str = "apiVersion: hypermesh.io/v1
kind: Workload
metadata: {name: stuck, namespace: default}
spec:
  replicas: 1
  selector: {app: stuck}
  progressDeadlineSeconds: 4
  template:
    labels: {app: stuck}
    containers:
      - name: main
        image: no-such-image:2
        resources: {cpu: 100m, memory: 32Mi}
";

#[tokio::test]
async fn events_are_recorded_aggregated_and_expire() {
    let env = Env::start().await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(hypermesh_controllers::run_with(
        env.server.channel(),
        hypermesh_controllers::Config {
            identity: "events-test".into(),
            lease_duration: Duration::from_secs(2),
            event_ttl: TTL,
            ..Default::default()
        },
        stop.clone(),
    ));
    let hmctl = Hmctl::new(env.server.url());

    // The agent's story of a crash loop: one Started and one BackOff object each,
    // counting up.
    env.run(
        "crash",
        TEST_IMAGE,
        &["sh", "-c", "exit 1"],
        RestartPolicy::Always,
    )
    .await;
    let started = wait_event(&env, "crash", "Started", 3).await;
    assert_eq!(started.r#type, "Normal");
    assert_eq!(started.source, "hm-agent");
    let backoff = wait_event(&env, "crash", "BackOff", 2).await;
    assert_eq!(backoff.r#type, "Warning");
    let secs = |t: Option<pbjson_types::Timestamp>| t.map(|t| (t.seconds, t.nanos));
    assert!(
        secs(backoff.last_timestamp) > secs(backoff.first_timestamp),
        "{backoff:?}"
    );
    let about_crash = events_about(&env, "crash").await;
    assert_eq!(
        about_crash.iter().filter(|e| e.reason == "BackOff").count(),
        1,
        "repeats aggregate into one Event: {about_crash:#?}"
    );

    env.run_limited(
        "hog",
        TEST_IMAGE,
        &[
            "sh",
            "-c",
            "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
        ],
        RestartPolicy::Never,
        "16Mi",
    )
    .await;
    wait_event(&env, "hog", "OOMKilled", 1).await;
    env.run(
        "missing",
        "no-such-image:1",
        &["true"],
        RestartPolicy::Always,
    )
    .await;
    let failed = wait_event(&env, "missing", "Failed", 1).await;
    assert!(failed.message.contains("ImageNotFound"), "{failed:?}");
    env.run_spec(
        "slow",
        v1::InstanceSpec {
            containers: vec![sh("main", "while true; do sleep 0.1; done")],
            termination_grace_period_seconds: 1,
            ..Default::default()
        },
    )
    .await;
    env.wait_status("slow", "runs", |s| running(s, "main"))
        .await;
    delete(&env, "slow").await;
    wait_event(&env, "slow", "Killing", 1).await;

    // A Workload that never becomes available: no repeated RolloutComplete, and a
    // ProgressDeadlineExceeded that `rollout status` reports. (The scheduler starts
    // only now: the Instances above are bound by the test.)
    tokio::spawn(hypermesh_scheduler::run(
        env.server.channel(),
        hypermesh_scheduler::Config::default(),
        stop.clone(),
    ));
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], CRASHING_WORKLOAD)
        .await
        .ok();
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], STUCK_WORKLOAD)
        .await
        .ok();
    let exceeded = wait_event(&env, "stuck", "ProgressDeadlineExceeded", 1).await;
    assert_eq!(exceeded.r#type, "Warning");
    let status = hmctl
        .run(&["rollout", "status", "workload", "stuck", "--timeout", "20s"])
        .await
        .failed();
    assert!(
        status.stderr.contains("exceeded its progress deadline"),
        "{}",
        status.stderr
    );
    // The crash loop has run a while by now.
    wait_event(&env, "flaky", "ScalingUp", 1).await;
    let complete: u32 = events_about(&env, "flaky")
        .await
        .iter()
        .filter(|e| e.reason == "RolloutComplete")
        .map(|e| e.count)
        .sum();
    assert!(
        complete <= 1,
        "RolloutComplete {complete} times for a crash loop"
    );

    // Expiry: an Event that stops happening goes TTL after its last time.
    let last = wait_event(&env, "hog", "OOMKilled", 1).await;
    let expired = wait_for(TTL + TIMEOUT, || async {
        (!events_about(&env, "hog")
            .await
            .iter()
            .any(|e| e.reason == "OOMKilled"))
        .then_some(())
    })
    .await;
    assert!(
        expired.is_ok(),
        "the OOMKilled event never expired: {last:?}"
    );
    env.stop().await;
}
