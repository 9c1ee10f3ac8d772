//! Shared by the `workload_*` tests: an in-process apiserver with the controllers
//! running beside it, Workload fixtures, and a stand-in for the (not yet written)
//! agent that makes Instances available the way a node would report them: phase
//! RUNNING with `Ready=True`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{InProcessApiServer, wait_for};
use futures::StreamExt;
use hypermesh_api::v1::{
    self, Condition, Event, Instance, InstancePhase, InstanceStatus, ListRequest, ObjectMeta,
    UpdateStrategy, UpdateStrategyType, Workload,
};
use hypermesh_api::{Api, Resource};
use hypermesh_runtime::{reflector, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for the controller to converge.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The label holding an Instance's template hash.
pub const HASH_LABEL: &str = "hypermesh.io/template-hash";

/// An in-process apiserver and the controllers, stopped when dropped.
pub struct Cluster {
    pub server: InProcessApiServer,
    controllers: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Starts an apiserver and the controllers as replica `identity`.
    pub async fn start() -> Self {
        let server = InProcessApiServer::start().await.expect("apiserver");
        let controllers = CancellationToken::new();
        let config = hypermesh_controllers::Config {
            identity: "test-controllers".into(),
            ..Default::default()
        };
        let task = tokio::spawn(hypermesh_controllers::run_with(
            server.channel(),
            config,
            controllers.clone(),
        ));
        Cluster {
            server,
            controllers,
            task: Some(task),
        }
    }

    pub fn workloads(&self) -> Api<Workload> {
        self.server.api()
    }

    pub fn instances(&self) -> Api<Instance> {
        self.server.api()
    }

    pub fn events(&self) -> Api<Event> {
        self.server.api()
    }

    /// Stops the controllers and waits for them.
    pub async fn stop_controllers(&mut self) {
        self.controllers.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("controllers task");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.controllers.cancel();
    }
}

/// `[(k, v)]` as a map.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Workload `default/name` selecting `app=<name>`, running `image`.
pub fn workload(name: &str, replicas: i32, image: &str) -> Workload {
    let selector = labels(&[("app", name)]);
    Workload {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::WorkloadSpec {
            replicas,
            selector: selector.clone(),
            template: Some(v1::InstanceTemplate {
                labels: selector,
                containers: vec![v1::Container {
                    name: "main".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// `workload` with a rolling update strategy.
pub fn rolling(mut w: Workload, max_surge: &str, max_unavailable: &str) -> Workload {
    w.spec.as_mut().expect("spec").strategy = Some(UpdateStrategy {
        r#type: UpdateStrategyType::RollingUpdate as i32,
        max_surge: max_surge.into(),
        max_unavailable: max_unavailable.into(),
    });
    w
}

/// The image of a Workload's first container.
pub fn image_of(w: &Workload) -> String {
    w.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.containers.first())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

/// Changes the image of workload `default/name` (re-reading on conflicts).
pub async fn set_image(api: &Api<Workload>, name: &str, image: &str) -> Workload {
    for _ in 0..10 {
        let mut w = api.get("default", name).await.expect("get workload");
        let template = w
            .spec
            .as_mut()
            .and_then(|s| s.template.as_mut())
            .expect("template");
        template.containers[0].image = image.into();
        match api.update(&w).await {
            Ok(w) => return w,
            Err(e) if e.code() == tonic::Code::Aborted => continue,
            Err(e) => panic!("update workload: {e:?}"),
        }
    }
    panic!("workload {name} kept changing");
}

/// Sets `spec.replicas` of workload `default/name`.
pub async fn set_replicas(api: &Api<Workload>, name: &str, replicas: i32) -> Workload {
    for _ in 0..10 {
        let mut w = api.get("default", name).await.expect("get workload");
        w.spec.as_mut().expect("spec").replicas = replicas;
        match api.update(&w).await {
            Ok(w) => return w,
            Err(e) if e.code() == tonic::Code::Aborted => continue,
            Err(e) => panic!("update workload: {e:?}"),
        }
    }
    panic!("workload {name} kept changing");
}

/// The Instances of `app=<name>` in `default`, sorted by name.
pub async fn instances_of(api: &Api<Instance>, name: &str) -> Vec<Instance> {
    let (mut items, _) = api
        .list_all(ListRequest {
            namespace: "default".into(),
            label_selector: format!("app={name}"),
            ..Default::default()
        })
        .await
        .expect("list instances");
    items.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    items
}

/// Waits until `app=<name>` has exactly `count` Instances, all matching `check`.
pub async fn wait_instances(
    api: &Api<Instance>,
    name: &str,
    count: usize,
    check: impl Fn(&Instance) -> bool,
) -> Vec<Instance> {
    let check = &check;
    wait_for(CONVERGE_TIMEOUT, || async move {
        let items = instances_of(api, name).await;
        (items.len() == count && items.iter().all(check)).then_some(items)
    })
    .await
    .unwrap_or_else(|e| panic!("{name}: never had {count} matching instances: {e}"))
}

/// Waits until workload `default/name` satisfies `check`.
pub async fn wait_workload(
    api: &Api<Workload>,
    name: &str,
    what: &str,
    check: impl Fn(&Workload) -> bool,
) -> Workload {
    let check = &check;
    let result = wait_for(CONVERGE_TIMEOUT, || async move {
        let w = api.get("default", name).await.expect("get workload");
        check(&w).then_some(w)
    })
    .await;
    match result {
        Ok(w) => w,
        Err(e) => {
            let w = api.get("default", name).await.expect("get workload");
            panic!("workload {name} never {what}: {e}\nlast seen: {w:#?}")
        }
    }
}

/// True once the status shows every replica updated and available for the current
/// generation.
pub fn rolled_out(w: &Workload) -> bool {
    let replicas = w.spec.as_ref().map_or(0, |s| s.replicas);
    let status = w.status.clone().unwrap_or_default();
    status.observed_generation == w.meta().generation
        && status.replicas == replicas
        && status.updated_replicas == replicas
        && status.available_replicas == replicas
}

/// The condition `kind` of a Workload's status.
pub fn condition(w: &Workload, kind: &str) -> Option<Condition> {
    w.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .cloned()
}

/// The template hash label of an Instance.
pub fn hash(i: &Instance) -> &str {
    i.meta().labels.get(HASH_LABEL).map_or("", String::as_str)
}

/// Phase RUNNING (or `phase`) with condition `Ready=<ready>`.
pub fn status(phase: InstancePhase, ready: bool) -> InstanceStatus {
    InstanceStatus {
        phase: phase as i32,
        conditions: vec![Condition {
            r#type: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            reason: "TestAgent".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Reports `instance` as running and ready, as an agent would.
pub async fn make_available(api: &Api<Instance>, instance: &Instance) -> bool {
    set_status(api, instance, status(InstancePhase::Running, true)).await
}

/// Writes the status of `instance`; false when it is gone.
pub async fn set_status(api: &Api<Instance>, instance: &Instance, status: InstanceStatus) -> bool {
    let mut update = Instance {
        metadata: Some(ObjectMeta {
            name: instance.meta().name.clone(),
            namespace: instance.meta().namespace.clone(),
            ..Default::default()
        }),
        spec: None,
        status: Some(status),
    };
    update.meta_mut().resource_version = 0;
    match api.update_status(&update).await {
        Ok(_) => true,
        Err(e) if e.code() == tonic::Code::NotFound => false,
        Err(e) => panic!("update instance status: {e:?}"),
    }
}

fn is_pending(i: &Instance) -> bool {
    let phase = i.status.as_ref().map_or(0, |s| s.phase);
    phase == InstancePhase::Pending as i32 || phase == InstancePhase::Unspecified as i32
}

/// Plays the agent: every PENDING Instance in `namespace` is reported RUNNING and
/// ready, while enabled. Stopped when dropped.
pub struct Agent {
    enabled: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Agent {
    /// An agent, enabled, for the Instances reachable through `api`.
    pub fn start(api: Api<Instance>) -> Self {
        let (enabled, mut on) = watch::channel(true);
        let task = tokio::spawn(async move {
            let (writer, cache) = reflector::store::<Instance>();
            let mut events = Box::pin(reflector::reflector(
                writer,
                watcher::watcher(api.clone(), watcher::Config::default()),
            ));
            loop {
                tokio::select! {
                    event = events.next() => if event.is_none() { return },
                    changed = on.changed() => if changed.is_err() { return },
                }
                if !*on.borrow_and_update() {
                    continue;
                }
                for instance in cache.list().iter().filter(|i| is_pending(i)) {
                    make_available(&api, instance).await;
                }
            }
        });
        Agent { enabled, task }
    }

    /// Stops (false) or resumes (true) reporting Instances as available.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.send_replace(enabled);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Events recorded about workload `default/name`, oldest first.
pub async fn events_about(api: &Api<Event>, name: &str) -> Vec<Event> {
    let (mut items, _) = api
        .list_all(ListRequest {
            namespace: "default".into(),
            field_selector: format!(
                "spec.involvedObject.kind=Workload,spec.involvedObject.name={name}"
            ),
            ..Default::default()
        })
        .await
        .expect("list events");
    items.sort_by_key(|e| {
        e.spec
            .as_ref()
            .and_then(|s| s.first_timestamp)
            .map(|t| (t.seconds, t.nanos))
    });
    items
}

/// The reasons of `events`, in order.
pub fn reasons(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e.spec
                .as_ref()
                .map(|s| s.reason.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// The Instances of one Workload at one moment, as an [`Observer`] saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Every Instance, whatever its state.
    pub total: usize,
    /// Running with `Ready=True`.
    pub available: usize,
    /// Instances per template hash.
    pub by_hash: BTreeMap<String, usize>,
}

/// True when `i` is running and ready.
pub fn is_available(i: &Instance) -> bool {
    i.status.as_ref().is_some_and(|s| {
        s.phase == InstancePhase::Running as i32
            && s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Records a [`Snapshot`] of `app=<name>`'s Instances after every change the
/// apiserver streams (a list, then a watch from its version, so no state is missed),
/// and optionally plays the agent: each new PENDING Instance is reported available.
pub struct Observer {
    snapshots: std::sync::Arc<std::sync::Mutex<Vec<Snapshot>>>,
    task: JoinHandle<()>,
}

impl Observer {
    pub async fn start(api: Api<Instance>, name: &str, agent: bool) -> Self {
        let (items, resource_version) = api
            .list_all(ListRequest {
                namespace: "default".into(),
                label_selector: format!("app={name}"),
                ..Default::default()
            })
            .await
            .expect("list instances");
        let mut stream = api
            .watch(v1::WatchRequest {
                namespace: "default".into(),
                label_selector: format!("app={name}"),
                resource_version,
                ..Default::default()
            })
            .await
            .expect("watch instances");
        let mut state: BTreeMap<String, Instance> = items
            .into_iter()
            .map(|i| (i.meta().name.clone(), i))
            .collect();
        let snapshots = std::sync::Arc::new(std::sync::Mutex::new(vec![snapshot(&state)]));
        let record = snapshots.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                let (kind, instance) = Instance::split_event(message);
                let name = instance.meta().name.clone();
                match kind {
                    v1::WatchEventType::Added | v1::WatchEventType::Modified => {
                        state.insert(name, instance.clone());
                    }
                    v1::WatchEventType::Deleted => {
                        state.remove(&name);
                    }
                    _ => continue,
                }
                record.lock().expect("lock").push(snapshot(&state));
                if agent && kind == v1::WatchEventType::Added && is_pending(&instance) {
                    make_available(&api, &instance).await;
                }
            }
        });
        Observer { snapshots, task }
    }

    /// Every snapshot so far, oldest first.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.snapshots.lock().expect("lock").clone()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn snapshot(state: &BTreeMap<String, Instance>) -> Snapshot {
    let mut by_hash = BTreeMap::new();
    for i in state.values() {
        *by_hash.entry(hash(i).to_string()).or_insert(0) += 1;
    }
    Snapshot {
        total: state.len(),
        available: state.values().filter(|i| is_available(i)).count(),
        by_hash,
    }
}

/// Waits until the reasons of the Events about workload `default/name` satisfy
/// `check` (Events are recorded just after the changes they describe).
pub async fn wait_event_reasons(
    api: &Api<Event>,
    name: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let check = &check;
    let result = wait_for(CONVERGE_TIMEOUT, || async move {
        let seen = reasons(&events_about(api, name).await);
        check(&seen).then_some(seen)
    })
    .await;
    match result {
        Ok(seen) => seen,
        Err(e) => {
            let seen = reasons(&events_about(api, name).await);
            panic!("events about {name} never matched: {e}; saw {seen:?}")
        }
    }
}

/// True when `seen` contains every one of `wanted`.
pub fn has_all(seen: &[String], wanted: &[&str]) -> bool {
    wanted.iter().all(|w| seen.iter().any(|s| s == w))
}
