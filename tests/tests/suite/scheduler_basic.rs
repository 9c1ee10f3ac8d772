//! The scheduler binds pending Instances to nodes with room, never past capacity,
//! and says why an Instance that fits nowhere stays pending.

use std::collections::BTreeMap;
use std::time::Duration;

use hypermesh_api::v1::{self, Condition, Instance, ListRequest, Node, NodeStatus, ObjectMeta};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::{InProcessApiServer, wait_for};
use tokio_util::sync::CancellationToken;

fn node(name: &str, cpu: &str, memory: &str) -> Node {
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(v1::NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: BTreeMap::from([
                ("cpu".to_string(), cpu.to_string()),
                ("memory".to_string(), memory.to_string()),
            ]),
            conditions: vec![Condition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn instance(name: &str, cpu: &str) -> Instance {
    Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: "hypermesh.local/busybox:latest".into(),
                resources: Some(v1::ResourceRequirements {
                    cpu: cpu.into(),
                    memory: "64Mi".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

async fn node_of(api: &Api<Instance>, name: &str) -> Option<String> {
    let inst = api.get("default", name).await.ok()?;
    inst.spec.map(|s| s.node_name).filter(|n| !n.is_empty())
}

#[tokio::test]
async fn binds_within_capacity_and_explains_what_does_not_fit() {
    let server = InProcessApiServer::start().await.expect("server");
    let shutdown = CancellationToken::new();
    tokio::spawn(hypermesh_scheduler::run(
        server.channel(),
        hypermesh_scheduler::Config::default(),
        shutdown.clone(),
    ));
    let nodes = server.api::<Node>();
    let assets = server.api::<hypermesh_api::v1::Asset>();
    // What a node offers is what its proven Assets hold.
    for name in ["n1", "n2"] {
        hypermesh_tests::proofs::create_offering_node(&nodes, &assets, node(name, "2", "4Gi"))
            .await
            .expect("node");
    }
    let instances = server.api::<Instance>();
    for i in 0..4 {
        instances
            .create(&instance(&format!("i{i}"), "1"))
            .await
            .expect("instance");
    }
    for i in 0..4 {
        let name = format!("i{i}");
        wait_for(Duration::from_secs(10), || node_of(&instances, &name))
            .await
            .expect("bound");
    }
    let (all, _) = instances
        .list_all(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    let on_n1 = all
        .iter()
        .filter(|i| i.spec.as_ref().is_some_and(|s| s.node_name == "n1"))
        .count();
    assert_eq!(on_n1, 2, "two 1-cpu Instances per 2-cpu node");

    instances
        .create(&instance("too-big", "1"))
        .await
        .expect("instance");
    let message = wait_for(Duration::from_secs(10), || async {
        let inst = instances.get("default", "too-big").await.ok()?;
        let cond = inst
            .status?
            .conditions
            .into_iter()
            .find(|c| c.r#type == "Scheduled" && c.status == "False")?;
        Some(cond.message)
    })
    .await
    .expect("pending reason");
    assert_eq!(message, "0/2 nodes are available: 2 insufficient cpu.");
    assert!(node_of(&instances, "too-big").await.is_none());

    // Capacity frees up: the pending Instance is bound.
    instances
        .delete(v1::DeleteRequest {
            namespace: "default".into(),
            name: "i0".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    wait_for(Duration::from_secs(10), || node_of(&instances, "too-big"))
        .await
        .expect("bound after room appeared");
    let events = server.api::<v1::Event>();
    let (evs, _) = events
        .list_all(ListRequest {
            namespace: "default".into(),
            field_selector: "spec.involvedObject.name=too-big".into(),
            ..Default::default()
        })
        .await
        .expect("events");
    assert!(
        evs.iter().any(|e| e
            .spec
            .as_ref()
            .is_some_and(|s| s.reason == "FailedScheduling")),
        "{:?}",
        evs.iter()
            .map(|e| e.meta().name.clone())
            .collect::<Vec<_>>()
    );
    shutdown.cancel();
}
