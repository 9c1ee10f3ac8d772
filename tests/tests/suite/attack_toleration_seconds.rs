//! Attack (issue 13): an Instance tolerating the unreachable taint for `i64::MAX`
//! seconds. When its node went unreachable, the node-lifecycle controller overflowed
//! computing the eviction time and died, and no other Instance on that node was ever
//! evicted.
//!
//! Now the API refuses `tolerationSeconds` beyond a year (naming the field), and one
//! stored by an older version counts as a year: it is reported with an Event, the
//! other Instances are evicted as usual, and the controller stays healthy.

use hypermesh_tests::attack;
use hypermesh_tests::node_lifecycle;
use hypermesh_tests::scheduler;

use std::time::Duration;

use attack::{SURVIVE_TIMEOUT, assert_refused, store_directly};
use hypermesh_api::v1::{Event, Instance, ListRequest, Node, TaintEffect, Toleration};
use hypermesh_api::{Api, Resource};
use hypermesh_controllers::node_lifecycle::{NodeLifecycleConfig, UNREACHABLE_TAINT};
use hypermesh_tests::{InProcessApiServer, wait_for};
use scheduler::{instance, node};
use tokio_util::sync::CancellationToken;

fn bound_to(name: &str, node: &str, tolerations: Vec<Toleration>) -> Instance {
    let mut i = instance(name).build();
    let spec = i.spec.as_mut().expect("spec");
    spec.node_name = node.into();
    spec.tolerations = tolerations;
    i
}

fn forever() -> Toleration {
    Toleration {
        key: UNREACHABLE_TAINT.into(),
        operator: "Exists".into(),
        value: String::new(),
        effect: TaintEffect::NoExecute as i32,
        toleration_seconds: i64::MAX - 1,
    }
}

#[tokio::test]
async fn eviction_outlives_toleration_seconds_at_the_end_of_time() {
    // A node without a heartbeat Lease, an Instance an older version stored with a
    // hostile toleration ("a-" sorts first, so it is looked at first), and one
    // without any toleration.
    let data = tempfile::tempdir().expect("temp dir");
    store_directly(data.path(), node("n1", "4", "8Gi").build()).await;
    store_directly(data.path(), bound_to("a-hostile", "n1", vec![forever()])).await;
    store_directly(data.path(), bound_to("b-victim", "n1", Vec::new())).await;
    let dir = data.path().to_path_buf();
    let server = InProcessApiServer::start_with(move |config| config.data_dir = dir)
        .await
        .expect("apiserver");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(hypermesh_controllers::run_with_node_lifecycle(
        server.channel(),
        hypermesh_controllers::Config {
            identity: "test-controllers".into(),
            ..Default::default()
        },
        NodeLifecycleConfig {
            startup_grace: Duration::from_secs(1),
            eviction_grace: Duration::from_secs(1),
            ..Default::default()
        },
        shutdown,
    ));

    let instances: Api<Instance> = server.api();
    wait_for(SURVIVE_TIMEOUT, || async {
        instances
            .get("default", "b-victim")
            .await
            .err()
            .filter(|s| s.code() == tonic::Code::NotFound)
    })
    .await
    .expect("the untolerating Instance is evicted");
    let nodes: Api<Node> = server.api();
    let n1 = nodes.get("", "n1").await.expect("node");
    assert!(node_lifecycle::tainted(&n1), "{n1:?}");
    instances
        .get("default", "a-hostile")
        .await
        .expect("the Instance tolerating the taint stays");
    let events: Api<Event> = server.api();
    wait_for(SURVIVE_TIMEOUT, || async {
        let (items, _) = events
            .list_all(ListRequest {
                namespace: "default".into(),
                field_selector: "spec.involvedObject.name=a-hostile".into(),
                ..Default::default()
            })
            .await
            .ok()?;
        items
            .iter()
            .any(|e| {
                e.spec
                    .as_ref()
                    .is_some_and(|s| s.reason == "TolerationOutOfRange")
            })
            .then_some(())
    })
    .await
    .expect("the hostile toleration is reported");

    let mut attack = bound_to("c-attack", "", vec![forever()]);
    attack.meta_mut().namespace = "default".into();
    assert_refused(
        instances.create(&attack).await,
        "spec.tolerations[0].tolerationSeconds",
    );
}
