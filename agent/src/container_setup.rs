//! What each start of a container needs beyond the [`ContainerConfig`] built from its
//! spec: the process user (the spec's `uid[:gid]`, else the image's when numeric), what
//! it shares with the host ([`security_of`]: nothing unless its `securityContext` asks,
//! and a user namespace wherever the node has them), the node's pids limit, the volume
//! mounts (secret files owned by the container's user) and the probes. Failures the spec causes (a
//! non-numeric user, a missing hostPath or Secret) are the Instance owner's to fix: the
//! reconciler shows them as the container's `CreateContainerConfigError` and retries;
//! transient ones (apiserver or containerd unreachable) are retried quietly.

use hypermesh_api::v1::{self, Instance};

use crate::probe::{ContainerProbes, ProbeError};
use crate::volumes::{InstanceVolumes, VolumeError};
use hypermesh_containers::container::{IdMapping, ProcessUser, Security};
use hypermesh_containers::{self as containers, ContainerConfig, ContainerdClient, image};

/// Why a container cannot be started as its spec says.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// `containers[i].user` is not a numeric `uid[:gid]`.
    #[error("containers[{index}].user: {user:?} is not a numeric uid[:gid]")]
    User { index: usize, user: String },
    /// No user in the spec, and the image's user is a name, not a number.
    #[error(
        "containers[{index}].user is not set and image {image} runs as {user:?}, which is \
         not a numeric uid[:gid]: set containers[{index}].user"
    )]
    ImageUser {
        index: usize,
        image: String,
        user: String,
    },
    /// A volume could not be set up.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// A probe cannot be run.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// containerd could not be asked about the image (retried).
    #[error("reading the image's config: {0}")]
    Runtime(#[source] containers::Error),
}

impl LaunchError {
    /// True when retrying may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            LaunchError::Volume(e) => e.is_transient(),
            LaunchError::Runtime(_) => true,
            _ => false,
        }
    }
}

/// A container ready to be created: its full config and its probes.
#[derive(Debug)]
pub struct Launch {
    pub config: ContainerConfig,
    pub probes: ContainerProbes,
}

/// Node-wide settings and the volume directories, shared by every container start.
pub struct ContainerSetup {
    pub client: ContainerdClient,
    pub volumes: InstanceVolumes,
    /// Every container's pids limit (`--pids-limit`).
    pub pids_limit: Option<i64>,
    /// The mapping of containers that run in a user namespace; `None` where the node
    /// has no user namespaces (they then run in the host's).
    pub user_namespace: Option<IdMapping>,
}

/// What container `c` of `instance` shares with the host: what its `securityContext`
/// asks for, and a user namespace (`mapping`) unless it runs privileged, in a host
/// namespace, with `hostUsers`, or mounts a hostPath (whose files keep their host
/// owners, which a user namespace would turn into `nobody`).
pub fn security_of(instance: &Instance, c: &v1::Container, mapping: Option<IdMapping>) -> Security {
    let asked = c.security_context.unwrap_or_default();
    let volumes = instance
        .spec
        .as_ref()
        .map(|s| s.volumes.as_slice())
        .unwrap_or(&[]);
    let mounts_host_path = c.volume_mounts.iter().any(|m| {
        volumes
            .iter()
            .any(|v| v.name == m.name && matches!(v.source, Some(v1::volume::Source::HostPath(_))))
    });
    let host_users = asked.host_users
        || asked.privileged
        || asked.host_network
        || asked.host_pid
        || mounts_host_path;
    Security {
        privileged: asked.privileged,
        host_network: asked.host_network,
        host_pid: asked.host_pid,
        user_namespace: mapping.filter(|_| !host_users),
    }
}

impl ContainerSetup {
    /// Completes `config` (for container `index` of `instance`, spec `c`): user, pids
    /// limit, volume mounts (setting the volumes up) and probes.
    pub async fn prepare(
        &self,
        instance: &Instance,
        index: usize,
        c: &v1::Container,
        mut config: ContainerConfig,
    ) -> Result<Launch, LaunchError> {
        let probes = ContainerProbes::of(index, c)?;
        let user = self.user(index, c).await?;
        config.user = Some(user);
        config.security = security_of(instance, c, self.user_namespace);
        config.pids_limit = self.pids_limit;
        // Secret files belong to the container's user as the host sees it.
        let owner = match &config.security.user_namespace {
            Some(m) => (
                m.host_uid(user.uid).unwrap_or(user.uid),
                m.host_gid(user.gid).unwrap_or(user.gid),
            ),
            None => (user.uid, user.gid),
        };
        config.mounts = self.volumes.mounts(instance, c, owner).await?;
        for (name, value) in self.volumes.secret_env(instance, c).await? {
            match config.env.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = value,
                None => config.env.push((name, value)),
            }
        }
        Ok(Launch { config, probes })
    }

    async fn user(&self, index: usize, c: &v1::Container) -> Result<ProcessUser, LaunchError> {
        if !c.user.is_empty() {
            return ProcessUser::parse(&c.user).ok_or_else(|| LaunchError::User {
                index,
                user: c.user.clone(),
            });
        }
        let image = image::resolve(&self.client, &c.image)
            .await
            .map_err(LaunchError::Runtime)?;
        let user = &image.config.user;
        if user.is_empty() {
            return Ok(ProcessUser::default());
        }
        ProcessUser::parse(user).ok_or_else(|| LaunchError::ImageUser {
            index,
            image: c.image.clone(),
            user: user.clone(),
        })
    }
}
