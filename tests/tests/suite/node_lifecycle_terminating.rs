//! An Instance deleted on a node whose agent has taken it stays `Terminating` (the
//! `hypermesh.io/containers` finalizer) until the agent confirms; when the node dies,
//! nothing can confirm, so the node-lifecycle controller force-removes it once the
//! eviction grace has passed.

use hypermesh_tests::node_lifecycle;

use hypermesh_api::v1::{self, BindRequest, DeleteRequest, Instance, ObjectMeta};
use hypermesh_api::{CONTAINERS_FINALIZER, Resource};
use hypermesh_tests::wait_for;
use node_lifecycle::{Cluster, TIMEOUT, tainted};

#[tokio::test]
async fn a_dead_nodes_terminating_instance_is_force_removed() {
    let cluster = Cluster::start().await;
    let a = cluster.add_live_node("a").await;
    let instances = cluster.instances();
    let instance = Instance {
        metadata: Some(ObjectMeta {
            name: "solo".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: "hypermesh.local/busybox:latest".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    instances.create(&instance).await.expect("create");
    let _ = instances
        .bind(BindRequest {
            namespace: "default".into(),
            name: "solo".into(),
            node_name: "a".into(),
            ..Default::default()
        })
        .await;
    // The node's agent takes it: it reports a running container.
    let mut taken = instances.get("default", "solo").await.expect("get");
    let status = taken.status.get_or_insert_with(Default::default);
    status.phase = v1::InstancePhase::Running as i32;
    status.container_statuses = vec![v1::ContainerStatus {
        name: "main".into(),
        ..Default::default()
    }];
    taken.meta_mut().resource_version = 0;
    instances.update_status(&taken).await.expect("status");

    instances
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "solo".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let held = instances
        .get("default", "solo")
        .await
        .expect("held until its containers are confirmed gone");
    assert!(held.meta().deletion_timestamp.is_some());
    assert_eq!(
        held.meta().finalizers,
        vec![CONTAINERS_FINALIZER.to_string()]
    );

    // While the node lives, nothing removes it behind the agent's back.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(instances.get("default", "solo").await.is_ok());

    // The node dies: after the grace the Instance leaves the API.
    a.stop();
    cluster.wait_node("a", "tainted", tainted).await;
    wait_for(TIMEOUT, || async {
        instances
            .get("default", "solo")
            .await
            .is_err()
            .then_some(())
    })
    .await
    .expect("force-removed after the node-lifecycle grace");
}
