//! The store conformance suite (the same checks the embedded redb store passes)
//! against the etcd store on a real single-member etcd, one per check.

use hypermesh_apiserver::store::etcd::{EtcdOptions, EtcdStore};
use hypermesh_tests::etcd::EtcdCluster;

async fn fresh_store() -> (EtcdStore, EtcdCluster) {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let options = EtcdOptions {
        endpoints: etcd.client_urls(),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(options).await.expect("connect");
    (store, etcd)
}

hypermesh_apiserver::store_conformance_tests!(fresh_store());
