//! Deleting an Instance is graceful and visible: while its container is stopping (a
//! SIGTERM handler that takes two seconds) the Instance stays in the API with a
//! deletion timestamp and the `hypermesh.io/containers` finalizer, and `hmctl delete --wait` and `hmctl drain` return only once the
//! agent confirmed the containers are gone.

use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;
use hypermesh_tests::instance;
use hypermesh_tests::node_env;

use std::time::{Duration, Instant};

use containerd::TEST_IMAGE;
use hmctl::Hmctl;
use hypermesh_api::v1::{self, RestartPolicy};
use hypermesh_api::{CONTAINERS_FINALIZER, Resource};
use hypermesh_tests::wait_for;
use instance::{running, sh};
use node_env::{Env, NODE, TIMEOUT};

/// A container that needs two seconds to stop after SIGTERM.
const SLOW_STOP: &str = "trap 'sleep 2; exit 0' TERM; echo up; while true; do sleep 0.1; done";

async fn run_slow(env: &Env, name: &str) {
    let spec = v1::InstanceSpec {
        containers: vec![v1::Container {
            image: TEST_IMAGE.into(),
            ..sh("main", SLOW_STOP)
        }],
        restart_policy: RestartPolicy::Always as i32,
        termination_grace_period_seconds: 20,
        ..Default::default()
    };
    env.run_spec(name, spec).await;
    env.wait_status(name, "runs", |s| running(s, "main")).await;
}

fn running_tasks(env: &Env) -> usize {
    env.ctr(&["tasks", "ls"])
        .lines()
        .filter(|l| l.contains("RUNNING"))
        .count()
}

#[tokio::test]
async fn deletion_waits_for_the_containers_and_shows_terminating() {
    let env = Env::start().await;
    let hmctl = Hmctl::new(env.server.url());
    run_slow(&env, "slow").await;
    assert_eq!(running_tasks(&env), 1);

    // `delete --wait` in the background; meanwhile the Instance is visibly Terminating
    // and its container still runs.
    let started = Instant::now();
    let waiter = {
        let hmctl = Hmctl::new(env.server.url());
        tokio::spawn(async move {
            hmctl
                .run(&["delete", "instance", "slow", "--wait", "--timeout", "40s"])
                .await
        })
    };
    let instances = env.instances();
    let terminating = wait_for(TIMEOUT, || async {
        let i = instances.get("default", "slow").await.ok()?;
        i.meta().deletion_timestamp.is_some().then_some(i)
    })
    .await
    .expect("the Instance stays in the API with a deletion timestamp");
    assert!(
        terminating
            .meta()
            .finalizers
            .iter()
            .any(|f| f == CONTAINERS_FINALIZER),
        "{:?}",
        terminating.meta().finalizers
    );
    assert_eq!(running_tasks(&env), 1, "the container is still stopping");
    let out = waiter.await.expect("hmctl task").ok();
    assert!(
        out.stdout.contains("instance.hypermesh.io/slow deleted"),
        "{}",
        out.stdout
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "delete --wait returned after {:?}, before the SIGTERM handler finished",
        started.elapsed()
    );
    assert_eq!(
        running_tasks(&env),
        0,
        "no container left once delete --wait returns"
    );
    assert!(
        instances.get("default", "slow").await.is_err(),
        "gone from the API"
    );

    // drain says "drained" only once the containers stopped.
    run_slow(&env, "lonely").await;
    let out = hmctl
        .run(&["drain", NODE, "--force", "--timeout", "40s"])
        .await
        .ok();
    assert!(
        out.stdout.contains(&format!("node/{NODE} drained")),
        "{}",
        out.stdout
    );
    assert_eq!(
        running_tasks(&env),
        0,
        "drained while a container ran:\n{}",
        out.stdout
    );
    env.stop().await;
}
