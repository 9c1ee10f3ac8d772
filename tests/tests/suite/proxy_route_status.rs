//! Story: the Route controller gives a Route its stable global address (the same pure
//! function the proxies resolve it with) and lists the Instances its selector matches
//! as endpoints, ready or not, following their readiness as it changes.

use std::time::Duration;

use hypermesh_api::v1::{
    BindRequest, Condition, Instance, InstancePhase, InstanceSpec, InstanceStatus, Node,
    NodeStatus, ObjectMeta, Route, RoutePort, RouteSpec,
};
use hypermesh_tests::{InProcessApiServer, wait_for};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

fn ready(value: bool) -> Vec<Condition> {
    vec![Condition {
        r#type: "Ready".into(),
        status: if value { "True" } else { "False" }.into(),
        reason: "Test".into(),
        ..Default::default()
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_get_their_address_and_endpoints() {
    let server = InProcessApiServer::start().await.expect("apiserver");
    let shutdown = CancellationToken::new();
    let (controller, ctx) = hypermesh_controllers::routes::controller(&server.channel());
    tokio::spawn(controller.run(
        hypermesh_controllers::routes::reconcile,
        ctx,
        shutdown.clone(),
    ));

    let nodes = server.api::<Node>();
    let node = nodes
        .create(&Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("node");
    let mut node = node;
    node.status = Some(NodeStatus {
        conditions: ready(true),
        ..Default::default()
    });
    nodes.update_status(&node).await.expect("node ready");

    let instances = server.api::<Instance>();
    for (name, is_ready) in [("web-1", true), ("web-2", false)] {
        instances
            .create(&Instance {
                metadata: Some(ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    labels: [("app".to_string(), "web".to_string())]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                spec: Some(InstanceSpec {
                    containers: vec![hypermesh_api::v1::Container {
                        name: "main".into(),
                        image: "busybox".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: None,
            })
            .await
            .expect("instance");
        instances
            .bind(BindRequest {
                namespace: "default".into(),
                name: name.into(),
                node_name: "n1".into(),
                ..Default::default()
            })
            .await
            .expect("bind");
        let mut i = instances.get("default", name).await.expect("get");
        i.status = Some(InstanceStatus {
            phase: InstancePhase::Running as i32,
            address: hypermesh_api::address::global_address("n1-id", &format!("instance/{name}"))
                .to_string(),
            conditions: ready(is_ready),
            ..Default::default()
        });
        instances.update_status(&i).await.expect("status");
    }

    let routes = server.api::<Route>();
    routes
        .create(&Route {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(RouteSpec {
                selector: [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
                ports: vec![RoutePort {
                    name: "http".into(),
                    port: 80,
                    target_port: 8080,
                    protocol: hypermesh_api::v1::Protocol::Tcp as i32,
                }],
            }),
            status: None,
        })
        .await
        .expect("route");

    let expected = hypermesh_api::address::route_address("default", "web").to_string();
    let route = wait_for(TIMEOUT, || async {
        let r = routes.get("default", "web").await.ok()?;
        let s = r.status.clone()?;
        (s.address == expected && s.endpoints.len() == 2).then_some(r)
    })
    .await
    .expect("route status with address and two endpoints");
    let endpoints = route.status.expect("status").endpoints;
    assert_eq!(endpoints[0].instance_name, "web-1");
    assert!(endpoints[0].ready);
    assert!(
        !endpoints[1].ready,
        "a not-ready Instance is listed but not ready"
    );
    assert_eq!(endpoints[0].node_name, "n1");

    // The node goes NotReady: no endpoint is ready any more.
    let mut node = nodes.get("", "n1").await.expect("node");
    node.status = Some(NodeStatus {
        conditions: ready(false),
        ..Default::default()
    });
    nodes.update_status(&node).await.expect("node not ready");
    wait_for(TIMEOUT, || async {
        let r = routes.get("default", "web").await.ok()?;
        r.status?.endpoints.iter().all(|e| !e.ready).then_some(())
    })
    .await
    .expect("endpoints of a NotReady node leave the rotation");
    shutdown.cancel();
}
