//! Watch: changes after a resource_version arrive once each, in order, with increasing
//! versions (also under concurrent writers); version 0 replays what exists as ADDED
//! first; selective watches see objects enter (ADDED) and leave (DELETED) the
//! selection; bookmarks report progress; a version older than the kept history fails
//! with OUT_OF_RANGE so clients re-list, and one the server has not reached is refused.

use hypermesh_tests::fixtures;

use fixtures::{assert_status, delete_request, labels, next_change, next_event, rv, workload};
use hypermesh_api::Resource;
use hypermesh_api::reason::Reason;
use hypermesh_api::v1::{WatchEventType, WatchRequest, Workload};
use hypermesh_tests::InProcessApiServer;
use tonic::Code;

fn watch_from(resource_version: u64) -> WatchRequest {
    WatchRequest {
        namespace: "default".into(),
        resource_version,
        ..Default::default()
    }
}

#[tokio::test]
async fn changes_after_a_version_arrive_in_order() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let a = api
        .create(&workload("default", "a", 1))
        .await
        .expect("create a");
    let mut watch = api.watch(watch_from(rv(&a))).await.expect("watch");

    let b = api
        .create(&workload("default", "b", 1))
        .await
        .expect("create b");
    let mut scaled = a.clone();
    scaled.spec.as_mut().expect("spec").replicas = 4;
    let a2 = api.update(&scaled).await.expect("update a");
    let b_gone = api
        .delete(delete_request("default", "b"))
        .await
        .expect("delete b");
    let a_gone = api
        .delete(delete_request("default", "a"))
        .await
        .expect("delete a");

    let expected = [
        (WatchEventType::Added, "b", rv(&b)),
        (WatchEventType::Modified, "a", rv(&a2)),
        (WatchEventType::Deleted, "b", rv(&b_gone)),
        (WatchEventType::Deleted, "a", rv(&a_gone)),
    ];
    let mut last = rv(&a);
    for (kind, name, version) in expected {
        let (got_kind, obj) = next_change::<Workload>(&mut watch).await;
        assert_eq!((got_kind, obj.meta().name.as_str()), (kind, name));
        assert_eq!(rv(&obj), version, "{kind:?} {name}");
        assert!(rv(&obj) > last, "versions increase");
        last = rv(&obj);
    }
}

#[tokio::test]
async fn a_watch_from_zero_replays_existing_objects_first() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let x = api
        .create(&workload("default", "x", 1))
        .await
        .expect("create x");
    let y = api
        .create(&workload("default", "y", 1))
        .await
        .expect("create y");
    let mut watch = api.watch(watch_from(0)).await.expect("watch");
    for existing in [&x, &y] {
        let (kind, obj) = next_change::<Workload>(&mut watch).await;
        assert_eq!(kind, WatchEventType::Added);
        assert_eq!(&obj, existing);
    }
    let z = api
        .create(&workload("default", "z", 1))
        .await
        .expect("create z");
    let (kind, obj) = next_change::<Workload>(&mut watch).await;
    assert_eq!((kind, obj), (WatchEventType::Added, z));
}

#[tokio::test]
async fn a_selective_watch_sees_objects_enter_and_leave() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let mut obj = workload("default", "web", 1);
    obj.metadata
        .as_mut()
        .expect("meta")
        .labels
        .insert("tier".into(), "back".into());
    let created = api.create(&obj).await.expect("create");
    let mut watch = api
        .watch(WatchRequest {
            label_selector: "tier=front".into(),
            ..watch_from(rv(&created))
        })
        .await
        .expect("watch");

    let relabel = |from: &Workload, tier: &str| {
        let mut next = from.clone();
        next.metadata
            .as_mut()
            .expect("meta")
            .labels
            .insert("tier".into(), tier.into());
        next
    };
    let front = api
        .update(&relabel(&created, "front"))
        .await
        .expect("start matching");
    let back = api
        .update(&relabel(&front, "back"))
        .await
        .expect("stop matching");
    // A change while outside the selection is not seen.
    api.update(&relabel(&back, "middle"))
        .await
        .expect("change while not matching");
    let mut marker = workload("default", "marker", 1);
    marker.metadata.as_mut().expect("meta").labels =
        labels(&[("app", "marker"), ("tier", "front")]);
    let marker = api.create(&marker).await.expect("create marker");

    let (kind, seen) = next_change::<Workload>(&mut watch).await;
    assert_eq!((kind, &seen), (WatchEventType::Added, &front));
    let (kind, seen) = next_change::<Workload>(&mut watch).await;
    assert_eq!(kind, WatchEventType::Deleted);
    assert_eq!(
        seen, back,
        "DELETED carries the state that no longer matches"
    );
    let (kind, seen) = next_change::<Workload>(&mut watch).await;
    assert_eq!((kind, seen), (WatchEventType::Added, marker));
}

#[tokio::test]
async fn bookmarks_report_progress_past_the_last_write() {
    let server = InProcessApiServer::start_with(|config| {
        config.bookmark_interval = std::time::Duration::from_millis(100);
    })
    .await
    .expect("server");
    let api = server.api::<Workload>();
    let first = api
        .create(&workload("default", "a", 1))
        .await
        .expect("create");
    let mut with_bookmarks = api
        .watch(WatchRequest {
            allow_bookmarks: true,
            ..watch_from(rv(&first))
        })
        .await
        .expect("watch with bookmarks");
    let mut without = api
        .watch(watch_from(rv(&first)))
        .await
        .expect("watch without bookmarks");

    let mut last_write = 0;
    for name in ["b", "c", "d"] {
        last_write = rv(&api
            .create(&workload("default", name, 1))
            .await
            .expect("create"));
    }
    // Writes to other kinds move the store revision too; bookmarks cover them.
    let lease = server
        .api::<hypermesh_api::v1::Lease>()
        .create(&fixtures::lease("default", "other-kind"))
        .await
        .expect("create lease");
    assert!(rv(&lease) > last_write);

    let mut changes = Vec::new();
    let bookmark = loop {
        let (kind, obj) = next_event::<Workload>(&mut with_bookmarks).await;
        if kind == WatchEventType::Bookmark {
            if rv(&obj) >= rv(&lease) {
                break obj;
            }
            continue;
        }
        changes.push(obj.meta().name.clone());
    };
    assert_eq!(
        changes,
        ["b", "c", "d"],
        "every change precedes the bookmark"
    );
    assert!(
        bookmark.meta().name.is_empty(),
        "a bookmark carries only a version"
    );
    // Bookmarks keep coming, never going backwards.
    let (kind, next) = next_event::<Workload>(&mut with_bookmarks).await;
    assert_eq!(kind, WatchEventType::Bookmark);
    assert!(rv(&next) >= rv(&bookmark));

    // A watch that did not ask gets the changes only.
    for name in ["b", "c", "d"] {
        let (kind, obj) = next_event::<Workload>(&mut without).await;
        assert_eq!(
            (kind, obj.meta().name.as_str()),
            (WatchEventType::Added, name)
        );
    }
    let e = api
        .create(&workload("default", "e", 1))
        .await
        .expect("create e");
    let (kind, obj) = next_event::<Workload>(&mut without).await;
    assert_eq!((kind, obj), (WatchEventType::Added, e));
}

#[tokio::test]
async fn a_version_older_than_the_kept_history_is_out_of_range() {
    let server = InProcessApiServer::start_with(|config| config.store.set_retain_revisions(10))
        .await
        .expect("server");
    let api = server.api::<Workload>();
    let mut latest = 0;
    for i in 0..40 {
        latest = rv(&api
            .create(&workload("default", &format!("w-{i:02}"), 1))
            .await
            .expect("create"));
    }
    let err = match api.watch(watch_from(1)).await {
        Err(e) => e,
        // Also acceptable: the stream opens and fails at once.
        Ok(mut stream) => tokio::time::timeout(fixtures::EVENT_TIMEOUT, stream.message())
            .await
            .expect("an answer in time")
            .expect_err("watching compacted history"),
    };
    assert_status(&err, Code::OutOfRange, Reason::Expired);

    // A recent version still works.
    let mut watch = api.watch(watch_from(latest)).await.expect("recent watch");
    let next = api
        .create(&workload("default", "after", 1))
        .await
        .expect("create");
    let (kind, obj) = next_change::<Workload>(&mut watch).await;
    assert_eq!((kind, obj), (WatchEventType::Added, next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_arrive_once_each_in_revision_order() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<hypermesh_api::v1::Lease>();
    let start = api
        .create(&fixtures::lease("default", "start"))
        .await
        .expect("create");
    let mut watch = api.watch(watch_from(rv(&start))).await.expect("watch");

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..50 {
                    let created = api
                        .create(&fixtures::lease("default", &format!("w{w}-{n}")))
                        .await
                        .expect("create");
                    acked.push((rv(&created), created.meta().name.clone()));
                }
                acked
            })
        })
        .collect();
    let mut expected = Vec::new();
    for writer in writers {
        expected.extend(writer.await.expect("writer"));
    }
    expected.sort();

    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let (kind, obj) = next_change::<hypermesh_api::v1::Lease>(&mut watch).await;
        assert_eq!(kind, WatchEventType::Added, "{obj:?}");
        seen.push((rv(&obj), obj.meta().name.clone()));
    }
    assert_eq!(seen, expected, "each write once, in revision order");
}

#[tokio::test]
async fn a_version_from_the_future_is_refused_not_silently_skipped() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let a = api
        .create(&workload("default", "a", 1))
        .await
        .expect("create");
    // A version the server has not reached (List answers INVALID_ARGUMENT for one).
    let future = rv(&a) + 3;
    let outcome = match api.watch(watch_from(future)).await {
        Err(e) => Err(e),
        Ok(mut stream) => {
            // Writes that move the store past `future`: changes at versions the
            // client never saw would vanish if the watch just started there.
            for name in ["b", "c", "d", "e", "f"] {
                api.create(&workload("default", name, 1))
                    .await
                    .expect("create");
            }
            tokio::time::timeout(fixtures::EVENT_TIMEOUT, stream.message())
                .await
                .expect("an answer in time")
        }
    };
    match outcome {
        Err(e) => assert_eq!(e.code(), Code::InvalidArgument, "{e:?}"),
        Ok(event) => panic!(
            "a watch from future version {future} (server at {}) was accepted and began with {event:?}",
            rv(&a)
        ),
    }
}
