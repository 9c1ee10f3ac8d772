//! Fixtures shared by the apiserver integration tests: small valid objects of each
//! kind, error-status assertions and watch-event helpers with deadlines.

use std::collections::BTreeMap;
use std::time::Duration;

use hypermesh_api::reason::{Reason, reason_of};
use hypermesh_api::v1::{
    self, DeleteRequest, Instance, Lease, ListRequest, Namespace, ObjectMeta, OwnerReference,
    WatchEventType, Workload,
};
use hypermesh_api::{Api, Resource};
use tonic::{Code, Status, Streaming};

/// How long a test waits for one watch event or one background effect.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[(k, v)]` as a label map.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Metadata naming `namespace/name`.
pub fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.into(),
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// One valid container.
pub fn container() -> v1::Container {
    v1::Container {
        name: "main".into(),
        image: "hypermesh.local/busybox:latest".into(),
        ..Default::default()
    }
}

/// A valid Workload `namespace/name` selecting `app=<name>`.
pub fn workload(namespace: &str, name: &str, replicas: i32) -> Workload {
    let selector = labels(&[("app", name)]);
    Workload {
        metadata: Some(ObjectMeta {
            labels: selector.clone(),
            ..meta(namespace, name)
        }),
        spec: Some(v1::WorkloadSpec {
            replicas,
            selector: selector.clone(),
            template: Some(v1::InstanceTemplate {
                labels: selector,
                containers: vec![container()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// A valid, unscheduled Instance `namespace/name`.
pub fn instance(namespace: &str, name: &str) -> Instance {
    Instance {
        metadata: Some(meta(namespace, name)),
        spec: Some(v1::InstanceSpec {
            containers: vec![container()],
            ..Default::default()
        }),
        status: None,
    }
}

/// Instance `default/name` bound to `node`, mounting Secret `secret` read-only at
/// `/creds` (volume `creds`).
pub fn instance_using_secret(name: &str, node: &str, secret: &str) -> Instance {
    let mut inst = instance("default", name);
    let spec = inst.spec.as_mut().expect("spec");
    spec.node_name = node.into();
    spec.volumes = vec![v1::Volume {
        name: "creds".into(),
        source: Some(v1::volume::Source::Secret(v1::SecretVolume {
            secret_name: secret.into(),
        })),
    }];
    spec.containers[0].volume_mounts = vec![v1::VolumeMount {
        name: "creds".into(),
        mount_path: "/creds".into(),
        read_only: true,
    }];
    inst
}

/// A Lease `namespace/name` (the cheapest object to write).
pub fn lease(namespace: &str, name: &str) -> Lease {
    Lease {
        metadata: Some(meta(namespace, name)),
        spec: Some(v1::LeaseSpec {
            holder_identity: "test".into(),
            lease_duration_seconds: 15,
            ..Default::default()
        }),
        status: None,
    }
}

/// A Namespace `name`.
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: Some(meta("", name)),
        ..Default::default()
    }
}

/// A controller owner reference to `owner`.
pub fn controlled_by<K: Resource>(owner: &K) -> OwnerReference {
    OwnerReference {
        kind: K::KIND.into(),
        name: owner.meta().name.clone(),
        uid: owner.meta().uid.clone(),
        controller: true,
    }
}

/// A plain Delete of `namespace/name`.
pub fn delete_request(namespace: &str, name: &str) -> DeleteRequest {
    DeleteRequest {
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    }
}

/// A List of everything in `namespace` ("" = every namespace).
pub fn list_request(namespace: &str) -> ListRequest {
    ListRequest {
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// The object's resource_version.
pub fn rv<K: Resource>(obj: &K) -> u64 {
    obj.meta().resource_version
}

/// The names of `objects`, in order.
pub fn names<K: Resource>(objects: &[K]) -> Vec<String> {
    objects.iter().map(|o| o.meta().name.clone()).collect()
}

/// Asserts `err` has `code` and carries `reason`, printing the status otherwise.
pub fn assert_status(err: &Status, code: Code, reason: Reason) {
    assert_eq!(err.code(), code, "unexpected code in {err:?}");
    assert_eq!(reason_of(err), Some(reason), "unexpected reason in {err:?}");
}

/// The result of `Get`, with NOT_FOUND as `None` (any other error fails the test).
pub async fn get_opt<K: Resource>(api: &Api<K>, namespace: &str, name: &str) -> Option<K> {
    match api.get(namespace, name).await {
        Ok(obj) => Some(obj),
        Err(e) if e.code() == Code::NotFound => None,
        Err(e) => panic!("get {namespace}/{name}: {e:?}"),
    }
}

/// Waits until `namespace/name` is gone.
pub async fn wait_gone<K: Resource>(api: &Api<K>, namespace: &str, name: &str) {
    crate::wait_for(EVENT_TIMEOUT, || async {
        get_opt(api, namespace, name).await.is_none().then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{} {namespace}/{name} still exists: {e}", K::KIND));
}

/// The next watch event, failing the test after [`EVENT_TIMEOUT`] or at stream end.
pub async fn next_event<K: Resource>(stream: &mut Streaming<K::WatchEvent>) -> (WatchEventType, K) {
    let message = tokio::time::timeout(EVENT_TIMEOUT, stream.message())
        .await
        .expect("no watch event within the deadline")
        .expect("watch stream failed")
        .expect("watch stream ended");
    K::split_event(message)
}

/// The next event that is not a BOOKMARK.
pub async fn next_change<K: Resource>(
    stream: &mut Streaming<K::WatchEvent>,
) -> (WatchEventType, K) {
    loop {
        let (kind, obj) = next_event::<K>(stream).await;
        if kind != WatchEventType::Bookmark {
            return (kind, obj);
        }
    }
}
