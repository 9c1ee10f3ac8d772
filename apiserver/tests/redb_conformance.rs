//! The store conformance suite against the embedded redb backend.

use hypermesh_apiserver::store::redb::{RedbOptions, RedbStore};

async fn fresh_store() -> (RedbStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default())
        .expect("open store");
    (store, dir)
}

hypermesh_apiserver::store_conformance_tests!(fresh_store());
