//! Two `hm-apiserver` processes on one etcd: they share one cluster CA (kept in etcd,
//! sealed with the key file both are given), a certificate either issued works on the
//! other, and a watch through one sees every write made through the other, once each,
//! in order.

use hypermesh_api::Resource;
use hypermesh_api::v1::{WatchEventType, WatchRequest, Workload};
use hypermesh_api::{Api, client::connect_to};
use hypermesh_tests::etcd::EtcdCluster;
use hypermesh_tests::fixtures::{next_change, rv, workload};
use hypermesh_tests::ha::apiserver_on;

#[tokio::test]
async fn a_watch_on_one_apiserver_sees_writes_through_the_other() {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("encryption.key");
    let a = apiserver_on(&etcd, &key_file, &[]).await;
    let b = apiserver_on(&etcd, &key_file, &[]).await;
    assert_eq!(
        a.ca_pin().expect("a's CA"),
        b.ca_pin().expect("b's CA"),
        "both serve with the one cluster CA"
    );

    // A's admin certificate works on B (one CA, one store of certificates).
    let a_admin_on_b = a
        .config_target(hypermesh_apiserver::server::ADMIN_CONFIG)
        .map(|mut t| {
            t.url = b.url().to_string();
            t
        })
        .expect("a's admin.config");
    let on_b: Api<Workload> = Api::new(connect_to(&a_admin_on_b).await.expect("a's admin on b"));
    let on_a: Api<Workload> = Api::new(a.channel().await.expect("a"));

    let first = on_a
        .create(&workload("default", "w-000", 1))
        .await
        .expect("create through a");
    let mut watch = on_b
        .watch(WatchRequest {
            namespace: "default".into(),
            resource_version: rv(&first),
            ..Default::default()
        })
        .await
        .expect("watch through b");

    let mut written = Vec::new();
    for i in 1..=30 {
        let w = on_a
            .create(&workload("default", &format!("w-{i:03}"), 1))
            .await
            .expect("create through a");
        written.push((w.meta().name.clone(), rv(&w)));
    }
    let mut scaled = on_a.get("default", "w-001").await.expect("get");
    scaled.spec.as_mut().expect("spec").replicas = 3;
    let scaled = on_a.update(&scaled).await.expect("update through a");

    let mut last = rv(&first);
    for (name, version) in &written {
        let (kind, obj) = next_change::<Workload>(&mut watch).await;
        assert_eq!(
            (kind, obj.meta().name.as_str()),
            (WatchEventType::Added, name.as_str())
        );
        assert_eq!(
            rv(&obj),
            *version,
            "resource_version is the etcd revision of the write"
        );
        assert!(rv(&obj) > last, "versions increase");
        last = rv(&obj);
    }
    let (kind, obj) = next_change::<Workload>(&mut watch).await;
    assert_eq!(
        (kind, obj.meta().name.as_str(), rv(&obj)),
        (WatchEventType::Modified, "w-001", rv(&scaled))
    );

    // And the other way round: B's writes are A's reads.
    let from_b = on_b
        .create(&workload("default", "from-b", 1))
        .await
        .expect("create through b");
    let seen = on_a.get("default", "from-b").await.expect("get through a");
    assert_eq!(rv(&seen), rv(&from_b));
}
