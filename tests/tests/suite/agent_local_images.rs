//! A typo'd tag of a locally imported image (`hypermesh.local/busybox:lates`) fails at
//! once as `ImageNotFound`, listing the images imported from archives, with no pull
//! attempted (no `Pulling` event, no DNS lookup of `hypermesh.local`), on a real agent
//! and containerd.

use hypermesh_tests::containerd;
use hypermesh_tests::node_env;

use containerd::TEST_IMAGE;
use hypermesh_api::v1::{self, Event, ListRequest, RestartPolicy};
use node_env::Env;

async fn event_reasons(env: &Env, name: &str) -> Vec<String> {
    let (items, _) = env
        .server
        .api::<Event>()
        .list_all(ListRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list events");
    items
        .into_iter()
        .filter_map(|e| e.spec)
        .filter(|s| s.involved_object.as_ref().is_some_and(|o| o.name == name))
        .map(|s| s.reason)
        .collect()
}

fn waiting(s: &v1::InstanceStatus) -> Option<&v1::ContainerStateWaiting> {
    s.container_statuses
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()
}

#[tokio::test]
async fn a_typod_local_tag_is_not_found_locally_without_a_pull() {
    let env = Env::start().await;
    let typo = TEST_IMAGE.replace(":latest", ":lates");
    env.run("typo", &typo, &["true"], RestartPolicy::Never)
        .await;
    let instance = env
        .wait_status("typo", "waiting ImageNotFound", |s| {
            waiting(s).is_some_and(|w| w.reason == "ImageNotFound")
        })
        .await;
    let message = &waiting(instance.status.as_ref().expect("status"))
        .expect("waiting")
        .message;
    assert_eq!(
        message,
        &format!("image {typo} not found locally (imported images: {TEST_IMAGE})")
    );
    let reasons = event_reasons(&env, "typo").await;
    assert!(reasons.iter().any(|r| r == "Failed"), "{reasons:?}");
    assert!(
        !reasons.iter().any(|r| r == "Pulling"),
        "no pull of a local image: {reasons:?}"
    );

    // The right tag still runs.
    env.run("right", TEST_IMAGE, &["true"], RestartPolicy::Never)
        .await;
    env.wait_status("right", "succeeded", |s| {
        s.phase == v1::InstancePhase::Succeeded as i32
    })
    .await;
    env.stop().await;
}
