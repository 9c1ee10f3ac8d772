//! The store conformance suite (the same checks the embedded redb store passes)
//! against the etcd store on a real single-member etcd, one per check.

use hypermesh_apiserver::store::etcd::{EtcdOptions, EtcdStore};
use hypermesh_tests::etcd::EtcdCluster;

async fn fresh_store() -> (EtcdStore, EtcdCluster) {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let options = EtcdOptions {
        endpoints: etcd.client_urls(),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(options).await.expect("connect");
    (store, etcd)
}

hypermesh_apiserver::store_conformance_tests!(fresh_store());

/// etcd-specific: the per-request timeout does not cut long-lived watches (an idle
/// watch outlives it and still delivers).
#[tokio::test]
async fn an_idle_watch_outlives_the_request_timeout() {
    use hypermesh_apiserver::store::{Store, WatchItem};
    use std::time::Duration;

    let etcd = EtcdCluster::start().await.expect("etcd");
    let options = EtcdOptions {
        endpoints: etcd.client_urls(),
        request_timeout: Duration::from_millis(500),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(options).await.expect("connect");
    let mut watch = store
        .watch("/idle/", store.current_revision(), None)
        .await
        .expect("watch");
    // Idle for several request timeouts.
    let quiet = tokio::time::timeout(Duration::from_secs(2), watch.recv()).await;
    assert!(
        quiet.is_err(),
        "nothing (no error either) while idle: {quiet:?}"
    );
    let revision = store
        .create("/idle/a", b"x".to_vec())
        .await
        .expect("create");
    match tokio::time::timeout(Duration::from_secs(5), watch.recv()).await {
        Ok(Some(Ok(WatchItem::Event(e)))) => assert_eq!(e.revision, revision),
        other => panic!("expected the event, got {other:?}"),
    }
}
