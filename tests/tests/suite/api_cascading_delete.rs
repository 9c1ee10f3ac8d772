//! Owner references drive cascading deletion: deleting a Workload garbage-collects the
//! Instances it controls (honouring their finalizers), `PropagationPolicy::Orphan`
//! leaves them with the owner reference removed (even while they are being updated),
//! and an object whose owners never existed is collected.
//!
//! The collector runs in the background, so effects are awaited with deadlines; to
//! show something is *not* collected, the test waits until the collector has handled
//! a later event (a dangling "sentinel" object disappearing), since it handles events
//! in order.

use hypermesh_tests::fixtures;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fixtures::{
    EVENT_TIMEOUT, controlled_by, delete_request, get_opt, instance, wait_gone, workload,
};
use hypermesh_api::v1::{
    DeleteRequest, Instance, InstancePhase, InstanceStatus, OwnerReference, PropagationPolicy,
    Workload,
};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::{InProcessApiServer, wait_for};

const HOLD: &str = "example.com/hold";

fn owned_instance(name: &str, owner: &Workload) -> Instance {
    let mut i = instance("default", name);
    i.metadata
        .as_mut()
        .expect("meta")
        .owner_references
        .push(controlled_by(owner));
    i
}

fn dangling_ref(uid: &str) -> OwnerReference {
    OwnerReference {
        kind: "Workload".into(),
        name: "never-existed".into(),
        uid: uid.into(),
        controller: true,
    }
}

/// Creates an Instance owned by a uid that does not exist and waits until the
/// collector removes it: everything the collector saw before has been handled.
async fn collector_caught_up(api: &Api<Instance>, name: &str) {
    let mut sentinel = instance("default", name);
    sentinel
        .metadata
        .as_mut()
        .expect("meta")
        .owner_references
        .push(dangling_ref("00000000-0000-4000-8000-000000000000"));
    api.create(&sentinel).await.expect("create sentinel");
    wait_gone(api, "default", name).await;
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents_in_the_background() {
    let server = InProcessApiServer::start().await.expect("server");
    let workloads = server.api::<Workload>();
    let instances = server.api::<Instance>();
    let web = workloads
        .create(&workload("default", "web", 3))
        .await
        .expect("create workload");
    for name in ["web-0", "web-1"] {
        instances
            .create(&owned_instance(name, &web))
            .await
            .expect("create instance");
    }
    let mut held = owned_instance("web-2", &web);
    held.metadata
        .as_mut()
        .expect("meta")
        .finalizers
        .push(HOLD.into());
    instances.create(&held).await.expect("create held instance");
    let bystander = instances
        .create(&instance("default", "bystander"))
        .await
        .expect("create unowned instance");

    workloads
        .delete(DeleteRequest {
            propagation_policy: PropagationPolicy::Background as i32,
            ..delete_request("default", "web")
        })
        .await
        .expect("delete workload");
    assert!(get_opt(&workloads, "default", "web").await.is_none());

    wait_gone(&instances, "default", "web-0").await;
    wait_gone(&instances, "default", "web-1").await;
    let marked = wait_for(EVENT_TIMEOUT, || async {
        get_opt(&instances, "default", "web-2")
            .await
            .filter(|i| i.meta().deletion_timestamp.is_some())
    })
    .await
    .expect("the held instance is marked for deletion");
    assert_eq!(marked.meta().finalizers, vec![HOLD.to_string()]);

    collector_caught_up(&instances, "sentinel-1").await;
    let still = get_opt(&instances, "default", "web-2")
        .await
        .expect("the finalizer keeps web-2");
    assert_eq!(still, marked);
    assert_eq!(
        get_opt(&instances, "default", "bystander").await,
        Some(bystander),
        "an unowned instance is untouched"
    );

    let mut release = still;
    release.metadata.as_mut().expect("meta").finalizers.clear();
    instances.update(&release).await.expect("remove finalizer");
    wait_gone(&instances, "default", "web-2").await;
}

#[tokio::test]
async fn orphan_propagation_leaves_dependents_without_the_owner_reference() {
    let server = InProcessApiServer::start().await.expect("server");
    let workloads = server.api::<Workload>();
    let instances = server.api::<Instance>();
    let db = workloads
        .create(&workload("default", "db", 2))
        .await
        .expect("create workload");
    let other_owner = workloads
        .create(&workload("default", "keeper", 1))
        .await
        .expect("create second owner");
    instances
        .create(&owned_instance("db-0", &db))
        .await
        .expect("create db-0");
    // db-1 also names a second (non-controller) owner, which must survive orphaning.
    let mut shared = owned_instance("db-1", &db);
    shared
        .metadata
        .as_mut()
        .expect("meta")
        .owner_references
        .push(OwnerReference {
            controller: false,
            ..controlled_by(&other_owner)
        });
    instances.create(&shared).await.expect("create db-1");

    workloads
        .delete(DeleteRequest {
            propagation_policy: PropagationPolicy::Orphan as i32,
            ..delete_request("default", "db")
        })
        .await
        .expect("delete with orphan");
    assert!(get_opt(&workloads, "default", "db").await.is_none());

    collector_caught_up(&instances, "sentinel-2").await;
    let db0 = get_opt(&instances, "default", "db-0")
        .await
        .expect("db-0 is orphaned, not deleted");
    assert!(db0.meta().owner_references.is_empty(), "{db0:?}");
    assert!(db0.meta().deletion_timestamp.is_none());
    let db1 = get_opt(&instances, "default", "db-1")
        .await
        .expect("db-1 is orphaned, not deleted");
    assert_eq!(
        db1.meta()
            .owner_references
            .iter()
            .map(|r| r.uid.as_str())
            .collect::<Vec<_>>(),
        vec![other_owner.meta().uid.as_str()],
        "only the deleted owner's reference is removed"
    );
}

#[tokio::test]
async fn an_object_whose_owner_never_existed_is_collected() {
    let server = InProcessApiServer::start().await.expect("server");
    let workloads = server.api::<Workload>();
    let instances = server.api::<Instance>();
    let live = workloads
        .create(&workload("default", "live", 1))
        .await
        .expect("create owner");

    // One live owner is enough to keep an object.
    let mut half = instance("default", "half-owned");
    half.metadata.as_mut().expect("meta").owner_references = vec![
        dangling_ref("11111111-1111-4111-8111-111111111111"),
        OwnerReference {
            controller: false,
            ..controlled_by(&live)
        },
    ];
    let half = instances.create(&half).await.expect("create half-owned");

    let mut stray = instance("default", "stray");
    stray
        .metadata
        .as_mut()
        .expect("meta")
        .owner_references
        .push(dangling_ref("22222222-2222-4222-8222-222222222222"));
    instances.create(&stray).await.expect("create stray");
    wait_gone(&instances, "default", "stray").await;

    assert_eq!(
        get_opt(&instances, "default", "half-owned").await,
        Some(half),
        "an object with a live owner stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphan_propagation_holds_while_dependents_are_being_updated() {
    let server = InProcessApiServer::start().await.expect("server");
    let workloads = server.api::<Workload>();
    let instances = server.api::<Instance>();
    // Agents report Instance status all the time; orphaning must not lose that race.
    for round in 0..5 {
        let owner_name = format!("busy-{round}");
        let owner = workloads
            .create(&workload("default", &owner_name, 3))
            .await
            .expect("create workload");
        let names: Vec<String> = (0..3).map(|i| format!("{owner_name}-{i}")).collect();
        for name in &names {
            instances
                .create(&owned_instance(name, &owner))
                .await
                .expect("create instance");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let reporters: Vec<_> = names
            .iter()
            .map(|name| {
                let (instances, stop, name) = (instances.clone(), stop.clone(), name.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        let mut report = instance("default", &name);
                        report.status = Some(InstanceStatus {
                            phase: InstancePhase::Running as i32,
                            message: format!("heartbeat {n}"),
                            ..Default::default()
                        });
                        if instances.update_status(&report).await.is_err() {
                            return;
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        // Let every reporter get going before the delete.
        for name in &names {
            wait_for(EVENT_TIMEOUT, || async {
                get_opt(&instances, "default", name)
                    .await
                    .filter(|i| i.status.as_ref().is_some_and(|s| !s.message.is_empty()))
            })
            .await
            .expect("status reports arrive");
        }

        workloads
            .delete(DeleteRequest {
                propagation_policy: PropagationPolicy::Orphan as i32,
                ..delete_request("default", &owner_name)
            })
            .await
            .expect("delete with orphan");
        stop.store(true, Ordering::Release);
        for reporter in reporters {
            reporter.await.expect("reporter");
        }
        collector_caught_up(&instances, &format!("sentinel-busy-{round}")).await;
        for name in &names {
            let survivor = get_opt(&instances, "default", name).await;
            assert!(
                survivor
                    .as_ref()
                    .is_some_and(|i| i.meta().deletion_timestamp.is_none()
                        && i.meta().owner_references.is_empty()),
                "round {round}: {name} should be orphaned, found {survivor:?}"
            );
        }
    }
}
