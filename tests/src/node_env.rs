//! Shared by the tests where a real agent runs Instances: an in-process apiserver, a
//! private containerd with the busybox test image in the agent's image directory, and an
//! in-process agent on node [`NODE`] using both.

use std::time::Duration;

use crate::agent::{self, Agent};
use crate::containerd::PrivateContainerd;
use crate::{InProcessApiServer, wait_for};
use hypermesh_api::Api;
use hypermesh_api::v1::{self, BindRequest, Instance, Node, ObjectMeta, RestartPolicy};

pub const TIMEOUT: Duration = Duration::from_secs(60);
pub const NODE: &str = "runner";

/// An apiserver, a private containerd with the test image in an image dir, and an
/// agent using both; fields keep them alive.
pub struct Env {
    pub server: InProcessApiServer,
    pub containerd: PrivateContainerd,
    pub agent: Option<Agent>,
    pub log_dir: tempfile::TempDir,
    /// The agent's `--secrets-dir`, on tmpfs (/dev/shm).
    pub secrets_dir: tempfile::TempDir,
    _state: tempfile::TempDir,
    _images: tempfile::TempDir,
}

/// Labels `namespace` with the `privileged` workload policy: these tests run
/// containers with hostPath volumes and host users on purpose.
pub async fn allow_host_access(server: &InProcessApiServer, namespace: &str) {
    let namespaces = server.api::<v1::Namespace>();
    let mut ns = namespaces.get("", namespace).await.expect("namespace");
    ns.metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert("hypermesh.io/policy".into(), "privileged".into());
    namespaces.update(&ns).await.expect("label the namespace");
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(|_| {}).await
    }

    /// As [`Env::start`] with TLS: the agent joins with a token and is `node:runner`
    /// (what reading Secrets needs: the apiserver seals them to that node's key).
    pub async fn start_tls() -> Env {
        Env::start_with_server(
            |c| c.tls = Some(hypermesh_apiserver::TlsSettings::default()),
            |_| {},
        )
        .await
    }

    /// As [`Env::start`], with `tune` adjusting the agent's config before it starts.
    pub async fn start_with(tune: impl FnOnce(&mut hypermesh_agent::Config)) -> Env {
        Env::start_with_server(|_| {}, tune).await
    }

    /// As [`Env::start_with`], with `server` adjusting the apiserver's config too.
    pub async fn start_with_server(
        server: impl FnOnce(&mut hypermesh_apiserver::Config),
        tune: impl FnOnce(&mut hypermesh_agent::Config),
    ) -> Env {
        let server = InProcessApiServer::start_with(server)
            .await
            .expect("apiserver");
        allow_host_access(&server, "default").await;
        let containerd = PrivateContainerd::start();
        let images = containerd.image_dir();
        let state = tempfile::tempdir().expect("state dir");
        let log_dir = tempfile::tempdir().expect("log dir");
        let secrets_dir = tempfile::Builder::new()
            .prefix("hm-secrets-")
            .tempdir_in("/dev/shm")
            .expect("secrets dir on tmpfs");
        let mut config = agent::config(
            server.url(),
            NODE,
            state.path(),
            containerd.socket().to_path_buf(),
        );
        config.image_dir = Some(images.path().to_path_buf());
        config.log_dir = Some(log_dir.path().to_path_buf());
        config.restart_backoff = Duration::from_millis(200);
        config.secrets_dir = secrets_dir.path().to_path_buf();
        if let Ok(pin) = server.ca_pin() {
            let token = crate::identities::join_token(&server, 1, Duration::from_secs(600))
                .await
                .expect("join token");
            config.join_token = Some(token);
            config.ca_cert_hash = Some(pin);
        }
        tune(&mut config);
        let agent = Agent::start(config);
        let nodes = server.api::<Node>();
        wait_for(TIMEOUT, || {
            let nodes = nodes.clone();
            async move { nodes.get("", NODE).await.ok() }
        })
        .await
        .expect("agent registers its Node");
        Env {
            server,
            containerd,
            agent: Some(agent),
            log_dir,
            secrets_dir,
            _state: state,
            _images: images,
        }
    }

    pub fn instances(&self) -> Api<Instance> {
        self.server.api::<Instance>()
    }

    /// Creates an Instance running `command` with `image` and binds it to the node.
    pub async fn run(
        &self,
        name: &str,
        image: &str,
        command: &[&str],
        policy: RestartPolicy,
    ) -> Instance {
        self.run_limited(name, image, command, policy, "64Mi").await
    }

    /// As [`Env::run`] with a memory limit.
    pub async fn run_limited(
        &self,
        name: &str,
        image: &str,
        command: &[&str],
        policy: RestartPolicy,
        memory: &str,
    ) -> Instance {
        let spec = v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "main".into(),
                image: image.into(),
                command: command.iter().map(|s| s.to_string()).collect(),
                resources: Some(v1::ResourceRequirements {
                    cpu: "500m".into(),
                    memory: memory.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            restart_policy: policy as i32,
            termination_grace_period_seconds: 1,
            ..Default::default()
        };
        self.run_spec(name, spec).await
    }

    /// Waits until `check` accepts the Instance's status; panics with the last one.
    pub async fn wait_status<F>(&self, name: &str, what: &str, check: F) -> Instance
    where
        F: Fn(&v1::InstanceStatus) -> bool,
    {
        let instances = self.instances();
        let found = wait_for(TIMEOUT, || {
            let instances = instances.clone();
            let check = &check;
            async move {
                let i = instances.get("default", name).await.ok()?;
                i.status.as_ref().is_some_and(check).then_some(i)
            }
        })
        .await;
        match found {
            Ok(i) => i,
            Err(_) => {
                let last = self.instances().get("default", name).await;
                panic!(
                    "{name}: {what}: last {:?}\ncontainerd log:\n{}",
                    last.map(|i| i.status),
                    self.containerd.log()
                );
            }
        }
    }

    /// The newest run's log of `container` of `instance` (as `hmctl logs` shows it),
    /// once its logger has finished writing.
    pub fn log(&self, instance: &Instance, container: &str) -> String {
        let dir = hypermesh_agent::reconcile::log_dir_of(self.log_dir.path(), instance, container);
        let run = hypermesh_agent::logs::runs(&dir)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("{}: no log", dir.display()));
        crate::containerd::finished_log(&hypermesh_agent::logs::run_log(&dir, run))
    }

    /// `ctr -n hypermesh <args>` output.
    pub fn ctr(&self, args: &[&str]) -> String {
        self.containerd.ctr(args)
    }

    /// The pid of the task of container `id`, if it runs.
    pub fn task_pid(&self, id: &str) -> Option<String> {
        self.ctr(&["tasks", "ls"])
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
    }

    /// Stops the agent (its containers keep running).
    pub async fn stop_agent(&mut self) -> hypermesh_agent::Config {
        let agent = self.agent.take().expect("agent running");
        let config = agent.config.clone();
        agent.stop().await;
        config
    }

    /// Creates `spec` as Instance `default/<name>` and binds it to the node.
    pub async fn run_spec(&self, name: &str, spec: v1::InstanceSpec) -> Instance {
        let instance = Instance {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(spec),
            status: None,
        };
        let instances = self.instances();
        instances.create(&instance).await.expect("create instance");
        instances
            .bind(BindRequest {
                namespace: "default".into(),
                name: name.into(),
                node_name: NODE.into(),
                ..Default::default()
            })
            .await
            .expect("bind instance")
    }

    /// The agent's emptyDir root (`<state dir>/volumes`).
    pub fn volumes_dir(&self) -> std::path::PathBuf {
        self._state.path().join("volumes")
    }

    pub async fn stop(mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
    }
}
