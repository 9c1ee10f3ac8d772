//! Shared by the high-availability tests: `hm-apiserver` processes with TLS on one
//! etcd (sharing a key file, hence the cluster CA), and an admin target listing
//! several of them, and who leads the controllers.

use std::path::Path;

use crate::ApiServerProcess;
use crate::etcd::EtcdCluster;
use hypermesh_api::Api;
use hypermesh_api::client::{Target, join_urls};
use hypermesh_api::v1::Lease;

/// Starts an apiserver with TLS on `etcd`, sealing with `key_file`, plus `extra` args.
pub async fn apiserver_on(etcd: &EtcdCluster, key_file: &Path, extra: &[&str]) -> ApiServerProcess {
    let store = etcd.store_url();
    let key = key_file.to_str().expect("utf-8 path");
    let mut args = vec!["--store", store.as_str(), "--encryption-key-file", key];
    args.extend_from_slice(extra);
    ApiServerProcess::start_tls_with_args(&args)
        .await
        .expect("hm-apiserver on etcd")
}

/// The admin identity of `servers[0]` (valid on all: one CA), listing every server.
pub fn admin_on_all(servers: &[&ApiServerProcess]) -> Target {
    let mut target = servers[0]
        .config_target(hypermesh_apiserver::server::ADMIN_CONFIG)
        .expect("admin.config");
    let urls: Vec<&str> = servers.iter().map(|s| s.url()).collect();
    target.url = join_urls(&urls);
    target
}

/// The pid in the holder identity (`HOST_PID_NONCE`) of the controllers' Lease.
pub async fn controllers_leader_pid(leases: &Api<Lease>) -> Option<u32> {
    let lease = leases
        .get(
            hypermesh_controllers::LEASE_NAMESPACE,
            hypermesh_controllers::LEASE_NAME,
        )
        .await
        .ok()?;
    let holder = lease.spec?.holder_identity;
    holder.rsplit('_').nth(1)?.parse().ok()
}
