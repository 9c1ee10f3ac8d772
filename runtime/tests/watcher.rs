//! The watcher against a real apiserver: first a full listing, then live changes, and
//! a re-list when its resume version has been compacted away.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use std::time::Duration;

use futures::StreamExt;
use hypermesh_api::v1::{Lease, LeaseSpec, ObjectMeta};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::reflector;
use hypermesh_runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

fn lease(name: &str) -> Lease {
    Lease {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: "x".into(),
            ..Default::default()
        }),
        status: None,
    }
}

async fn start(retain: u64) -> (Api<Lease>, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = hypermesh_apiserver::Config::new(dir.path());
    config.store.set_retain_revisions(retain);
    // These tests resume against the store's own history, so a compacted version is
    // out of range at once (the watch cache would still serve it from its window).
    config.watch_cache.enabled = false;
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = hypermesh_apiserver::ApiServer::open(config, shutdown.clone())
        .await
        .unwrap();
    tokio::spawn(server.serve(listener));
    let channel = hypermesh_api::client::connect(&url).await.unwrap();
    (Api::new(channel), shutdown, dir)
}

async fn next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("event in time")
        .expect("stream open")
}

#[tokio::test]
async fn lists_then_streams_changes_into_a_cache() {
    let (api, shutdown, _dir) = start(100_000).await;
    api.create(&lease("a")).await.unwrap();
    let (writer, cache) = reflector::store::<Lease>();
    let mut events = Box::pin(reflector::reflector(
        writer,
        watcher::watcher(api.clone(), watcher::Config::default()),
    ));
    match next(&mut events).await.unwrap() {
        Event::Restarted(items) => assert_eq!(
            items
                .iter()
                .map(|l| l.meta().name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        ),
        other => panic!("expected a listing first, got {other:?}"),
    }
    cache.wait_ready().await;
    api.create(&lease("b")).await.unwrap();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Applied(l) if l.meta().name == "b"));
    api.delete(hypermesh_api::v1::DeleteRequest {
        namespace: "default".into(),
        name: "a".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(matches!(next(&mut events).await.unwrap(), Event::Deleted(l) if l.meta().name == "a"));
    assert_eq!(cache.len(), 1);
    assert!(cache.get("default", "b").is_some());
    shutdown.cancel();
}

#[tokio::test]
async fn relists_when_the_resume_version_is_compacted() {
    let (api, shutdown, _dir) = start(5).await;
    let (writer, cache) = reflector::store::<Lease>();
    let mut events = Box::pin(reflector::reflector(
        writer,
        watcher::watcher(api.clone(), watcher::Config::default()),
    ));
    assert!(matches!(
        next(&mut events).await.unwrap(),
        Event::Restarted(_)
    ));
    // While nobody polls the watcher, 30 writes compact its resume version away.
    for i in 0..30 {
        api.create(&lease(&format!("l{i}"))).await.unwrap();
    }
    let err = api
        .watch(hypermesh_api::v1::WatchRequest {
            resource_version: 1,
            ..Default::default()
        })
        .await
        .expect_err("compacted");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    // The watcher recovers by listing again: the cache ends up with every lease.
    let mut relisted = false;
    while cache.len() < 30 {
        relisted |= matches!(next(&mut events).await.unwrap(), Event::Restarted(_));
    }
    assert!(relisted, "recovery went through a fresh listing");
    shutdown.cancel();
}
