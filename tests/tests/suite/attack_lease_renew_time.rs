//! Attack (issue 13): a Lease whose `renewTime` lies at the end of `i64`. It used to
//! make the scheduler panic ("overflow when adding duration to instant") and exit
//! with status 0, and the apiserver's in-process controllers panic while the
//! apiserver kept reporting healthy, so Workloads silently never got Instances again.
//!
//! Now the API refuses such a Lease (naming `spec.renewTime`), and one already in the
//! store (left by an older version) is judged by when the candidates saw it change:
//! it never does, so it expires after its duration and the cluster carries on.

use hypermesh_tests::attack;
use hypermesh_tests::scheduler;
use hypermesh_tests::workload;

use attack::{
    END_OF_TIME, SURVIVE_TIMEOUT, assert_refused, exited, free_address, hostile_lease, http_get,
    spawn_scheduler, store_directly,
};
use hypermesh_api::Api;
use hypermesh_api::v1::{Instance, Lease, Node, Workload};
use hypermesh_tests::{ApiServerProcess, wait_for};
use scheduler::{instance, node};

#[tokio::test]
async fn the_scheduler_outlives_a_lease_renewed_at_the_end_of_time() {
    let mut server = ApiServerProcess::start().await.expect("apiserver");
    server.kill9().await.expect("stop apiserver");
    store_directly(
        server.data_dir(),
        hostile_lease(
            "hypermesh-system",
            "hm-scheduler",
            "mallory",
            END_OF_TIME,
            2,
        ),
    )
    .await;
    server.restart().await.expect("restart apiserver");
    let channel = server.channel().await.expect("channel");
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
    let bound = wait_for(SURVIVE_TIMEOUT, || {
        let instances = instances.clone();
        let status = exited(&mut scheduler);
        async move {
            assert!(status.is_none(), "hm-scheduler exited: {status:?}");
            let i = instances.get("default", "web").await.ok()?;
            let node = i.spec?.node_name;
            (!node.is_empty()).then_some(node)
        }
    })
    .await
    .expect("the scheduler takes the Lease over and binds");
    assert_eq!(bound, "n1");
    assert!(exited(&mut scheduler).is_none(), "hm-scheduler still runs");

    let leases: Api<Lease> = Api::new(channel);
    assert_refused(
        leases
            .create(&hostile_lease(
                "default",
                "mallory",
                "mallory",
                END_OF_TIME,
                2,
            ))
            .await,
        "spec.renewTime",
    );
}

#[tokio::test]
async fn the_in_process_controllers_outlive_a_lease_renewed_at_the_end_of_time() {
    let metrics = free_address();
    let metrics_arg = metrics.to_string();
    let mut server = ApiServerProcess::start_with_args(&[
        "--controllers",
        "all",
        "--metrics-addr",
        &metrics_arg,
    ])
    .await
    .expect("apiserver");
    server.kill9().await.expect("stop apiserver");
    store_directly(
        server.data_dir(),
        hostile_lease(
            "hypermesh-system",
            "hypermesh-controllers",
            "mallory",
            END_OF_TIME,
            2,
        ),
    )
    .await;
    server.restart().await.expect("restart apiserver");
    let channel = server.channel().await.expect("channel");

    let workloads: Api<Workload> = Api::new(channel.clone());
    workloads
        .create(&workload::workload("web", 2, "web:1"))
        .await
        .expect("create workload");
    let instances: Api<Instance> = Api::new(channel.clone());
    wait_for(SURVIVE_TIMEOUT, || async {
        let owned = workload::instances_of(&instances, "web").await;
        (owned.len() == 2).then_some(())
    })
    .await
    .expect("the controllers take the Lease over and create the Instances");
    let (code, body) = http_get(metrics, "/healthz")
        .await
        .expect("/healthz answers");
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    let leases: Api<Lease> = Api::new(channel);
    assert_refused(
        leases
            .create(&hostile_lease(
                "default",
                "mallory",
                "mallory",
                END_OF_TIME,
                2,
            ))
            .await,
        "spec.renewTime",
    );
}
