//! Attack (issue 13): a Lease held for `i32::MAX` seconds (68 years). Written through
//! the API for the scheduler's or the controllers' election, it used to stall them:
//! every candidate followed the attacker, and nothing was scheduled or reconciled.
//!
//! Now the API refuses a duration over an hour (naming `spec.leaseDurationSeconds`),
//! and the candidates never honour more than that, even from a Lease that bypassed
//! validation, so the cluster keeps working.

use hypermesh_tests::attack;
use hypermesh_tests::scheduler;
use hypermesh_tests::workload;

use attack::{SURVIVE_TIMEOUT, assert_refused, exited, hostile_lease, spawn_scheduler};
use hypermesh_api::Api;
use hypermesh_api::v1::{Instance, Lease, Node, Workload};
use hypermesh_tests::{ApiServerProcess, wait_for};
use scheduler::{instance, node};

fn now() -> i64 {
    hypermesh_api::time::now().seconds
}

#[tokio::test]
async fn a_lease_for_68_years_is_refused_and_the_scheduler_keeps_binding() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let channel = server.channel().await.expect("channel");
    let leases: Api<Lease> = Api::new(channel.clone());
    let attack = leases
        .create(&hostile_lease(
            "hypermesh-system",
            "hm-scheduler",
            "mallory",
            now(),
            i32::MAX,
        ))
        .await;
    let mut scheduler = spawn_scheduler(server.url());

    let nodes: Api<Node> = Api::new(channel.clone());
    let instances: Api<Instance> = Api::new(channel.clone());
    hypermesh_tests::proofs::create_offering_node(
        &nodes,
        &Api::new(channel.clone()),
        node("n1", "4", "8Gi").build(),
    )
    .await
    .expect("create node");
    instances
        .create(&instance("web").build())
        .await
        .expect("create instance");
    wait_for(SURVIVE_TIMEOUT, || {
        let instances = instances.clone();
        let status = exited(&mut scheduler);
        async move {
            assert!(status.is_none(), "hm-scheduler exited: {status:?}");
            let i = instances.get("default", "web").await.ok()?;
            (!i.spec?.node_name.is_empty()).then_some(())
        }
    })
    .await
    .expect("the scheduler leads and binds");
    assert_refused(attack, "spec.leaseDurationSeconds");
}

#[tokio::test]
async fn a_lease_for_68_years_is_refused_and_the_controllers_keep_working() {
    let server = ApiServerProcess::start_with_args(&["--controllers", "all"])
        .await
        .expect("apiserver");
    let channel = server.channel().await.expect("channel");
    let leases: Api<Lease> = Api::new(channel.clone());
    let attack = leases
        .create(&hostile_lease(
            "hypermesh-system",
            "hypermesh-controllers",
            "mallory",
            now(),
            i32::MAX,
        ))
        .await;

    let workloads: Api<Workload> = Api::new(channel.clone());
    workloads
        .create(&workload::workload("web", 2, "web:1"))
        .await
        .expect("create workload");
    let instances: Api<Instance> = Api::new(channel);
    wait_for(SURVIVE_TIMEOUT, || async {
        let owned = workload::instances_of(&instances, "web").await;
        (owned.len() == 2).then_some(())
    })
    .await
    .expect("the controllers lead and create the Instances");
    assert_refused(attack, "spec.leaseDurationSeconds");
}
