//! The controller driver against a real apiserver: every object is reconciled, again
//! on change, on `Action::requeue` and on a secondary change mapped to it; failures
//! are retried with back-off and counted; a panicking reconcile restarts the
//! controller with back-off and shows as `Down` on `/healthz` meanwhile; and it only
//! acts while its leader gate is open.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypermesh_api::v1::{Event, EventSpec, Lease, LeaseSpec, ObjectMeta, ObjectReference};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::backoff::Backoff;
use hypermesh_runtime::controller::{
    Action, Change, Controller, ControllerMetrics, ReconcileError, Watched,
};
use hypermesh_runtime::health::{ComponentState, Health};
use hypermesh_runtime::telemetry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

async fn start() -> (
    tonic::transport::Channel,
    CancellationToken,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = hypermesh_apiserver::Config::new(dir.path());
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = hypermesh_apiserver::ApiServer::open(config, shutdown.clone())
        .await
        .unwrap();
    tokio::spawn(server.serve(listener));
    let channel = hypermesh_api::client::connect(&url).await.unwrap();
    (channel, shutdown, dir)
}

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: holder.into(),
            ..Default::default()
        }),
        status: None,
    }
}

/// Polls `check` until it holds, failing after [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut polls = Backoff::new(Duration::from_millis(5), Duration::from_millis(100)).retry();
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        polls.wait().await;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not yet")]
struct NotYet;

impl ReconcileError for NotYet {}

/// Counts reconciles per object name; each name can be told to fail, panic or
/// requeue a number of times first.
#[derive(Default)]
struct Script {
    seen: Mutex<HashMap<String, u32>>,
    fail: Mutex<HashMap<String, u32>>,
    panic: Mutex<HashMap<String, u32>>,
    requeue: Mutex<HashMap<String, u32>>,
}

impl Script {
    fn seen(&self, name: &str) -> u32 {
        self.seen.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    fn take(map: &Mutex<HashMap<String, u32>>, name: &str) -> bool {
        let mut map = map.lock().unwrap();
        match map.get_mut(name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

async fn reconcile(lease: Arc<Lease>, script: Arc<Script>) -> Result<Action, NotYet> {
    let name = lease.meta().name.clone();
    *script.seen.lock().unwrap().entry(name.clone()).or_insert(0) += 1;
    if Script::take(&script.panic, &name) {
        panic!("poisoned object {name}");
    }
    if Script::take(&script.fail, &name) {
        return Err(NotYet);
    }
    if Script::take(&script.requeue, &name) {
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    Ok(Action::await_change())
}

fn controller(channel: &tonic::transport::Channel, name: &str) -> Controller<Lease> {
    Controller::new(name, Watched::all(Api::<Lease>::new(channel.clone())))
        .backoff(Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(80),
        ))
        .restart_backoff(Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(1),
        ))
}

#[tokio::test]
async fn reconciles_on_change_requeue_and_mapped_secondary_changes() {
    let (channel, stop, _dir) = start().await;
    let leases: Api<Lease> = Api::new(channel.clone());
    let events: Api<Event> = Api::new(channel.clone());
    leases.create(&lease("a", "x")).await.unwrap();
    let script = Arc::new(Script::default());
    script.requeue.lock().unwrap().insert("a".into(), 2);
    // An Event about a Lease reconciles that Lease.
    let about = Watched::all(events.clone());
    let run = controller(&channel, "mapped")
        .watches(about, |change: Change<'_, Event>| {
            let involved = change
                .object()
                .spec
                .as_ref()
                .and_then(|s| s.involved_object.clone())
                .unwrap_or_default();
            vec![(involved.namespace, involved.name)]
        })
        .run(reconcile, script.clone(), stop.clone());
    tokio::spawn(run);

    // Listed at start, then requeued twice.
    eventually("a reconciled three times", || script.seen("a") == 3).await;
    leases.create(&lease("b", "x")).await.unwrap();
    eventually("b reconciled once created", || script.seen("b") == 1).await;
    let mut b = leases.get("default", "b").await.unwrap();
    b.spec.as_mut().unwrap().holder_identity = "y".into();
    leases.update(&b).await.unwrap();
    eventually("b reconciled on change", || script.seen("b") == 2).await;
    events
        .create(&Event {
            metadata: Some(ObjectMeta {
                name: "about-b".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(EventSpec {
                involved_object: Some(ObjectReference {
                    kind: "Lease".into(),
                    namespace: "default".into(),
                    name: "b".into(),
                    uid: String::new(),
                }),
                reason: "Test".into(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .unwrap();
    eventually("b reconciled for the Event", || script.seen("b") == 3).await;
    assert_eq!(script.seen("a"), 3, "a was left alone");
    stop.cancel();
}

#[tokio::test]
async fn failures_are_retried_with_back_off_and_counted() {
    let (channel, stop, _dir) = start().await;
    let leases: Api<Lease> = Api::new(channel.clone());
    let script = Arc::new(Script::default());
    script.fail.lock().unwrap().insert("flaky".into(), 3);
    let metrics = ControllerMetrics::default();
    tokio::spawn(
        controller(&channel, "retries")
            .metrics(metrics.clone())
            .run(reconcile, script.clone(), stop.clone()),
    );
    let started = tokio::time::Instant::now();
    leases.create(&lease("flaky", "x")).await.unwrap();
    eventually("succeeds on the fourth try", || script.seen("flaky") == 4).await;
    // 20 + 40 + 80 ms of back-off between the tries.
    assert!(
        started.elapsed() >= Duration::from_millis(140),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(metrics.errors("retries"), 3);
    assert_eq!(metrics.reconciles("retries"), 4);
    stop.cancel();
}

async fn healthz(address: std::net::SocketAddr) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (code, body)
}

#[tokio::test]
async fn a_panicking_reconcile_restarts_the_controller_and_shows_in_health() {
    let (channel, stop, _dir) = start().await;
    let leases: Api<Lease> = Api::new(channel.clone());
    let health = Health::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(telemetry::serve(
        listener,
        Vec::new(),
        health.clone(),
        stop.clone(),
    ));
    let script = Arc::new(Script::default());
    script.panic.lock().unwrap().insert("poison".into(), 2);
    let metrics = ControllerMetrics::default();
    tokio::spawn(
        controller(&channel, "fragile")
            .health(health.clone())
            .metrics(metrics.clone())
            .run(reconcile, script.clone(), stop.clone()),
    );
    eventually("ready", || {
        health.state("controller/fragile") == Some(ComponentState::Ready)
    })
    .await;
    assert_eq!(healthz(address).await, (200, "ok\n".to_string()));

    let mut changes = health.subscribe();
    leases.create(&lease("poison", "x")).await.unwrap();
    // Down while it waits to restart, and /healthz says so.
    let down = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(ComponentState::Down(reason)) = health.state("controller/fragile") {
                return reason;
            }
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("reported down");
    assert!(down.contains("poisoned object poison"), "{down}");
    let (code, body) = healthz(address).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("controller/fragile: down"), "{body}");

    // It restarts (twice: the object panics twice), then reconciles it and is healthy.
    eventually("reconciled after the restarts", || {
        script.seen("poison") == 3
    })
    .await;
    eventually("ready again", || {
        health.state("controller/fragile") == Some(ComponentState::Ready)
    })
    .await;
    assert_eq!(metrics.restarts("fragile"), 2);
    assert_eq!(healthz(address).await.0, 200);
    leases.create(&lease("after", "x")).await.unwrap();
    eventually("still reconciling", || script.seen("after") == 1).await;
    stop.cancel();
}

#[tokio::test]
async fn acts_only_while_leading() {
    let (channel, stop, _dir) = start().await;
    let leases: Api<Lease> = Api::new(channel.clone());
    let health = Health::new();
    let (lead, leading) = watch::channel(false);
    let script = Arc::new(Script::default());
    let reconciles = Arc::new(AtomicU32::new(0));
    let counted = reconciles.clone();
    let count = move |lease: Arc<Lease>, script: Arc<Script>| {
        counted.fetch_add(1, Ordering::SeqCst);
        reconcile(lease, script)
    };
    leases.create(&lease("a", "x")).await.unwrap();
    tokio::spawn(
        controller(&channel, "elected")
            .leader(leading)
            .health(health.clone())
            .run(count, script.clone(), stop.clone()),
    );
    eventually("standby", || {
        health.state("controller/elected") == Some(ComponentState::Standby)
    })
    .await;
    assert_eq!(
        reconciles.load(Ordering::SeqCst),
        0,
        "nothing while following"
    );

    lead.send_replace(true);
    eventually("reconciles once leading", || script.seen("a") == 1).await;
    lead.send_replace(false);
    eventually("back to standby", || {
        health.state("controller/elected") == Some(ComponentState::Standby)
    })
    .await;
    let before = reconciles.load(Ordering::SeqCst);
    lead.send_replace(true);
    // Leading again: a fresh run lists and reconciles everything again.
    eventually("reconciles after regaining leadership", || {
        reconciles.load(Ordering::SeqCst) > before
    })
    .await;
    stop.cancel();
    eventually("gone from the health report on shutdown", || {
        health.state("controller/elected").is_none()
    })
    .await;
}
