//! A client given two apiservers (on one etcd) fails over when the one it uses is
//! killed: requests go on through the other, and a runtime watcher's watch moves to
//! the other and resumes from its last resource version, so it sees every write once,
//! in order — none lost, none repeated.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use hypermesh_api::v1::Workload;
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::watcher::{self, Event};
use hypermesh_tests::etcd::EtcdCluster;
use hypermesh_tests::fixtures::{rv, workload};
use hypermesh_tests::ha::{admin_on_all, apiserver_on};
use hypermesh_tests::{DEFAULT_TIMEOUT, wait_for};
use tokio::sync::mpsc;

#[tokio::test]
async fn a_watch_resumes_on_the_other_apiserver_without_loss_or_repeats() {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("encryption.key");
    let mut a = apiserver_on(&etcd, &key_file, &[]).await;
    let b = apiserver_on(&etcd, &key_file, &[]).await;

    // The client lists A first, so it connects to A.
    let both = admin_on_all(&[&a, &b]);
    let channel = hypermesh_api::client::connect_to(&both)
        .await
        .expect("connect");
    let through_both: Api<Workload> = Api::new(channel);
    let on_b: Api<Workload> = Api::new(b.channel().await.expect("b"));

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let config = watcher::Config {
        namespace: "default".into(),
        ..Default::default()
    };
    let mut events = Box::pin(watcher::watcher(through_both.clone(), config));
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let objects = match event {
                Ok(Event::Applied(w)) => vec![w],
                Ok(Event::Restarted(list)) => list,
                Ok(Event::Deleted(_)) | Err(_) => continue,
            };
            for w in objects {
                if seen_tx.send((w.meta().name.clone(), rv(&w))).is_err() {
                    return;
                }
            }
        }
    });

    let mut written = Vec::new();
    for i in 0..10 {
        let w = on_b
            .create(&workload("default", &format!("w-{i:02}"), 1))
            .await
            .expect("create");
        written.push((w.meta().name.clone(), rv(&w)));
    }
    let mut received = Vec::new();
    while received.len() < 10 {
        let item = tokio::time::timeout(DEFAULT_TIMEOUT, seen.recv())
            .await
            .expect("events before the kill")
            .expect("watcher");
        received.push(item);
    }

    a.kill9().await.expect("kill A");
    for i in 10..20 {
        let w = on_b
            .create(&workload("default", &format!("w-{i:02}"), 1))
            .await
            .expect("create");
        written.push((w.meta().name.clone(), rv(&w)));
    }
    while received.len() < 20 {
        let item = tokio::time::timeout(DEFAULT_TIMEOUT, seen.recv())
            .await
            .expect("events after the kill")
            .expect("watcher");
        received.push(item);
    }
    // Nothing more comes (no repeats) within a moment.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.recv())
            .await
            .is_err(),
        "an event was repeated"
    );
    assert_eq!(
        received, written,
        "every write once, in order, with its version"
    );
    let unique: BTreeSet<_> = received.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(unique.len(), 20);

    // Unary calls carry on through B (the first may meet the dead connection).
    let got = wait_for(DEFAULT_TIMEOUT, || async {
        through_both.get("default", "w-19").await.ok()
    })
    .await
    .expect("get through the failover channel");
    assert_eq!(rv(&got), written[19].1);
}
