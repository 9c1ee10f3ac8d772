//! The watch cache's indexed triggers: a watch of one node's Instances
//! (`spec.nodeName=<node>`, the agent's) reads and wakes on that node's changes only.
//! It still gets exactly its node's events in order, an Instance bound to the node
//! (ADDED) and one leaving a selection (DELETED); an idle node's watch outlives a
//! window that other nodes' changes rolled over many times, neither expired nor
//! counted as lagging; a watch resumed inside the window replays its node's changes,
//! one resumed before it is refused as any other; and node watches end when the
//! server stops.

use std::time::Duration;

use fixtures::{assert_status, instance, next_change, rv};
use hypermesh_api::Resource;
use hypermesh_api::reason::Reason;
use hypermesh_api::v1::{BindRequest, Instance, Node, WatchEventType, WatchRequest};
use hypermesh_apiserver::watch_cache::WatchCacheOptions;
use hypermesh_tests::node_lifecycle::node;
use hypermesh_tests::{InProcessApiServer, fixtures};
use tonic::Code;

fn node_watch(node: &str, resource_version: u64) -> WatchRequest {
    WatchRequest {
        field_selector: format!("spec.nodeName={node}"),
        resource_version,
        ..Default::default()
    }
}

/// Instance `default/name` on `node`, carrying `kib` KiB in an annotation.
fn big_on_node(name: &str, node: &str, kib: usize) -> Instance {
    let mut i = instance("default", name);
    if let Some(spec) = i.spec.as_mut() {
        spec.node_name = node.into();
    }
    i.metadata
        .as_mut()
        .expect("meta")
        .annotations
        .insert("pad".into(), "x".repeat(kib * 1024));
    i
}

async fn start_with_nodes(options: WatchCacheOptions, nodes: &[&str]) -> InProcessApiServer {
    let server = InProcessApiServer::start_with(move |c| c.watch_cache = options)
        .await
        .expect("server");
    for name in nodes {
        server
            .api::<Node>()
            .create(&node(name))
            .await
            .expect("node");
    }
    server
}

#[tokio::test]
async fn a_node_watch_gets_its_nodes_changes_only_and_outlives_a_rolled_window() {
    let server = start_with_nodes(
        WatchCacheOptions {
            window_bytes: 256 * 1024,
            lag_bytes: 512 * 1024,
            ..Default::default()
        },
        &["busy", "idle"],
    )
    .await;
    let instances = server.api::<Instance>();
    let pending = instances
        .create(&instance("default", "pending"))
        .await
        .expect("an unbound Instance");
    let start = rv(&pending);
    let mut idle = instances
        .watch(node_watch("idle", start))
        .await
        .expect("watch");
    let mut busy = instances
        .watch(node_watch("busy", start))
        .await
        .expect("watch");
    let mut unbound = instances.watch(node_watch("", start)).await.expect("watch");

    // 60 changes of 16 KiB on the busy node: several MiB counted, so the 256 KiB
    // window rolls over many times, and the idle watch would be far past its 512 KiB
    // lag limit were other nodes' changes counted against it.
    for i in 0..60 {
        let name = format!("b{i}");
        instances
            .create(&big_on_node(&name, "busy", 16))
            .await
            .expect("create");
        let (kind, obj) = next_change::<Instance>(&mut busy).await;
        assert_eq!(
            (kind, obj.meta().name.as_str()),
            (WatchEventType::Added, name.as_str())
        );
    }

    let bound = instances
        .bind(BindRequest {
            namespace: "default".into(),
            name: "pending".into(),
            node_name: "idle".into(),
            ..Default::default()
        })
        .await
        .expect("bind");
    let (kind, obj) = next_change::<Instance>(&mut idle).await;
    assert_eq!(
        (kind, obj.meta().name.as_str(), rv(&obj)),
        (WatchEventType::Added, "pending", rv(&bound)),
        "the first event of the idle node's watch is the binding to it"
    );
    let (kind, obj) = next_change::<Instance>(&mut unbound).await;
    assert_eq!(
        (kind, obj.meta().name.as_str()),
        (WatchEventType::Deleted, "pending"),
        "bound, it leaves the unbound selection"
    );

    instances
        .delete(fixtures::delete_request("default", "b0"))
        .await
        .expect("delete");
    // A bound Instance is deleted gracefully (its node confirms): a change either way.
    let (kind, obj) = next_change::<Instance>(&mut busy).await;
    assert_eq!(obj.meta().name, "b0");
    assert!(
        matches!(kind, WatchEventType::Modified | WatchEventType::Deleted),
        "{kind:?}"
    );
    let second = instances
        .create(&big_on_node("i2", "idle", 1))
        .await
        .expect("create");
    let (kind, obj) = next_change::<Instance>(&mut idle).await;
    assert_eq!(
        (kind, obj.meta().name.as_str()),
        (WatchEventType::Added, "i2"),
        "nothing of the busy node's came between"
    );

    // Resumed inside the window: the node's changes since then, and only those.
    let mut resumed = instances
        .watch(node_watch("idle", rv(&bound) - 1))
        .await
        .expect("a version inside the window");
    for expected in [&bound, &second] {
        let (kind, obj) = next_change::<Instance>(&mut resumed).await;
        assert_eq!(
            (kind, obj.meta().name.as_str(), rv(&obj)),
            (
                WatchEventType::Added,
                expected.meta().name.as_str(),
                rv(expected)
            )
        );
    }
    // Resumed before it: refused, as any watch.
    let err = instances
        .watch(node_watch("idle", start))
        .await
        .expect_err("a version before the window");
    assert_status(&err, Code::OutOfRange, Reason::Expired);
}

#[tokio::test]
async fn many_node_watches_each_get_their_own_nodes_instances() {
    let nodes: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let server = start_with_nodes(WatchCacheOptions::default(), &names).await;
    let instances = server.api::<Instance>();
    let marker = instances
        .create(&instance("default", "marker"))
        .await
        .expect("create");
    let mut watches = Vec::new();
    for node in &nodes {
        watches.push(
            instances
                .watch(node_watch(node, rv(&marker)))
                .await
                .expect("watch"),
        );
    }
    // Two Instances per node, interleaved across nodes.
    for round in 0..2 {
        for node in &nodes {
            instances
                .create(&big_on_node(&format!("{node}-{round}"), node, 1))
                .await
                .expect("create");
        }
    }
    for (node, watch) in nodes.iter().zip(&mut watches) {
        for round in 0..2 {
            let (kind, obj) = next_change::<Instance>(watch).await;
            assert_eq!(kind, WatchEventType::Added);
            assert_eq!(obj.meta().name, format!("{node}-{round}"));
        }
    }
}

#[tokio::test]
async fn node_watches_end_when_the_server_stops() {
    let server = start_with_nodes(WatchCacheOptions::default(), &["n1"]).await;
    let instances = server.api::<Instance>();
    let created = instances
        .create(&big_on_node("i1", "n1", 1))
        .await
        .expect("create");
    let mut watch = instances
        .watch(node_watch("n1", rv(&created) - 1))
        .await
        .expect("watch");
    let (kind, _) = next_change::<Instance>(&mut watch).await;
    assert_eq!(kind, WatchEventType::Added);
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the server stops with a node watch open")
        .expect("stop");
    let end = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch ends with the server");
    assert!(
        !matches!(end, Ok(Some(_))),
        "no event after the stop: {end:?}"
    );
}
