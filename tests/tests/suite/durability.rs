//! Durability of a real `hm-apiserver` process: every acknowledged write survives a
//! SIGKILL in the middle of a write storm, background namespace deletion resumes after
//! one, and SIGTERM drains and exits 0 promptly even with a Watch stream open.

use hypermesh_tests::fixtures;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fixtures::{lease, namespace, next_event};
use hypermesh_api::Api;
use hypermesh_api::v1::{Lease, Namespace, WatchEventType, WatchRequest};
use hypermesh_tests::{ApiServerProcess, DEFAULT_TIMEOUT, wait_for};
use tokio::sync::Mutex;

const WRITERS: usize = 8;
/// Acknowledged writes to collect before the kill (or until the deadline below).
const ACKS_BEFORE_KILL: usize = 3000;
const LOAD_AT_MOST: Duration = Duration::from_secs(2);

/// What one writer had acknowledged: Leases in `default` and Namespaces.
#[derive(Debug, Default)]
struct Acked {
    leases: Vec<String>,
    namespaces: Vec<String>,
}

/// Creates objects as fast as the server acknowledges them, recording each name once
/// acknowledged; returns 1 if it stopped because a write failed (the server died).
async fn write_until_stopped(
    writer: usize,
    leases: Api<Lease>,
    namespaces: Api<Namespace>,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) -> usize {
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            return 0;
        }
        // Half the writers create Leases, half Namespaces.
        if writer.is_multiple_of(2) {
            let name = format!("w{writer}-{n}");
            if leases.create(&lease("default", &name)).await.is_err() {
                return 1;
            }
            acked.lock().await.leases.push(name);
        } else {
            let name = format!("ns-w{writer}-{n}");
            if namespaces.create(&namespace(&name)).await.is_err() {
                return 1;
            }
            acked.lock().await.namespaces.push(name);
        }
    }
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_kill_9() {
    let mut server = ApiServerProcess::start().await.expect("start hm-apiserver");
    let channel = server.channel().await.expect("connect");
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(write_until_stopped(
                w,
                Api::new(channel.clone()),
                Api::new(channel.clone()),
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Let the load build up: enough acknowledgements, or the time limit.
    let started = Instant::now();
    let _ = wait_for(LOAD_AT_MOST, || async {
        let acked = acked.lock().await;
        (acked.leases.len() + acked.namespaces.len() >= ACKS_BEFORE_KILL).then_some(())
    })
    .await;
    let before_kill = {
        let a = acked.lock().await;
        a.leases.len() + a.namespaces.len()
    };
    assert!(
        before_kill > 0,
        "no write was acknowledged in {:?}",
        started.elapsed()
    );

    // Kill while writers are mid-flight, then stop them.
    server.kill9().await.expect("kill -9");
    stop.store(true, Ordering::Release);
    let mut failed_writers = 0;
    for writer in writers {
        let failures = tokio::time::timeout(DEFAULT_TIMEOUT, writer)
            .await
            .expect("writers notice the dead server")
            .expect("writer task");
        failed_writers += failures;
    }

    server
        .restart()
        .await
        .expect("restart on the same data dir");
    let channel = server.channel().await.expect("reconnect");
    let leases = Api::<Lease>::new(channel.clone());
    let namespaces = Api::<Namespace>::new(channel);
    let acked = acked.lock().await;
    let (stored_leases, _) = leases
        .list_all(fixtures::list_request("default"))
        .await
        .expect("list leases");
    let stored_leases: BTreeSet<String> = fixtures::names(&stored_leases).into_iter().collect();
    let (stored_ns, _) = namespaces
        .list_all(fixtures::list_request(""))
        .await
        .expect("list namespaces");
    let stored_ns: BTreeSet<String> = fixtures::names(&stored_ns).into_iter().collect();

    let lost_leases: Vec<&String> = acked
        .leases
        .iter()
        .filter(|n| !stored_leases.contains(*n))
        .collect();
    let lost_ns: Vec<&String> = acked
        .namespaces
        .iter()
        .filter(|n| !stored_ns.contains(*n))
        .collect();
    assert!(
        lost_leases.is_empty() && lost_ns.is_empty(),
        "acknowledged writes lost after kill -9: {} leases {:?}, {} namespaces {:?} \
         (of {} + {} acknowledged)",
        lost_leases.len(),
        lost_leases.iter().take(10).collect::<Vec<_>>(),
        lost_ns.len(),
        lost_ns.iter().take(10).collect::<Vec<_>>(),
        acked.leases.len(),
        acked.namespaces.len()
    );
    // Each one also reads back individually.
    for name in &acked.leases {
        leases
            .get("default", name)
            .await
            .expect("get acknowledged lease");
    }
    for name in &acked.namespaces {
        namespaces
            .get("", name)
            .await
            .expect("get acknowledged namespace");
    }
    // The system namespaces are still there, and the server takes writes again.
    assert!(stored_ns.contains("default") && stored_ns.contains("hypermesh-system"));
    leases
        .create(&lease("default", "after-restart"))
        .await
        .expect("write after restart");
    eprintln!(
        "{} writes acknowledged ({before_kill} before the kill), {failed_writers} writers cut off",
        acked.leases.len() + acked.namespaces.len()
    );
}

#[tokio::test]
async fn sigterm_exits_zero_promptly_with_a_watch_open() {
    // A long grace period: if the open watch held the drain, exit would take 30 s.
    let mut server = ApiServerProcess::start_with_args(&["--shutdown-grace", "30"])
        .await
        .expect("start hm-apiserver");
    let channel = server.channel().await.expect("connect");
    let leases = Api::<Lease>::new(channel);
    let first = leases
        .create(&lease("default", "before-term"))
        .await
        .expect("create");
    let mut watch = leases
        .watch(WatchRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("watch");
    let (kind, seen) = next_event::<Lease>(&mut watch).await;
    assert_eq!((kind, seen), (WatchEventType::Added, first));

    let started = Instant::now();
    let status = server.terminate().await.expect("SIGTERM");
    let took = started.elapsed();
    assert!(status.success(), "hm-apiserver exited with {status}");
    assert!(
        took < Duration::from_secs(10),
        "an open watch kept the server alive for {took:?}"
    );
    // The client sees its stream end (cleanly or with an error), not hang.
    let end = tokio::time::timeout(fixtures::EVENT_TIMEOUT, watch.message())
        .await
        .expect("the watch stream ends when the server exits");
    assert!(
        !matches!(end, Ok(Some(_))),
        "no more events after shutdown: {end:?}"
    );

    // What was written before SIGTERM is there after a restart.
    server.restart().await.expect("restart");
    let leases = Api::<Lease>::new(server.channel().await.expect("connect"));
    leases
        .get("default", "before-term")
        .await
        .expect("data survives a clean shutdown");
}

#[tokio::test]
async fn namespace_deletion_resumes_after_kill_9() {
    let mut server = ApiServerProcess::start().await.expect("start hm-apiserver");
    let channel = server.channel().await.expect("connect");
    let namespaces = Api::<Namespace>::new(channel.clone());
    let leases = Api::<Lease>::new(channel);
    namespaces
        .create(&namespace("doomed"))
        .await
        .expect("create ns");
    let mut held = lease("doomed", "held");
    held.metadata
        .as_mut()
        .expect("meta")
        .finalizers
        .push("example.com/hold".into());
    leases.create(&held).await.expect("held lease");
    leases
        .create(&lease("doomed", "plain"))
        .await
        .expect("plain lease");
    namespaces
        .delete(fixtures::delete_request("", "doomed"))
        .await
        .expect("delete ns");
    fixtures::wait_gone(&leases, "doomed", "plain").await;

    server.kill9().await.expect("kill -9");
    server.restart().await.expect("restart");
    let channel = server.channel().await.expect("reconnect");
    let namespaces = Api::<Namespace>::new(channel.clone());
    let leases = Api::<Lease>::new(channel);

    // Still terminating, still refusing new objects, still waiting for the finalizer.
    let ns = namespaces.get("", "doomed").await.expect("still there");
    assert!(
        ns.metadata
            .as_ref()
            .expect("meta")
            .deletion_timestamp
            .is_some()
    );
    let err = leases
        .create(&lease("doomed", "late"))
        .await
        .expect_err("terminating");
    fixtures::assert_status(
        &err,
        tonic::Code::FailedPrecondition,
        hypermesh_api::reason::Reason::NamespaceTerminating,
    );
    // The namespace controller may not have reached `held` before the kill (it deletes
    // the namespace's objects one by one); it does once the restarted server resumes.
    let mut release = wait_for(DEFAULT_TIMEOUT, || async {
        let held = leases.get("doomed", "held").await.ok()?;
        held.metadata
            .as_ref()?
            .deletion_timestamp
            .is_some()
            .then_some(held)
    })
    .await
    .expect("the held lease marked for deletion after the restart");
    release.metadata.as_mut().expect("meta").finalizers.clear();
    leases.update(&release).await.expect("remove finalizer");
    fixtures::wait_gone(&namespaces, "", "doomed").await;
}
