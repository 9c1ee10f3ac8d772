//! The workload controller keeps `replicas` Instances: it stamps them from the
//! template (labels, template hash, owner reference, name, spec), replaces one that
//! is deleted, and scales up and down, deleting unstarted Instances before running
//! ones.

use hypermesh_tests::workload;

use hypermesh_api::Resource;
use hypermesh_api::v1::{DeleteRequest, InstancePhase};
use workload::{
    Cluster, HASH_LABEL, has_all, hash, instances_of, make_available, set_replicas, set_status,
    status, wait_event_reasons, wait_instances, wait_workload, workload,
};

#[tokio::test]
async fn workload_keeps_its_replicas_and_scales() {
    let cluster = Cluster::start().await;
    let (workloads, instances) = (cluster.workloads(), cluster.instances());
    let web = workloads
        .create(&workload("web", 3, "registry.local/web:1"))
        .await
        .expect("create workload");

    // Three Instances stamped from the template.
    let created = wait_instances(&instances, "web", 3, |_| true).await;
    let template_hash = hash(&created[0]).to_string();
    assert_eq!(template_hash.len(), 10, "{template_hash:?}");
    for i in &created {
        let meta = i.meta();
        assert_eq!(meta.labels["app"], "web");
        assert_eq!(meta.labels[HASH_LABEL], template_hash);
        let owner = &meta.owner_references[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("Workload", "web", web.meta().uid.as_str(), true)
        );
        let prefix = format!("web-{}-", &template_hash[..5]);
        let suffix = meta.name.strip_prefix(&prefix).expect("name prefix");
        assert_eq!(suffix.len(), 5, "{}", meta.name);
        assert!(
            suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{}",
            meta.name
        );
        let spec = i.spec.as_ref().expect("spec");
        assert_eq!(spec.containers[0].image, "registry.local/web:1");
        assert!(spec.node_name.is_empty());
    }
    let history = wait_workload(&workloads, "web", "recorded revision 1", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.history.len() == 1 && s.replicas == 3)
    })
    .await
    .status
    .expect("status")
    .history;
    assert_eq!(history[0].template_hash, template_hash);

    // A deleted Instance is replaced by a new one.
    let victim = created[0].meta().name.clone();
    instances
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: victim.clone(),
            ..Default::default()
        })
        .await
        .expect("delete instance");
    let after = wait_instances(&instances, "web", 3, |i| i.meta().name != victim).await;
    assert_eq!(
        after
            .iter()
            .filter(|i| created.iter().any(|c| c.meta().name == i.meta().name))
            .count(),
        2,
        "the two others are kept"
    );

    // Scale up to 5.
    set_replicas(&workloads, "web", 5).await;
    let five = wait_instances(&instances, "web", 5, |_| true).await;

    // Two run and one is scheduled (ready, not running yet), the rest never started:
    // scaling down to 2 deletes the unstarted ones first, then the scheduled one.
    for i in &five[..2] {
        assert!(make_available(&instances, i).await);
    }
    assert!(set_status(&instances, &five[2], status(InstancePhase::Scheduled, true)).await);
    // Once the status counts them, the controller has seen these changes.
    wait_workload(&workloads, "web", "counted 3 ready and 2 available", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.ready_replicas == 3 && s.available_replicas == 2)
    })
    .await;
    set_replicas(&workloads, "web", 2).await;
    let kept = wait_instances(&instances, "web", 2, |_| true).await;
    let kept_names: Vec<&str> = kept.iter().map(|i| i.meta().name.as_str()).collect();
    let running: Vec<&str> = five[..2].iter().map(|i| i.meta().name.as_str()).collect();
    assert_eq!(kept_names, running, "the running ones stay");
    wait_workload(&workloads, "web", "reported 2 available", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.replicas == 2 && s.available_replicas == 2)
    })
    .await;

    // Scale to zero: nothing left.
    set_replicas(&workloads, "web", 0).await;
    wait_instances(&instances, "web", 0, |_| true).await;

    wait_event_reasons(&cluster.events(), "web", |seen| {
        has_all(seen, &["ScalingUp", "ScalingDown"])
    })
    .await;
    assert!(instances_of(&instances, "web").await.is_empty());
}
