//! The Workload status as the controller reports it: observed generation, replica
//! counts (ready vs available vs updated), the Available and Progressing conditions,
//! Events, and the revision history (numbered, bounded by revisionHistoryLimit, and
//! renumbered when an old template comes back, which is how undo works).

use hypermesh_tests::workload;

use hypermesh_api::Resource;
use hypermesh_api::v1::InstancePhase;
use workload::{
    Cluster, condition, events_about, hash, image_of, make_available, rolled_out, set_image,
    set_status, status, wait_event_reasons, wait_instances, wait_workload, workload,
};

#[tokio::test]
async fn status_counts_conditions_events_and_history() {
    let cluster = Cluster::start().await;
    let (workloads, instances) = (cluster.workloads(), cluster.instances());
    let mut web = workload("web", 3, "web:1");
    web.spec.as_mut().expect("spec").revision_history_limit = 1;
    workloads.create(&web).await.expect("create workload");

    // Created but not started: all updated, none ready or available.
    let w = wait_workload(&workloads, "web", "reported 3 replicas", |w| {
        w.status.as_ref().is_some_and(|s| s.replicas == 3)
    })
    .await;
    let s = w.status.clone().expect("status");
    assert_eq!(s.observed_generation, w.meta().generation);
    assert_eq!(
        (s.updated_replicas, s.ready_replicas, s.available_replicas),
        (3, 0, 0)
    );
    let available = condition(&w, "Available").expect("Available");
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", "MinimumReplicasUnavailable")
    );
    assert!(available.last_transition_time.is_some());
    let progressing = condition(&w, "Progressing").expect("Progressing");
    assert_eq!(progressing.reason, "RolloutInProgress");
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].revision, 1);
    assert_eq!(image_of_revision(&s.history[0]), "web:1");

    // One ready but not running yet (ready, not available); two running and ready.
    let v1 = wait_instances(&instances, "web", 3, |_| true).await;
    assert!(set_status(&instances, &v1[0], status(InstancePhase::Scheduled, true)).await);
    for i in &v1[1..] {
        assert!(make_available(&instances, i).await);
    }
    let w = wait_workload(&workloads, "web", "counted ready and available", |w| {
        w.status
            .as_ref()
            .is_some_and(|s| s.ready_replicas == 3 && s.available_replicas == 2)
    })
    .await;
    // 25% of 3 rounds down to 0 unavailable allowed: not Available yet.
    assert_eq!(
        condition(&w, "Available").expect("Available").status,
        "False"
    );

    assert!(make_available(&instances, &v1[0]).await);
    let w = wait_workload(&workloads, "web", "rolled out", rolled_out).await;
    assert_eq!(
        condition(&w, "Available").expect("Available").status,
        "True"
    );
    let progressing = condition(&w, "Progressing").expect("Progressing");
    assert_eq!(progressing.reason, "NewRevisionAvailable");
    let seen = wait_event_reasons(&cluster.events(), "web", |seen| seen.len() >= 2).await;
    assert_eq!(seen, ["ScalingUp", "RolloutComplete"]);
    let event = &events_about(&cluster.events(), "web").await[0];
    let involved = event
        .spec
        .as_ref()
        .and_then(|s| s.involved_object.clone())
        .expect("involved");
    assert_eq!(
        (involved.kind.as_str(), involved.uid.as_str()),
        ("Workload", w.meta().uid.as_str())
    );

    // Two template changes: revisions 2 and 3; with revisionHistoryLimit 1 only the
    // current and one older revision are kept.
    let agent = workload::Agent::start(instances.clone());
    for image in ["web:2", "web:3"] {
        set_image(&workloads, "web", image).await;
        wait_workload(&workloads, "web", &format!("rolled out {image}"), |w| {
            rolled_out(w)
                && w.status
                    .as_ref()
                    .and_then(|s| s.history.last())
                    .map(image_of_revision)
                    .as_deref()
                    == Some(image)
        })
        .await;
    }
    let w = workloads.get("default", "web").await.expect("get");
    let history = w.status.clone().expect("status").history;
    let revisions: Vec<(i64, String)> = history
        .iter()
        .map(|r| (r.revision, image_of_revision(r)))
        .collect();
    assert_eq!(
        revisions,
        [(2, "web:2".to_string()), (3, "web:3".to_string())]
    );

    // Undo: putting revision 2's template back makes it revision 4, and the Instances
    // return to its template hash.
    let mut back = w.clone();
    back.spec.as_mut().expect("spec").template = history[0].template.clone();
    workloads.update(&back).await.expect("undo");
    let w = wait_workload(&workloads, "web", "rolled back", |w| {
        rolled_out(w)
            && w.status
                .as_ref()
                .and_then(|s| s.history.last())
                .map(|r| r.revision)
                == Some(4)
    })
    .await;
    assert_eq!(image_of(&w), "web:2");
    let history = w.status.expect("status").history;
    let revisions: Vec<(i64, String)> = history
        .iter()
        .map(|r| (r.revision, image_of_revision(r)))
        .collect();
    assert_eq!(
        revisions,
        [(3, "web:3".to_string()), (4, "web:2".to_string())]
    );
    let back_hash = history[1].template_hash.clone();
    wait_instances(&instances, "web", 3, |i| hash(i) == back_hash).await;
    drop(agent);
}

fn image_of_revision(r: &hypermesh_api::v1::WorkloadRevision) -> String {
    r.template
        .as_ref()
        .and_then(|t| t.containers.first())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}
