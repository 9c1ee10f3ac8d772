//! The watch cache: many watchers of one kind all get each change (read from memory,
//! encoded once); a watch resumes inside the cache's byte-bounded window and gets
//! OUT_OF_RANGE (Expired) before it; a watcher that stops reading is closed with
//! RESOURCE_EXHAUSTED (WatchTooSlow) instead of growing the server's memory; a user
//! bound in one namespace watches only that namespace; and `--watch-cache=false`
//! serves the same events from the store.

use hypermesh_tests::fixtures;

use std::time::Duration;

use fixtures::{assert_status, namespace, next_change, rv, workload};
use hypermesh_api::Resource;
use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{WatchEventType, WatchRequest, Workload};
use hypermesh_apiserver::watch_cache::WatchCacheOptions;
use hypermesh_tests::identities::user;
use hypermesh_tests::{InProcessApiServer, connect_target};
use tonic::Code;

fn watch_from(namespace: &str, resource_version: u64) -> WatchRequest {
    WatchRequest {
        namespace: namespace.into(),
        resource_version,
        ..Default::default()
    }
}

/// A Workload carrying `kib` KiB in an annotation, so changes are large.
fn big_workload(name: &str, kib: usize) -> Workload {
    let mut w = workload("default", name, 1);
    w.metadata
        .as_mut()
        .expect("meta")
        .annotations
        .insert("pad".into(), "x".repeat(kib * 1024));
    w
}

async fn start_with_cache(options: WatchCacheOptions) -> InProcessApiServer {
    InProcessApiServer::start_with(move |c| c.watch_cache = options)
        .await
        .expect("server")
}

#[tokio::test]
async fn two_hundred_watchers_each_get_every_change_once() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let first = api
        .create(&workload("default", "w0", 1))
        .await
        .expect("create");
    let mut watches = Vec::new();
    for _ in 0..200 {
        watches.push(
            api.watch(watch_from("default", rv(&first)))
                .await
                .expect("watch"),
        );
    }
    let mut created = Vec::new();
    for i in 1..=3 {
        created.push(
            api.create(&workload("default", &format!("w{i}"), 1))
                .await
                .expect("create"),
        );
    }
    for watch in &mut watches {
        for c in &created {
            let (kind, obj) = next_change::<Workload>(watch).await;
            assert_eq!(kind, WatchEventType::Added);
            assert_eq!(obj.meta().name, c.meta().name);
            assert_eq!(rv(&obj), rv(c));
        }
    }
}

#[tokio::test]
async fn a_watch_resumes_inside_the_window_and_is_out_of_range_before_it() {
    let server = start_with_cache(WatchCacheOptions {
        window_bytes: 256 * 1024,
        ..Default::default()
    })
    .await;
    let api = server.api::<Workload>();
    let first = api
        .create(&big_workload("big-0", 16))
        .await
        .expect("create");
    let mut last = first.clone();
    // 40 changes of ~16 KiB (counted a few times over) push the first out of 256 KiB.
    for i in 1..40 {
        last = api
            .create(&big_workload(&format!("big-{i}"), 16))
            .await
            .expect("create");
    }
    let err = api
        .watch(watch_from("default", rv(&first)))
        .await
        .expect_err("a version before the window");
    assert_status(&err, Code::OutOfRange, Reason::Expired);
    assert!(err.message().contains("list again"), "{}", err.message());

    let mut watch = api
        .watch(watch_from("default", rv(&last) - 1))
        .await
        .expect("a version inside the window");
    let (kind, obj) = next_change::<Workload>(&mut watch).await;
    assert_eq!(
        (kind, obj.meta().name.as_str()),
        (WatchEventType::Added, "big-39")
    );
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed_with_resource_exhausted() {
    let server = start_with_cache(WatchCacheOptions {
        window_bytes: 64 * 1024 * 1024,
        lag_bytes: 1024 * 1024,
        ..Default::default()
    })
    .await;
    let api = server.api::<Workload>();
    let start = api
        .create(&workload("default", "start", 1))
        .await
        .expect("create");
    // Its own connection, so only this stream's flow control stalls.
    let slow_channel = connect_target(server.target()).await.expect("channel");
    let slow = hypermesh_api::Api::<Workload>::new(slow_channel);
    let mut stalled = slow
        .watch(watch_from("default", rv(&start)))
        .await
        .expect("watch");
    // Far more than the HTTP/2 windows between server and client hold, and 1 MiB lag.
    for i in 0..160 {
        api.create(&big_workload(&format!("flood-{i}"), 100))
            .await
            .expect("create");
    }
    // The server keeps answering others meanwhile.
    let mut fresh = api
        .watch(watch_from("default", 0))
        .await
        .expect("a new watch while one is stalled");
    let (kind, _) = next_change::<Workload>(&mut fresh).await;
    assert_eq!(kind, WatchEventType::Added);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut received = 0;
    let status = loop {
        let message = tokio::time::timeout_at(deadline, stalled.message())
            .await
            .expect("the stalled watch should end with a status before the deadline");
        match message {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stalled watch ended without a status after {received} events"),
            Err(status) => break status,
        }
    };
    assert!(received < 160, "it got everything: {received}");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(&status), Some(Reason::WatchTooSlow));
    assert!(
        status.message().contains("resume") && status.message().contains("list again"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_user_bound_in_one_namespace_watches_only_that_namespace() {
    let server = InProcessApiServer::start_tls().await.expect("server");
    server
        .api::<hypermesh_api::v1::Namespace>()
        .create(&namespace("team-a"))
        .await
        .expect("namespace");
    let target = user(&server, "alice", "viewer", &["team-a"])
        .await
        .expect("user");
    let alice =
        hypermesh_api::Api::<Workload>::new(connect_target(&target).await.expect("channel"));
    let err = alice
        .watch(watch_from("", 0))
        .await
        .expect_err("every namespace");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut watch = alice.watch(watch_from("team-a", 0)).await.expect("team-a");
    let admin = server.api::<Workload>();
    admin
        .create(&workload("default", "elsewhere", 1))
        .await
        .expect("create in default");
    admin
        .create(&workload("team-a", "mine", 1))
        .await
        .expect("create in team-a");
    let (kind, obj) = next_change::<Workload>(&mut watch).await;
    assert_eq!(
        (kind, obj.meta().name.as_str()),
        (WatchEventType::Added, "mine")
    );
    assert_eq!(obj.meta().namespace, "team-a");
}

#[tokio::test]
async fn without_the_cache_watches_read_the_store_and_see_the_same_events() {
    let server = start_with_cache(WatchCacheOptions {
        enabled: false,
        ..Default::default()
    })
    .await;
    let api = server.api::<Workload>();
    let a = api
        .create(&workload("default", "a", 1))
        .await
        .expect("create");
    let mut watch = api.watch(watch_from("default", 0)).await.expect("watch");
    let (kind, obj) = next_change::<Workload>(&mut watch).await;
    assert_eq!((kind, rv(&obj)), (WatchEventType::Added, rv(&a)));
    let b = api
        .create(&workload("default", "b", 1))
        .await
        .expect("create");
    let (kind, obj) = next_change::<Workload>(&mut watch).await;
    assert_eq!((kind, rv(&obj)), (WatchEventType::Added, rv(&b)));
}
