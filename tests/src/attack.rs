//! Staging the time-and-lease attacks of issue 13: hostile objects as an attacker with
//! API access would write them, or as an older version may have left them in the
//! store — written straight into it, so the components must survive them even where
//! validation now refuses them. Also a real `hm-scheduler` process and `/healthz`.

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use crate::bin_path;
use hypermesh_api::Resource;
use hypermesh_api::resource::find_kind;
use hypermesh_api::v1::{Lease, LeaseSpec, ObjectMeta};
use hypermesh_apiserver::object::object_key;
use hypermesh_apiserver::store::Store;
use hypermesh_apiserver::store::redb::{RedbOptions, RedbStore};
use pbjson_types::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tonic::{Code, Status};

/// How long the cluster gets to show it survived.
pub const SURVIVE_TIMEOUT: Duration = Duration::from_secs(45);

/// A `renew_time` 292 billion years from now: one second before the end of `i64`.
pub const END_OF_TIME: i64 = i64::MAX - 1;

/// A Lease held by `holder`, last renewed at `renew_seconds`, for `duration` seconds.
pub fn hostile_lease(
    namespace: &str,
    name: &str,
    holder: &str,
    renew_seconds: i64,
    duration: i32,
) -> Lease {
    let renewed = Timestamp {
        seconds: renew_seconds,
        nanos: 0,
    };
    Lease {
        metadata: Some(ObjectMeta {
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: holder.into(),
            lease_duration_seconds: duration,
            acquire_time: Some(renewed),
            renew_time: Some(renewed),
            lease_transitions: 0,
        }),
        status: None,
    }
}

/// Writes `object` straight into the store in `data_dir` (no server may have it
/// open), bypassing every check: what an older version could have left there.
pub async fn store_directly<K: Resource>(data_dir: &Path, mut object: K) {
    let store = RedbStore::open(&data_dir.join("store.redb"), RedbOptions::default())
        .expect("open the store");
    let meta = object.meta_mut();
    meta.uid = format!("bypass-{}-{}", K::PLURAL, meta.name);
    meta.generation = 1;
    meta.creation_timestamp = Some(hypermesh_api::time::now());
    let info = find_kind(K::KIND).expect("kind");
    let key = object_key(info, &meta.namespace.clone(), &meta.name.clone());
    store
        .create(&key, object.encode_to_vec())
        .await
        .unwrap_or_else(|e| panic!("store {key}: {e}"));
    // Released before a server opens it.
    store.close();
}

/// Asserts `result` is `INVALID_ARGUMENT` naming `field`.
pub fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().contains(field),
                "the error should name {field}: {}",
                status.message()
            );
        }
        Ok(accepted) => panic!("the API accepted the hostile object: {accepted:?}"),
    }
}

/// A real `hm-scheduler` (leader-elected) against `url`, killed when dropped.
pub fn spawn_scheduler(url: &str) -> Child {
    Command::new(bin_path("hm-scheduler"))
        .arg("--server")
        .arg(url)
        .env("HM_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hm-scheduler")
}

/// `None` while `child` runs, else how it ended.
pub fn exited(child: &mut Child) -> Option<ExitStatus> {
    child.try_wait().expect("poll child")
}

/// A free loopback address for a side port (bound, then released).
pub fn free_address() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// `GET path` over plain HTTP/1.0: the status code and body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((code, body))
}
