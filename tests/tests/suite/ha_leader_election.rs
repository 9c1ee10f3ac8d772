//! Leader election across apiservers on one etcd: both run the in-process controllers,
//! exactly one (the holder of the controllers' Lease) acts. When the leader's process
//! is killed (no release), the other takes over within the lease duration and carries
//! on, and no controller acts twice: a Workload never gets more Instances than it asks
//! for.

use std::time::Duration;

use hypermesh_api::v1::{Instance, Lease, ListRequest, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::etcd::EtcdCluster;
use hypermesh_tests::fixtures::workload;
use hypermesh_tests::ha::{admin_on_all, apiserver_on, controllers_leader_pid};
use hypermesh_tests::wait_for;
use hypermesh_tests::workload::set_replicas;
use tokio::time::Instant;

const LEASE_SECONDS: u64 = 3;

async fn instances(api: &Api<Instance>) -> Vec<Instance> {
    api.list_all(ListRequest {
        namespace: "default".into(),
        label_selector: "app=web".into(),
        ..Default::default()
    })
    .await
    .map(|(items, _)| items)
    .unwrap_or_default()
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_lease_and_nothing_acts_twice() {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("encryption.key");
    let lease = LEASE_SECONDS.to_string();
    let extra = [
        "--controllers",
        "all",
        "--controllers-lease-seconds",
        lease.as_str(),
    ];
    let mut servers = [
        apiserver_on(&etcd, &key_file, &extra).await,
        apiserver_on(&etcd, &key_file, &extra).await,
    ];
    let target = admin_on_all(&[&servers[0], &servers[1]]);
    let channel = hypermesh_api::client::connect_lazy(&target).expect("channel");
    let workloads: Api<Workload> = Api::new(channel.clone());
    let instance_api: Api<Instance> = Api::new(channel.clone());
    let leases: Api<Lease> = Api::new(channel);

    workloads
        .create(&workload("default", "web", 3))
        .await
        .expect("create");
    wait_for(Duration::from_secs(20), || async {
        (instances(&instance_api).await.len() == 3).then_some(())
    })
    .await
    .expect("3 Instances from the leader");

    let pids: Vec<Option<u32>> = servers.iter().map(|s| s.pid()).collect();
    let leader = wait_for(Duration::from_secs(10), || async {
        let pid = controllers_leader_pid(&leases).await?;
        pids.iter().position(|p| *p == Some(pid))
    })
    .await
    .expect("one of the two apiservers leads");
    let survivor = 1 - leader;

    servers[leader].kill9().await.expect("kill the leader");
    let killed = Instant::now();
    let new_pid = pids[survivor];
    wait_for(Duration::from_secs(LEASE_SECONDS * 3), || async {
        (controllers_leader_pid(&leases).await == new_pid).then_some(())
    })
    .await
    .expect("the survivor takes the Lease");
    // The Lease may have been renewed just before the kill; the survivor notices its
    // expiry at its next retry (a fraction of the lease), plus slack for a loaded CI.
    let took_over = killed.elapsed();
    assert!(
        took_over <= Duration::from_secs(LEASE_SECONDS) + Duration::from_secs(3),
        "takeover after {took_over:?}, lease {LEASE_SECONDS}s"
    );

    // The new leader acts: scale up, and it converges to exactly that many.
    // (The new leader's controller may write the Workload's status meanwhile.)
    set_replicas(&workloads, "web", 5).await;
    wait_for(Duration::from_secs(20), || async {
        (instances(&instance_api).await.len() == 5).then_some(())
    })
    .await
    .expect("5 Instances from the new leader");
    // And stays there: nothing acts twice.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let now = instances(&instance_api).await;
        assert_eq!(
            now.len(),
            5,
            "duplicate Instances: {:?}",
            now.iter()
                .map(|i| i.meta().name.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
