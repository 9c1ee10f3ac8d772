//! Shared by the tests that run richer Instances on a [`crate::node_env::Env`]: busybox
//! containers running a script, reading a container's status and log, deleting.

use hypermesh_api::v1::{self, Instance};

use crate::node_env::Env;

/// A busybox container `name` running `script` with `sh -c`.
pub fn sh(name: &str, script: &str) -> v1::Container {
    v1::Container {
        name: name.into(),
        image: crate::containerd::TEST_IMAGE.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        resources: Some(v1::ResourceRequirements {
            cpu: "500m".into(),
            memory: "64Mi".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status of container `name`.
pub fn container_status<'a>(
    status: &'a v1::InstanceStatus,
    name: &str,
) -> Option<&'a v1::ContainerStatus> {
    status.container_statuses.iter().find(|c| c.name == name)
}

/// The waiting state of container `name`, if it waits.
pub fn waiting<'a>(
    status: &'a v1::InstanceStatus,
    name: &str,
) -> Option<&'a v1::ContainerStateWaiting> {
    container_status(status, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()
}

/// Whether container `name` runs.
pub fn running(status: &v1::InstanceStatus, name: &str) -> bool {
    container_status(status, name)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

/// The Instance's `Ready` condition status (`True`, `False`), if set.
pub fn ready_condition(status: &v1::InstanceStatus) -> Option<&str> {
    status
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .map(|c| c.status.as_str())
}

/// The first run's log of container `container` of `instance` so far (as `hmctl logs`
/// shows it).
pub fn log_of(env: &Env, instance: &Instance, container: &str) -> String {
    let log = first_run_log(env, instance, container);
    hypermesh_agent::logs::reader::read(&log, Default::default())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The whole first-run log of container `container` of `instance`, once the container's
/// output has ended.
pub fn finished_log_of(env: &Env, instance: &Instance, container: &str) -> String {
    crate::containerd::finished_log(&first_run_log(env, instance, container))
}

fn first_run_log(env: &Env, instance: &Instance, container: &str) -> std::path::PathBuf {
    hypermesh_agent::logs::run_log(
        &hypermesh_agent::reconcile::log_dir_of(env.log_dir.path(), instance, container),
        0,
    )
}

/// Deletes Instance `default/<name>`.
pub async fn delete(env: &Env, name: &str) {
    env.instances()
        .delete(v1::DeleteRequest {
            namespace: "default".into(),
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("delete instance");
}
