//! The store conformance suite: one set of checks every [`Store`] implementation must
//! pass. A backend's tests instantiate it with `store_conformance_tests!(factory)`,
//! where `factory` is an async expression that yields a fresh, empty store.

use std::time::Duration;

use super::{Store, StoreError, WatchItem, WatchStream};

const WAIT: Duration = Duration::from_secs(10);

async fn next_item(stream: &mut WatchStream) -> WatchItem {
    match tokio::time::timeout(WAIT, stream.recv()).await {
        Ok(Some(Ok(item))) => item,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch item within {WAIT:?}"),
    }
}

async fn next_event(stream: &mut WatchStream) -> super::StoreEvent {
    loop {
        if let WatchItem::Event(e) = next_item(stream).await {
            return (*e).clone();
        }
    }
}

/// Create, get, compare-and-swap update and delete, with every error case.
pub async fn crud(store: &dyn Store) {
    let r1 = store
        .create("/things/a", b"one".to_vec())
        .await
        .expect("create");
    let got = store.get("/things/a").await.expect("get").expect("present");
    assert_eq!(
        (got.value.as_slice(), got.create_revision, got.mod_revision),
        (&b"one"[..], r1, r1)
    );
    assert_eq!(
        store.create("/things/a", b"again".to_vec()).await,
        Err(StoreError::AlreadyExists("/things/a".into()))
    );

    let r2 = store
        .update("/things/a", b"two".to_vec(), r1)
        .await
        .expect("update");
    assert!(r2 > r1, "revisions grow");
    let got = store.get("/things/a").await.expect("get").expect("present");
    assert_eq!(
        (got.value.as_slice(), got.create_revision, got.mod_revision),
        (&b"two"[..], r1, r2)
    );

    let stale = store.update("/things/a", b"three".to_vec(), r1).await;
    assert_eq!(
        stale,
        Err(StoreError::Conflict {
            key: "/things/a".into(),
            expected: r1,
            current: r2
        })
    );
    assert!(matches!(
        store.delete("/things/a", Some(r1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store
            .get("/things/a")
            .await
            .expect("get")
            .map(|kv| kv.value),
        Some(b"two".to_vec()),
        "failed writes change nothing"
    );

    let (r3, last) = store.delete("/things/a", Some(r2)).await.expect("delete");
    assert!(r3 > r2);
    assert_eq!(last.value, b"two");
    assert_eq!(store.get("/things/a").await.expect("get"), None);
    assert_eq!(
        store.update("/things/a", vec![], r3).await,
        Err(StoreError::NotFound("/things/a".into()))
    );
    assert_eq!(
        store.delete("/things/a", None).await.map(|_| ()),
        Err(StoreError::NotFound("/things/a".into()))
    );
    assert_eq!(store.current_revision(), r3);

    // A re-created key starts a new life.
    let r4 = store
        .create("/things/a", b"new".to_vec())
        .await
        .expect("re-create");
    let got = store.get("/things/a").await.expect("get").expect("present");
    assert_eq!((got.create_revision, got.mod_revision), (r4, r4));
}

/// Concurrent writers: distinct revisions for every write, one CAS winner per version.
pub async fn concurrent_writes(store: &dyn Store) {
    let creates = (0..64).map(|i| store.create_owned(format!("/c/{i:03}")));
    let mut revisions: Vec<u64> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|r| r.expect("create"))
        .collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 64, "every write gets its own revision");

    let base = store
        .get("/c/000")
        .await
        .expect("get")
        .expect("present")
        .mod_revision;
    let updates = (0..16).map(|i| store.update("/c/000", vec![i], base));
    let results = futures::future::join_all(updates).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "exactly one compare-and-swap wins: {results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(StoreError::Conflict { .. })))
    );
}

/// A watch from the revision a list just returned always starts, even while writes
/// are being committed and broadcast (list-then-watch, as every client does).
pub async fn watch_from_a_fresh_list(store: &dyn Store) {
    let writing = async {
        for i in 0..300 {
            store
                .create_owned(format!("/w/{i:04}"))
                .await
                .expect("create");
        }
    };
    let watching = async {
        for _ in 0..300 {
            let listed = store.list("/w/", None, 0, 0).await.expect("list");
            let watch = store.watch("/w/", listed.revision, None).await;
            assert!(
                watch.is_ok(),
                "watch from the list's revision {}: {:?}",
                listed.revision,
                watch.err()
            );
            tokio::task::yield_now().await;
        }
    };
    tokio::join!(writing, watching);
}

/// Prefix listing, pagination and a consistent snapshot across pages.
pub async fn list_pages_snapshot(store: &dyn Store) {
    for i in 1..=5 {
        store
            .create(&format!("/a/{i}"), vec![i])
            .await
            .expect("create");
    }
    store.create("/b/1", vec![9]).await.expect("create");
    store.create("/a0", vec![9]).await.expect("create");

    let all = store.list("/a/", None, 0, 0).await.expect("list");
    assert_eq!(
        all.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["/a/1", "/a/2", "/a/3", "/a/4", "/a/5"]
    );
    assert!(!all.more);
    assert_eq!(all.revision, store.current_revision());

    let page1 = store.list("/a/", None, 2, 0).await.expect("page 1");
    assert_eq!(page1.items.len(), 2);
    assert!(page1.more);
    let snapshot = page1.revision;

    // Changes after the first page must not show in later pages.
    let three = store.get("/a/3").await.expect("get").expect("present");
    store
        .update("/a/3", vec![33], three.mod_revision)
        .await
        .expect("update");
    store.delete("/a/4", None).await.expect("delete");
    store.create("/a/6", vec![6]).await.expect("create");
    store.delete("/a/1", None).await.expect("delete");

    let last_key = page1.items.last().map(|kv| kv.key.clone()).expect("item");
    let page2 = store
        .list("/a/", Some(&last_key), 2, snapshot)
        .await
        .expect("page 2");
    assert_eq!(
        page2
            .items
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone()))
            .collect::<Vec<_>>(),
        [("/a/3", vec![3]), ("/a/4", vec![4])]
    );
    assert!(page2.more);
    let last_key = page2.items.last().map(|kv| kv.key.clone()).expect("item");
    let page3 = store
        .list("/a/", Some(&last_key), 2, snapshot)
        .await
        .expect("page 3");
    assert_eq!(
        page3
            .items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["/a/5"]
    );
    assert!(!page3.more);

    let now = store.list("/a/", None, 0, 0).await.expect("list now");
    assert_eq!(
        now.items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        ["/a/2", "/a/3", "/a/5", "/a/6"]
    );
    assert!(matches!(
        store
            .list("/a/", None, 0, store.current_revision() + 10)
            .await,
        Err(StoreError::FutureRevision { .. })
    ));
}

/// Watch replays history after a revision, in order, then streams live changes
/// under its prefix only.
pub async fn watch_from_revision(store: &dyn Store) {
    let r1 = store.create("/w/a", b"1".to_vec()).await.expect("create");
    let r2 = store
        .update("/w/a", b"2".to_vec(), r1)
        .await
        .expect("update");
    store
        .create("/other/x", b"x".to_vec())
        .await
        .expect("create");
    let (r3, _) = store.delete("/w/a", None).await.expect("delete");

    let mut watch = store.watch("/w/", r1, None).await.expect("watch");
    let e = next_event(&mut watch).await;
    assert_eq!(
        (
            e.revision,
            e.current.as_ref().map(|c| c.value.clone()),
            e.previous.as_ref().map(|p| p.value.clone())
        ),
        (r2, Some(b"2".to_vec()), Some(b"1".to_vec()))
    );
    let e = next_event(&mut watch).await;
    assert_eq!(
        (e.revision, e.current.is_none(), e.previous.map(|p| p.value)),
        (r3, true, Some(b"2".to_vec()))
    );

    let r5 = store
        .create("/w/b", b"live".to_vec())
        .await
        .expect("create");
    store
        .create("/other/y", b"y".to_vec())
        .await
        .expect("create");
    let r7 = store
        .create("/w/c", b"live2".to_vec())
        .await
        .expect("create");
    let e = next_event(&mut watch).await;
    assert_eq!(
        (e.revision, e.key.as_str(), e.previous.is_none()),
        (r5, "/w/b", true)
    );
    let e = next_event(&mut watch).await;
    assert_eq!((e.revision, e.key.as_str()), (r7, "/w/c"));

    // Many writers at once: the watcher sees every revision once, in order.
    let writes = (0..200).map(|i| store.create_owned(format!("/w/many/{i:03}")));
    futures::future::join_all(writes).await;
    let mut last = r7;
    for _ in 0..200 {
        let e = next_event(&mut watch).await;
        assert!(e.revision > last, "events in revision order");
        last = e.revision;
    }
}

/// Progress items promise that everything up to their revision was delivered.
pub async fn watch_progress(store: &dyn Store) {
    store.create("/p/a", vec![1]).await.expect("create");
    let mut watch = store
        .watch("/p/", 0, Some(Duration::from_millis(50)))
        .await
        .expect("watch");
    store.create("/q/unwatched", vec![1]).await.expect("create");
    let target = store.current_revision();
    let mut saw_event = false;
    loop {
        match next_item(&mut watch).await {
            WatchItem::Event(e) => {
                assert_eq!(e.key, "/p/a");
                saw_event = true;
            }
            WatchItem::Progress(rev) if rev >= target => break,
            WatchItem::Progress(_) => {}
        }
    }
    assert!(saw_event, "the history event comes before progress past it");
}

/// Compaction drops history (watch and past listings fail with `Compacted`) but
/// never current values.
pub async fn compaction(store: &dyn Store) {
    let r1 = store.create("/k/a", vec![1]).await.expect("create");
    let r2 = store.update("/k/a", vec![2], r1).await.expect("update");
    store.create("/k/b", vec![3]).await.expect("create");
    store.compact(r2).await.expect("compact");
    assert_eq!(store.compacted_revision(), r2);
    assert!(matches!(
        store.watch("/k/", r1, None).await.map(|_| ()),
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        store.list("/k/", None, 1, r1).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut watch = store
        .watch("/k/", r2, None)
        .await
        .expect("watch at the compacted revision");
    assert_eq!(next_event(&mut watch).await.key, "/k/b");
    let now = store.list("/k/", None, 0, 0).await.expect("list");
    assert_eq!(
        now.items
            .iter()
            .map(|kv| kv.value.clone())
            .collect::<Vec<_>>(),
        [vec![2], vec![3]]
    );
}

impl dyn Store {
    async fn create_owned(&self, key: String) -> Result<u64, StoreError> {
        self.create(&key, key.clone().into_bytes()).await
    }
}

/// Expands to one `#[tokio::test]` per conformance check; `$factory` is an async
/// expression yielding `(store, guard)` where `guard` keeps the store's resources alive.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@each $factory; crud, concurrent_writes, list_pages_snapshot, watch_from_revision, watch_from_a_fresh_list, watch_progress, compaction);
    };
    (@each $factory:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $factory.await;
                $crate::store::conformance::$check(&store).await;
            }
        )*
    };
}
