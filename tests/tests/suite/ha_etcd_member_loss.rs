//! Surviving the loss of a machine: a 3-member etcd cluster on loopback and two
//! apiservers, under continuous writes from clients that know both apiservers. One
//! etcd member (the Raft leader) and one apiserver are killed with SIGKILL mid-stream; clients retry
//! and carry on. Afterwards every acknowledged write is present exactly once, each
//! writer's acknowledged resource versions only grow, and the killed member, started
//! again, catches up with the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hypermesh_api::v1::{ListRequest, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::etcd::EtcdCluster;
use hypermesh_tests::fixtures::{rv, workload};
use hypermesh_tests::ha::{admin_on_all, apiserver_on};
use hypermesh_tests::wait_for;
use tonic::Code;

const WRITERS: usize = 4;

/// Writes `w{writer}-{n}` one after another until `stop`; returns each acknowledged
/// name with its resource version, in order. A failed create is retried under the
/// same name; ALREADY_EXISTS on a retry means the failed attempt had committed (its
/// acknowledgement was lost), which is not counted as acknowledged.
async fn write_until(
    api: Api<Workload>,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> Vec<(String, u64)> {
    let mut acked = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("w{writer}-{n:05}");
        let mut retried = false;
        loop {
            match api.create(&workload("default", &name, 1)).await {
                Ok(w) => {
                    acked.push((name.clone(), rv(&w)));
                    break;
                }
                Err(e) if retried && e.code() == Code::AlreadyExists => break,
                Err(_) => {
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        n += 1;
    }
    acked
}

#[tokio::test]
async fn writes_survive_killing_an_etcd_member_and_an_apiserver() {
    let mut etcd = EtcdCluster::start_members(3).await.expect("3-member etcd");
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("encryption.key");
    let mut a = apiserver_on(&etcd, &key_file, &[]).await;
    let b = apiserver_on(&etcd, &key_file, &[]).await;

    let target = admin_on_all(&[&a, &b]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let channel = hypermesh_api::client::connect_lazy(&target).expect("channel");
        writers.push(tokio::spawn(write_until(
            Api::new(channel),
            writer,
            stop.clone(),
        )));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    // The member that leads: the cluster must elect another.
    let victim = etcd.leader().await.expect("leader");
    etcd.kill9(victim).await.expect("kill the etcd leader");
    a.kill9().await.expect("kill apiserver A");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The member comes back and catches up while writes go on.
    etcd.restart(victim)
        .await
        .expect("restart the killed member");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.await.expect("writer"));
    }

    let on_b: Api<Workload> = Api::new(b.channel().await.expect("b"));
    let (items, _) = on_b
        .list_all(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for w in &items {
        stored.entry(w.meta().name.clone()).or_default().push(rv(w));
    }
    let mut total = 0;
    for (writer, writes) in acked.iter().enumerate() {
        assert!(
            writes.len() > 10,
            "writer {writer} made progress: {} writes",
            writes.len()
        );
        let mut last = 0;
        for (name, version) in writes {
            assert_eq!(
                stored.get(name),
                Some(&vec![*version]),
                "{name}: present once, as acknowledged"
            );
            assert!(*version > last, "writer {writer}: versions only grow");
            last = *version;
        }
        total += writes.len();
    }
    eprintln!(
        "{total} acknowledged writes, {} objects stored",
        items.len()
    );

    // The restarted member has every revision the others have.
    let mut client = etcd.client().await.expect("etcd client");
    let head = client
        .get("/", Some(etcd_client::GetOptions::new().with_count_only()))
        .await
        .expect("read")
        .header()
        .map(|h| h.revision())
        .expect("header");
    wait_for(Duration::from_secs(20), || async {
        etcd.member_revision(victim).await.filter(|r| *r >= head)
    })
    .await
    .unwrap_or_else(|e| panic!("member {victim} never caught up to revision {head}: {e}"));
}
