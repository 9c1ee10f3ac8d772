//! Containers: a [`ContainerConfig`] becomes an OCI runtime spec ([`spec`]), a container
//! record, a writable snapshot on top of the image (or on its copy owned by the user
//! namespace's ids, [`userns`]), and a runc task whose stdout/stderr go to `hm-logger`
//! (a [`LogSink`]); then start, wait, kill and delete.

pub mod spec;
pub mod userns;

pub use spec::runtime_spec;
pub use userns::{IdMapping, user_namespaces_available};

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest, WaitRequest,
    container::Runtime,
    containers_client::ContainersClient,
    snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest, snapshots_client::SnapshotsClient},
    tasks_client::TasksClient,
};
use hypermesh_api::quantity::Quantity;

use crate::image;
use crate::{ContainerdClient, Error, SNAPSHOTTER};

/// The runc shim containerd 1.6 ships.
const RUNTIME: &str = "io.containerd.runc.v2";
/// The `Any` type URL containerd expects for an OCI runtime spec (JSON-encoded).
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// What to run: one container of an Instance.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    /// The containerd container ID (also the snapshot key and cgroup leaf).
    pub id: String,
    /// An image already imported (see [`image::import_archive`]).
    pub image: String,
    /// Replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    /// Replaces the image's cmd when not empty (or when `command` is set).
    pub args: Vec<String>,
    /// Added to (and overriding) the image's environment.
    pub env: Vec<(String, String)>,
    /// Replaces the image's working directory when set.
    pub working_dir: Option<String>,
    /// CPU limit (e.g. `500m`): CFS quota and shares.
    pub cpu: Option<Quantity>,
    /// Memory limit in bytes (e.g. `64Mi`).
    pub memory: Option<Quantity>,
    /// Maximum number of processes in the container.
    pub pids_limit: Option<i64>,
    /// The user the process runs as; `None`: the image's user when numeric, else root.
    pub user: Option<ProcessUser>,
    /// Host directories or files bind-mounted into the container (volumes).
    pub mounts: Vec<BindMount>,
    /// Where stdout and stderr are written.
    pub log: LogSink,
    /// Labels on the container record (e.g. the owning Instance).
    pub labels: HashMap<String, String>,
    /// What it shares with the host. The default shares nothing: the default capability
    /// set and seccomp profile, its own namespaces, the host's user namespace.
    pub security: Security,
}

/// How much of the host a container shares, and who its root is there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// All capabilities, no seccomp filter, no masked kernel paths, every device allowed
    /// in its cgroup, a writable `/sys`.
    pub privileged: bool,
    /// The host's network namespace instead of its own.
    pub host_network: bool,
    /// The host's PID namespace instead of its own.
    pub host_pid: bool,
    /// Runs in a user namespace with this mapping (root inside is an unprivileged host
    /// user); `None`: in the host's user namespace.
    pub user_namespace: Option<IdMapping>,
}

/// A numeric user and group the container's process runs as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
}

impl ProcessUser {
    /// Parses `uid` or `uid:gid` (both numeric; the group is 0 when not given). `None`
    /// for anything else, e.g. a user name, which would need the image's /etc/passwd.
    pub fn parse(text: &str) -> Option<ProcessUser> {
        let number = |t: &str| {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<u32>().ok())
                .flatten()
        };
        match text.split_once(':') {
            Some((uid, gid)) => Some(ProcessUser {
                uid: number(uid)?,
                gid: number(gid)?,
            }),
            None => Some(ProcessUser {
                uid: number(text)?,
                gid: 0,
            }),
        }
    }
}

/// A host path bind-mounted into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// The host directory or file.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A container's output destination: containerd's runc shim starts `logger` with the
/// container's stdout and stderr pipes and it writes them, rotated, to `file` (see
/// `hypermesh_agent::logs::writer`). The logger belongs to the shim, so output is kept while the
/// agent restarts.
#[derive(Clone, Debug, Default)]
pub struct LogSink {
    /// The `hm-logger` program.
    pub logger: PathBuf,
    /// The live log file of this run.
    pub file: PathBuf,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Files kept, the live one included.
    pub max_files: u32,
}

impl LogSink {
    /// The `binary://` stdio URI; the shim passes each query pair as `key value` argv.
    pub fn uri(&self) -> Result<String, Error> {
        for path in [&self.logger, &self.file] {
            if !path.is_absolute() {
                return Err(Error::InvalidConfig(format!(
                    "log path {} is not absolute",
                    path.display()
                )));
            }
        }
        if let Some(parent) = self.file.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        Ok(format!(
            "binary://{}?--file={}&--max-size={}&--max-files={}",
            escape(&self.logger.to_string_lossy(), true),
            escape(&self.file.to_string_lossy(), false),
            self.max_bytes,
            self.max_files
        ))
    }
}

/// Percent-encodes everything but unreserved characters (and `/` in paths).
fn escape(text: &str, path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (path && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code; `128 + signal` when killed by a signal (137 for SIGKILL).
    pub code: u32,
    /// The kernel's OOM killer killed a process of the container (its memory cgroup
    /// counted an `oom_kill`), i.e. the memory limit was hit.
    pub oom_killed: bool,
    /// When it exited, as containerd recorded it (also for a task that exited while
    /// nobody was watching); `None` when containerd gave no time.
    pub exited_at: Option<std::time::SystemTime>,
}

/// containerd's exit time, when it gave one (a missing or zero timestamp is none).
pub fn exit_time(at: Option<prost_types::Timestamp>) -> Option<std::time::SystemTime> {
    at.filter(|t| t.seconds > 0)
        .and_then(|t| std::time::SystemTime::try_from(t).ok())
}

impl ExitStatus {
    /// The stable reason shown in Instance status: `OOMKilled`, `Completed` (exit 0) or
    /// `Error`.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// The cgroup (relative to each hierarchy's root) a container runs in.
pub fn cgroup_path(id: &str) -> String {
    format!("/hypermesh/{id}")
}

/// How many times the OOM killer fired in the container's memory cgroup (cgroup v1
/// `memory.oom_control` or v2 `memory.events`); 0 when the cgroup is gone or unreadable.
/// Must be read before the task is deleted, which removes the cgroup.
pub fn oom_kills(id: &str) -> u64 {
    let path = cgroup_path(id);
    let candidates = [
        format!("/sys/fs/cgroup/memory{path}/memory.oom_control"),
        format!("/sys/fs/cgroup{path}/memory.events"),
    ];
    candidates
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .find_map(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// What a container's cgroup has used: CPU time since it started and memory now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time, in nanoseconds (v2 `cpu.stat` `usage_usec`, v1 `cpuacct.usage`).
    pub cpu_nanos: u64,
    /// Memory charged now, in bytes (v2 `memory.current`, v1 `memory.usage_in_bytes`).
    pub memory_bytes: u64,
}

/// The usage of container `id`'s cgroup (v2, else v1); `None` when it has none (not
/// running, or the cgroup files are unreadable).
pub fn cgroup_usage(id: &str) -> Option<CgroupUsage> {
    let path = cgroup_path(id);
    let read = |file: String| std::fs::read_to_string(file).ok();
    let number = |text: String| text.trim().parse::<u64>().ok();
    // cgroup v2: one hierarchy.
    if let Some(memory) = read(format!("/sys/fs/cgroup{path}/memory.current")).and_then(number) {
        let cpu_usec = read(format!("/sys/fs/cgroup{path}/cpu.stat")).and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
        })?;
        return Some(CgroupUsage {
            cpu_nanos: cpu_usec.saturating_mul(1000),
            memory_bytes: memory,
        });
    }
    // cgroup v1: one hierarchy per controller.
    let memory =
        read(format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes")).and_then(number)?;
    let cpu_nanos = ["cpuacct", "cpu,cpuacct"]
        .iter()
        .find_map(|h| read(format!("/sys/fs/cgroup/{h}{path}/cpuacct.usage")).and_then(number))?;
    Some(CgroupUsage {
        cpu_nanos,
        memory_bytes: memory,
    })
}

/// Creates the container, its writable snapshot and its (not yet started) task; returns
/// the task's pid. Anything created is removed again when a later step fails.
pub async fn create(client: &ContainerdClient, config: &ContainerConfig) -> Result<u32, Error> {
    if config.id.is_empty() {
        return Err(Error::InvalidConfig("empty container id".into()));
    }
    let image = image::resolve(client, &config.image).await?;
    let spec = runtime_spec(config, &image)?;
    let spec_json = serde_json::to_vec(&spec)
        .map_err(|e| Error::InvalidConfig(format!("{}: spec: {e}", config.id)))?;
    let stdio = config.log.uri()?;
    let parent = match &config.security.user_namespace {
        Some(mapping) => userns::remapped_parent(client, &image, mapping).await?,
        None => image.chain_id.clone(),
    };

    ContainersClient::new(client.channel())
        .create(client.request(CreateContainerRequest {
            container: Some(Container {
                id: config.id.clone(),
                labels: config.labels.clone(),
                image: config.image.clone(),
                runtime: Some(Runtime {
                    name: RUNTIME.to_string(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.to_string(),
                    value: spec_json,
                }),
                snapshotter: SNAPSHOTTER.to_string(),
                snapshot_key: config.id.clone(),
                created_at: None,
                updated_at: None,
                extensions: HashMap::new(),
                sandbox: String::new(),
            }),
        }))
        .await
        .map_err(Error::call("containers.create"))?;

    let rest = async {
        let mounts = SnapshotsClient::new(client.channel())
            .prepare(client.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: config.id.clone(),
                parent,
                labels: HashMap::new(),
            }))
            .await
            .map_err(Error::call("snapshots.prepare"))?
            .into_inner()
            .mounts;
        let created = TasksClient::new(client.channel())
            .create(client.request(CreateTaskRequest {
                container_id: config.id.clone(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: stdio.clone(),
                stderr: stdio,
                terminal: false,
                checkpoint: None,
                options: None,
                runtime_path: String::new(),
            }))
            .await
            .map_err(Error::call("tasks.create"))?
            .into_inner();
        Ok(created.pid)
    }
    .await;
    if rest.is_err() {
        let _ = delete(client, &config.id).await;
    }
    rest
}

/// Starts a created task; returns its pid.
pub async fn start(client: &ContainerdClient, id: &str) -> Result<u32, Error> {
    Ok(TasksClient::new(client.channel())
        .start(client.request(StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .map_err(Error::call("tasks.start"))?
        .into_inner()
        .pid)
}

/// The host pid of the task's init process (e.g. to enter its namespaces).
pub async fn pid(client: &ContainerdClient, id: &str) -> Result<u32, Error> {
    TasksClient::new(client.channel())
        .get(client.request(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .map_err(Error::call("tasks.get"))?
        .into_inner()
        .process
        .map(|p| p.pid)
        .filter(|pid| *pid > 0)
        .ok_or_else(|| Error::InvalidConfig(format!("{id}: the task has no process")))
}

/// Waits until the task exits (returns at once if it already has): one long `tasks.Wait`
/// call. Running Instances wait through [`crate::exits::TaskExits`] instead, which serves
/// every container over one event subscription; this is for short waits, e.g. while
/// stopping a container.
pub async fn wait(client: &ContainerdClient, id: &str) -> Result<ExitStatus, Error> {
    let response = TasksClient::new(client.channel())
        .wait(client.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .map_err(Error::call("tasks.wait"))?
        .into_inner();
    Ok(ExitStatus {
        code: response.exit_status,
        oom_killed: oom_kills(id) > 0,
        exited_at: exit_time(response.exited_at),
    })
}

/// Sends `signal` to every process of the task.
pub async fn kill(client: &ContainerdClient, id: &str, signal: u32) -> Result<(), Error> {
    TasksClient::new(client.channel())
        .kill(client.request(KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal,
            all: true,
        }))
        .await
        .map_err(Error::call("tasks.kill"))?;
    Ok(())
}

/// Deletes the task (which must have exited), the container record and its snapshot;
/// parts already gone are skipped. Returns the task's exit status if there was a task.
pub async fn delete(client: &ContainerdClient, id: &str) -> Result<Option<ExitStatus>, Error> {
    let not_found = |s: &tonic::Status| s.code() == tonic::Code::NotFound;
    let oom_killed = oom_kills(id) > 0;
    let status = match TasksClient::new(client.channel())
        .delete(client.request(DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await
    {
        Ok(response) => {
            let response = response.into_inner();
            Some(ExitStatus {
                code: response.exit_status,
                oom_killed,
                exited_at: exit_time(response.exited_at),
            })
        }
        Err(s) if not_found(&s) => None,
        Err(s) => return Err(Error::call("tasks.delete")(s)),
    };
    match ContainersClient::new(client.channel())
        .delete(client.request(DeleteContainerRequest { id: id.to_string() }))
        .await
    {
        Ok(_) => {}
        Err(s) if not_found(&s) => {}
        Err(s) => return Err(Error::call("containers.delete")(s)),
    }
    match SnapshotsClient::new(client.channel())
        .remove(client.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: id.to_string(),
        }))
        .await
    {
        Ok(_) => {}
        Err(s) if not_found(&s) => {}
        Err(s) => return Err(Error::call("snapshots.remove")(s)),
    }
    Ok(status)
}

/// A container record of the namespace: its ID and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: String,
    pub labels: HashMap<String, String>,
}

/// The containers of the client's namespace that carry label `key` (with any value).
pub async fn list_labelled(
    client: &ContainerdClient,
    key: &str,
) -> Result<Vec<ContainerRecord>, Error> {
    let listed = ContainersClient::new(client.channel())
        .list(client.request(ListContainersRequest {
            filters: vec![format!("labels.\"{key}\"")],
        }))
        .await
        .map_err(Error::call("containers.list"))?;
    Ok(listed
        .into_inner()
        .containers
        .into_iter()
        .map(|c| ContainerRecord {
            id: c.id,
            labels: c.labels,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_numeric_uid_and_gid() {
        let user = |uid, gid| Some(ProcessUser { uid, gid });
        assert_eq!(ProcessUser::parse("1000"), user(1000, 0));
        assert_eq!(ProcessUser::parse("1000:50"), user(1000, 50));
        assert_eq!(ProcessUser::parse("0:0"), user(0, 0));
        for bad in [
            "",
            "nobody",
            "1000:staff",
            ":5",
            "5:",
            "-1",
            "+7",
            "99999999999",
            "1:2:3",
        ] {
            assert_eq!(ProcessUser::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn log_uri_escapes_the_query() {
        let sink = LogSink {
            logger: "/opt/hm bin/hm-logger".into(),
            file: std::env::temp_dir().join("hm-uri-test/a&b=c.log"),
            max_bytes: 10,
            max_files: 3,
        };
        let uri = sink.uri().expect("uri");
        assert!(
            uri.starts_with("binary:///opt/hm%20bin/hm-logger?--file=%2F"),
            "{uri}"
        );
        assert!(
            uri.contains("a%26b%3Dc.log&--max-size=10&--max-files=3"),
            "{uri}"
        );
    }

    #[test]
    fn exit_reasons() {
        let status = |code, oom_killed| ExitStatus {
            code,
            oom_killed,
            exited_at: None,
        };
        assert_eq!(status(0, false).reason(), "Completed");
        assert_eq!(status(1, false).reason(), "Error");
        assert_eq!(status(137, true).reason(), "OOMKilled");
    }
}
