//! The agent pulls images from a real registry (Debian's `docker-registry` on loopback,
//! htpasswd auth, plain http via `--insecure-registry`): by tag with credentials from
//! `--registry-auth`, the Instance runs and its output is logged; over https trusting
//! `--registry-ca` (and only https to registries not listed insecure); by digest; a wrong
//! password, an unknown tag and a tampered blob each become `ErrImagePull` with a message
//! saying why, backed off as `ImagePullBackOff`, while other Instances run undisturbed,
//! and a tampered layer is never committed, so nothing half-imported is used.

use hypermesh_tests::containerd;
use hypermesh_tests::node_env;
use hypermesh_tests::registry;

use std::path::PathBuf;

use containerd::TEST_IMAGE;
use hypermesh_api::Resource;
use hypermesh_api::v1::{self, InstancePhase, RestartPolicy, WatchRequest};
use hypermesh_containers::pull::PullConfig;
use node_env::{Env, TIMEOUT};
use registry::{PASSWORD, PrivateRegistry, Pushed, USER};

const REPOSITORY: &str = "hypermesh/busybox";

/// A registry holding the busybox test image as `hypermesh/busybox:v1`, and the
/// temp dir its archive was built in.
fn registry_with_test_image() -> (PrivateRegistry, Pushed, tempfile::TempDir) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let archive = containerd::build_test_archive(scratch.path());
    let registry = PrivateRegistry::start();
    let pushed = registry.push(&archive, REPOSITORY, "v1");
    (registry, pushed, scratch)
}

/// The agent config for `registry`: plain http to it, credentials from `auth_file`;
/// with `archives: false` no image directory, so nothing is imported behind the pull.
fn pulling_from(
    registry: &PrivateRegistry,
    auth_file: PathBuf,
    archives: bool,
) -> impl FnOnce(&mut hypermesh_agent::Config) {
    let host = registry.host().to_string();
    move |config| {
        config.pull = PullConfig {
            auth_file: Some(auth_file),
            insecure: vec![host],
            ca_file: None,
        };
        if !archives {
            config.image_dir = None;
        }
    }
}

fn waiting(status: &v1::InstanceStatus) -> Option<&v1::ContainerStateWaiting> {
    status
        .container_statuses
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()
}

/// Records every waiting reason the Instance `name` shows until it finishes (the watch
/// is open before this returns, so nothing after it is missed).
async fn record_waiting_reasons(env: &Env, name: &str) -> tokio::task::JoinHandle<Vec<String>> {
    let mut watch = env
        .instances()
        .watch(WatchRequest {
            namespace: "default".into(),
            field_selector: format!("metadata.name={name}"),
            ..Default::default()
        })
        .await
        .expect("watch");
    tokio::spawn(async move {
        let mut reasons: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, watch.message()).await {
            let (_, instance) = v1::Instance::split_event(event);
            let Some(status) = instance.status.as_ref() else {
                continue;
            };
            if let Some(w) = waiting(status)
                && reasons.last() != Some(&w.reason)
            {
                reasons.push(w.reason.clone());
            }
            if status.phase == InstancePhase::Succeeded as i32
                || status.phase == InstancePhase::Failed as i32
            {
                break;
            }
        }
        reasons
    })
}

/// Waits until the container waits with `reason` and a message containing every one
/// of `parts`; returns the message.
async fn wait_waiting(env: &Env, name: &str, reason: &str, parts: &[&str]) -> String {
    let what = format!("waiting {reason} with {parts:?}");
    let instance = env
        .wait_status(name, &what, |s| {
            waiting(s)
                .is_some_and(|w| w.reason == reason && parts.iter().all(|p| w.message.contains(p)))
        })
        .await;
    let status = instance.status.as_ref().expect("status");
    assert_eq!(status.phase, InstancePhase::Scheduled as i32, "not started");
    let message = waiting(status).expect("waiting").message.clone();
    eprintln!("{name}: {reason}: {message}");
    message
}

async fn wait_succeeded(env: &Env, name: &str) -> v1::Instance {
    env.wait_status(name, "SUCCEEDED", |s| {
        s.phase == InstancePhase::Succeeded as i32
    })
    .await
}

#[tokio::test]
async fn an_image_pulled_by_tag_with_credentials_runs() {
    let (registry, pushed, _scratch) = registry_with_test_image();
    let auth = registry.auth_file(USER, PASSWORD);
    let env = Env::start_with(pulling_from(&registry, auth, false)).await;
    let image = format!("{}/{REPOSITORY}:v1", registry.host());
    let reasons = record_waiting_reasons(&env, "pulled").await;
    env.run(
        "pulled",
        &image,
        &["sh", "-c", "echo hello from a pulled image"],
        RestartPolicy::Never,
    )
    .await;
    let done = wait_succeeded(&env, "pulled").await;
    let log = env.log(&done, "main");
    assert!(log.contains("hello from a pulled image"), "log: {log:?}");
    let reasons = reasons.await.expect("recorder");
    eprintln!("waiting reasons seen: {reasons:?}");
    assert_eq!(
        reasons.first().map(String::as_str),
        Some("PullingImage"),
        "waiting reasons seen: {reasons:?}"
    );
    assert!(!reasons.iter().any(|r| r == "ErrImagePull"), "{reasons:?}");
    // Recorded under the name the Instance uses, pointing at the pushed manifest.
    let images = env.ctr(&["images", "ls"]);
    let line = images
        .lines()
        .find(|l| l.starts_with(&image))
        .unwrap_or_else(|| panic!("{image} not in:\n{images}"));
    assert!(line.contains(&pushed.manifest), "{line}");
    env.stop().await;
}

#[tokio::test]
async fn an_image_pulled_over_https_trusting_registry_ca_runs() {
    let (plain, _, _scratch) = registry_with_test_image();
    let (https, ca) = plain.https_mirror();
    let auth = https.auth_file(USER, PASSWORD);
    let https_host = https.host().to_string();
    let env = Env::start_with(move |config| {
        config.pull = PullConfig {
            auth_file: Some(auth),
            insecure: Vec::new(),
            ca_file: Some(ca),
        };
        config.image_dir = None;
    })
    .await;
    let image = format!("{https_host}/{REPOSITORY}:v1");
    env.run(
        "over-tls",
        &image,
        &["sh", "-c", "echo came over tls"],
        RestartPolicy::Never,
    )
    .await;
    let done = wait_succeeded(&env, "over-tls").await;
    let log = env.log(&done, "main");
    assert!(log.contains("came over tls"), "log: {log:?}");
    // A registry not listed as insecure is spoken to over https only: the plain-http
    // one fails the TLS handshake.
    let plain_image = format!("{}/{REPOSITORY}:v1", plain.host());
    env.run(
        "not-insecure",
        &plain_image,
        &["true"],
        RestartPolicy::Never,
    )
    .await;
    wait_waiting(
        &env,
        "not-insecure",
        "ErrImagePull",
        &["unreachable", "TLS", plain.host()],
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn an_image_pulled_by_digest_runs() {
    let (registry, pushed, _scratch) = registry_with_test_image();
    let auth = registry.auth_file(USER, PASSWORD);
    let env = Env::start_with(pulling_from(&registry, auth, false)).await;
    let image = format!("{}/{REPOSITORY}@{}", registry.host(), pushed.manifest);
    env.run(
        "by-digest",
        &image,
        &["sh", "-c", "echo pinned"],
        RestartPolicy::Never,
    )
    .await;
    let done = wait_succeeded(&env, "by-digest").await;
    let log = env.log(&done, "main");
    assert!(log.contains("pinned"), "log: {log:?}");
    assert!(env.ctr(&["images", "ls", "-q"]).contains(&image));
    env.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_err_image_pull_unauthorized_and_backs_off() {
    let (registry, _, _scratch) = registry_with_test_image();
    let auth = registry.auth_file(USER, "not-the-password");
    let env = Env::start_with(pulling_from(&registry, auth, true)).await;
    let image = format!("{}/{REPOSITORY}:v1", registry.host());
    env.run("denied", &image, &["true"], RestartPolicy::Never)
        .await;
    let message = wait_waiting(
        &env,
        "denied",
        "ErrImagePull",
        &["unauthorized", registry.host(), "--registry-auth"],
    )
    .await;
    assert!(message.contains(&image), "{message}");
    // Other Instances are not held up by the failing pull.
    env.run(
        "neighbour",
        TEST_IMAGE,
        &["sh", "-c", "echo unaffected"],
        RestartPolicy::Never,
    )
    .await;
    wait_succeeded(&env, "neighbour").await;
    // The failure is retried with back-off, still saying why.
    wait_waiting(
        &env,
        "denied",
        "ImagePullBackOff",
        &["unauthorized", registry.host()],
    )
    .await;
    assert!(!env.ctr(&["images", "ls", "-q"]).contains(&image));
    env.stop().await;
}

#[tokio::test]
async fn an_unknown_tag_is_err_image_pull_manifest_unknown() {
    let (registry, _, _scratch) = registry_with_test_image();
    let auth = registry.auth_file(USER, PASSWORD);
    let env = Env::start_with(pulling_from(&registry, auth, true)).await;
    let image = format!("{}/{REPOSITORY}:no-such-tag", registry.host());
    env.run("unknown", &image, &["true"], RestartPolicy::Never)
        .await;
    let message = wait_waiting(
        &env,
        "unknown",
        "ErrImagePull",
        &["manifest unknown", "no-such-tag"],
    )
    .await;
    assert!(message.contains(&image), "{message}");
    env.stop().await;
}

#[tokio::test]
async fn a_tampered_blob_is_a_digest_mismatch_and_nothing_half_imported_is_used() {
    let (registry, pushed, _scratch) = registry_with_test_image();
    let layer = pushed.layers[0].clone();
    let original = registry.tamper_blob(&layer);
    let auth = registry.auth_file(USER, PASSWORD);
    let env = Env::start_with(pulling_from(&registry, auth, false)).await;
    let image = format!("{}/{REPOSITORY}:v1", registry.host());
    env.run(
        "tampered",
        &image,
        &["sh", "-c", "echo intact again"],
        RestartPolicy::Never,
    )
    .await;
    let expected = format!("expected {layer}");
    let message = wait_waiting(
        &env,
        "tampered",
        "ErrImagePull",
        &["digest mismatch", &expected, "got sha256:"],
    )
    .await;
    assert!(message.contains(&image), "{message}");
    // Nothing of the bad pull is usable: no image record, the layer never committed,
    // no container.
    assert!(!env.ctr(&["images", "ls", "-q"]).contains(&image));
    let content = env.ctr(&["content", "ls"]);
    assert!(content.starts_with("DIGEST"), "ctr content ls: {content:?}");
    assert!(!content.contains(&layer), "layer committed:\n{content}");
    assert!(env.ctr(&["containers", "ls", "-q"]).trim().is_empty());

    // Once the registry serves the right bytes again, the retry after the back-off
    // pulls and runs it.
    registry.restore_blob(&layer, &original);
    let done = wait_succeeded(&env, "tampered").await;
    let log = env.log(&done, "main");
    assert!(log.contains("intact again"), "log: {log:?}");
    env.stop().await;
}
