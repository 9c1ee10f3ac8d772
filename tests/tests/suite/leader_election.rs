//! Lease-based leader election: of two candidates exactly one leads; when the leader
//! stops cleanly the other takes over at once, and when it dies (no release) the other
//! takes over once the Lease expires. With two controller replicas on one apiserver,
//! only the leader acts on Workloads.

use hypermesh_tests::workload;

use std::time::Duration;

use hypermesh_api::v1::Lease;
use hypermesh_api::{Api, Resource};
use hypermesh_controllers::events::REPORTING_INSTANCE_ANNOTATION;
use hypermesh_runtime::leader::{LeaderElector, Leadership};
use hypermesh_tests::{InProcessApiServer, wait_for};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use workload::{events_about, instances_of, set_replicas, wait_instances, workload};

const LEASE_DURATION: Duration = Duration::from_secs(2);

fn candidate(api: &Api<Lease>, identity: &str) -> (Leadership, CancellationToken) {
    let token = CancellationToken::new();
    let elector = LeaderElector::new(
        api.clone(),
        "hypermesh-system",
        "test-election",
        identity,
        LEASE_DURATION,
    );
    (elector.spawn(token.clone()), token)
}

async fn holder(api: &Api<Lease>, name: &str) -> String {
    match api.get("hypermesh-system", name).await {
        Ok(lease) => lease.spec.map(|s| s.holder_identity).unwrap_or_default(),
        Err(e) if e.code() == tonic::Code::NotFound => String::new(),
        Err(e) => panic!("get lease: {e:?}"),
    }
}

/// Waits until `leader` (called `identity`) leads and holds the Lease.
async fn wait_leader(api: &Api<Lease>, leader: &Leadership, identity: &str) {
    wait_for(Duration::from_secs(10), || async {
        (leader.is_leader() && holder(api, "test-election").await == identity).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{identity} never became the leader: {e}"));
}

#[tokio::test]
async fn one_leader_and_it_hands_over() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let leases: Api<Lease> = server.api();
    let (a, a_stop) = candidate(&leases, "a");
    let (b, b_stop) = candidate(&leases, "b");

    // Exactly one leads, and keeps leading over several renewal periods.
    let first = wait_for(Duration::from_secs(10), || async {
        match (a.is_leader(), b.is_leader()) {
            (true, false) => Some("a"),
            (false, true) => Some("b"),
            _ => None,
        }
    })
    .await
    .expect("a leader");
    let until = Instant::now() + LEASE_DURATION * 2;
    let mut a_watch = a.subscribe();
    let mut b_watch = b.subscribe();
    while Instant::now() < until {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders at once");
        assert_eq!(holder(&leases, "test-election").await, first);
        // Wake on any leadership change, or look again shortly.
        tokio::select! {
            _ = a_watch.changed() => {}
            _ = b_watch.changed() => {}
            () = tokio::time::sleep_until(until.min(Instant::now() + Duration::from_millis(100))) => {}
        }
    }
    let lease = leases
        .get("hypermesh-system", "test-election")
        .await
        .expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.lease_duration_seconds, 2);
    let seconds = |t: Option<pbjson_types::Timestamp>| t.map(|t| (t.seconds, t.nanos));
    assert!(
        seconds(spec.renew_time) > seconds(spec.acquire_time),
        "renewed: {spec:?}"
    );

    // A clean stop releases the Lease: the other takes over well before it would expire.
    let ((leader, leader_stop), (other, other_name)) = if first == "a" {
        ((a, a_stop), ((b, b_stop), "b"))
    } else {
        ((b, b_stop), ((a, a_stop), "a"))
    };
    let stopped = Instant::now();
    leader_stop.cancel();
    leader.stopped().await;
    wait_leader(&leases, &other.0, other_name).await;
    assert!(
        stopped.elapsed() < LEASE_DURATION,
        "hand-over took {:?}",
        stopped.elapsed()
    );
    let transitions = leases
        .get("hypermesh-system", "test-election")
        .await
        .expect("lease")
        .spec
        .expect("spec")
        .lease_transitions;
    assert_eq!(transitions, 1);

    // A new candidate joins; then the leader dies without releasing: the newcomer
    // waits for the Lease to expire, then takes over.
    let (c, c_stop) = candidate(&leases, "c");
    let (survivor, survivor_stop) = other;
    let died = Instant::now();
    survivor.abort();
    wait_leader(&leases, &c, "c").await;
    let took = died.elapsed();
    // Not before the Lease could have expired (it was renewed at most one retry
    // period before the kill), and within about one duration plus a retry.
    assert!(took >= LEASE_DURATION / 3, "took over after only {took:?}");
    assert!(took < LEASE_DURATION * 3, "took {took:?}");
    survivor_stop.cancel();
    c_stop.cancel();
    c.stopped().await;
    assert_eq!(
        holder(&leases, "test-election").await,
        "",
        "released on stop"
    );
}

#[tokio::test]
async fn only_the_leading_controller_acts() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let leases: Api<Lease> = server.api();
    let start = |identity: &str| {
        let token = CancellationToken::new();
        let config = hypermesh_controllers::Config {
            identity: identity.into(),
            lease_duration: LEASE_DURATION,
            workers: 2,
            ..Default::default()
        };
        let task = tokio::spawn(hypermesh_controllers::run_with(
            server.channel(),
            config,
            token.clone(),
        ));
        (token, task)
    };
    let (one_stop, one) = start("one");
    let (two_stop, two) = start("two");
    let leader = wait_for(Duration::from_secs(10), || async {
        let h = holder(&leases, hypermesh_controllers::LEASE_NAME).await;
        (!h.is_empty()).then_some(h)
    })
    .await
    .expect("a controller leads");

    let workloads = server.api();
    let instances = server.api();
    workloads
        .create(&workload("web", 2, "web:1"))
        .await
        .expect("create workload");
    wait_instances(&instances, "web", 2, |_| true).await;
    let event_api = server.api();
    let events = wait_for(Duration::from_secs(10), || async {
        let events = events_about(&event_api, "web").await;
        (!events.is_empty()).then_some(events)
    })
    .await
    .expect("an event about the scale-up");
    for e in &events {
        assert_eq!(
            e.meta().annotations.get(REPORTING_INSTANCE_ANNOTATION),
            Some(&leader),
            "every event comes from the leader: {e:?}"
        );
    }

    // The leader stops; the other takes over and acts on the next change.
    let (stop, task, successor) = if leader == "one" {
        (one_stop, one, "two")
    } else {
        (two_stop, two, "one")
    };
    stop.cancel();
    task.await.expect("controller task");
    wait_for(Duration::from_secs(10), || async {
        (holder(&leases, hypermesh_controllers::LEASE_NAME).await == successor).then_some(())
    })
    .await
    .expect("the other controller takes over");
    set_replicas(&workloads, "web", 3).await;
    wait_instances(&instances, "web", 3, |_| true).await;
    let reporter = |e: &hypermesh_api::v1::Event| {
        e.meta()
            .annotations
            .get(REPORTING_INSTANCE_ANNOTATION)
            .cloned()
            .unwrap_or_default()
    };
    wait_for(Duration::from_secs(10), || async {
        let events = events_about(&event_api, "web").await;
        events
            .last()
            .is_some_and(|e| reporter(e) == successor)
            .then_some(())
    })
    .await
    .expect("the new leader records the scale-up");
    // Exactly the replicas asked for: nobody acted twice.
    assert_eq!(instances_of(&instances, "web").await.len(), 3);
}
