//! Containers: a [`ContainerConfig`] becomes an OCI runtime spec (process and its user,
//! mounts incl. bind-mounted volumes, namespaces, cgroup cpu/memory/pids limits), a
//! container record, a writable snapshot on top of the image, and a runc task whose
//! stdout/stderr go to `hm-logger` (a [`LogSink`]).

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
use serde_json::{Value, json};

use crate::image::{self, ImportedImage};
use crate::{ContainerdClient, Error, SNAPSHOTTER};

/// The runc shim containerd 1.6 ships.
const RUNTIME: &str = "io.containerd.runc.v2";
/// The `Any` type URL containerd expects for an OCI runtime spec (JSON-encoded).
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// CFS period used to turn a CPU quantity into a quota.
const CPU_PERIOD_US: u64 = 100_000;
/// Default PATH when neither the image nor the config sets one.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// Builds the OCI runtime spec for `config` on top of `image`.
pub fn runtime_spec(config: &ContainerConfig, image: &ImportedImage) -> Result<Value, Error> {
    let defaults = &image.config;
    let mut argv: Vec<String> = if config.command.is_empty() {
        defaults.entrypoint.clone()
    } else {
        config.command.clone()
    };
    if !config.args.is_empty() {
        argv.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        argv.extend(defaults.cmd.iter().cloned());
    }
    if argv.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "{}: no command: the image has no entrypoint or cmd and none was given",
            config.id
        )));
    }
    let mut env: Vec<String> = defaults.env.clone();
    for (name, value) in &config.env {
        if name.is_empty() || name.contains('=') {
            return Err(Error::InvalidConfig(format!(
                "{}: invalid environment variable name {name:?}",
                config.id
            )));
        }
        env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(name.as_str()));
        env.push(format!("{name}={value}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = config
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| Some(defaults.working_dir.clone()).filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(Error::InvalidConfig(format!(
            "{}: working directory {cwd:?} is not absolute",
            config.id
        )));
    }

    let user = match config.user {
        Some(user) => user,
        None if defaults.user.is_empty() => ProcessUser::default(),
        None => ProcessUser::parse(&defaults.user).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "{}: the image's user {:?} is not a numeric uid[:gid]",
                config.id, defaults.user
            ))
        })?,
    };
    let mut mounts = default_mounts();
    for m in sorted_by_depth(&config.mounts) {
        if !m.destination.starts_with('/') || !m.source.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "{}: bind mount {} -> {:?} needs absolute paths",
                config.id,
                m.source.display(),
                m.destination
            )));
        }
        let access = if m.read_only { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "rprivate", access],
        }));
    }

    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
    });
    if let Some(memory) = config.memory {
        let bytes = i64::try_from(memory.units_ceil()).map_err(|_| {
            Error::InvalidConfig(format!("{}: memory {memory} too large", config.id))
        })?;
        if bytes <= 0 {
            return Err(Error::InvalidConfig(format!(
                "{}: memory limit must be positive",
                config.id
            )));
        }
        resources["memory"] = json!({"limit": bytes});
    }
    if let Some(cpu) = config.cpu {
        let millis = u64::try_from(cpu.millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Err(Error::InvalidConfig(format!(
                "{}: cpu limit must be positive",
                config.id
            )));
        }
        let quota = millis.saturating_mul(CPU_PERIOD_US) / 1000;
        // Kubernetes' mapping: 1 CPU = 1024 shares, at least 2.
        let shares = (millis.saturating_mul(1024) / 1000).max(2);
        resources["cpu"] = json!({
            "shares": shares,
            "quota": i64::try_from(quota.max(1000)).unwrap_or(i64::MAX),
            "period": CPU_PERIOD_US,
        });
    }
    if let Some(pids) = config.pids_limit {
        resources["pids"] = json!({"limit": pids});
    }

    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": user.uid, "gid": user.gid},
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "",
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": cgroup_path(&config.id),
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "network"},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }))
}

/// The kernel file systems every container gets.
fn default_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ]
}

/// Parents before children (fewer path components first), so a volume mounted below
/// another one is not hidden by it; the given order otherwise.
fn sorted_by_depth(mounts: &[BindMount]) -> Vec<&BindMount> {
    let mut sorted: Vec<&BindMount> = mounts.iter().collect();
    sorted.sort_by_key(|m| {
        m.destination
            .split('/')
            .filter(|part| !part.is_empty())
            .count()
    });
    sorted
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
                parent: image.chain_id.clone(),
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
        Ok(response) => Some(ExitStatus {
            code: response.into_inner().exit_status,
            oom_killed,
        }),
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
    use crate::image::ImageDefaults;

    fn busybox() -> ImportedImage {
        ImportedImage {
            name: "hypermesh.local/busybox:latest".into(),
            manifest: "sha256:00".into(),
            chain_id: "sha256:11".into(),
            config: ImageDefaults {
                entrypoint: vec![],
                cmd: vec!["/bin/sh".into()],
                env: vec!["PATH=/bin".into(), "MODE=image".into()],
                working_dir: "/".into(),
                user: String::new(),
            },
        }
    }

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "c1".into(),
            image: "hypermesh.local/busybox:latest".into(),
            log: LogSink {
                logger: "/usr/bin/hm-logger".into(),
                file: "/tmp/hm-test/0.log".into(),
                max_bytes: 1024,
                max_files: 2,
            },
            ..Default::default()
        }
    }

    #[test]
    fn image_cmd_is_the_default_and_command_replaces_it() {
        let spec = runtime_spec(&config(), &busybox()).expect("spec");
        assert_eq!(spec["process"]["args"], json!(["/bin/sh"]));
        let mut c = config();
        c.command = vec!["/bin/echo".into()];
        c.args = vec!["hi".into()];
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(spec["process"]["args"], json!(["/bin/echo", "hi"]));
        let mut c = config();
        c.args = vec!["-c".into(), "true".into()];
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(spec["process"]["args"], json!(["-c", "true"]));
    }

    #[test]
    fn env_overrides_the_image_and_path_is_kept() {
        let mut c = config();
        c.env = vec![("MODE".into(), "prod".into()), ("X".into(), "1".into())];
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(
            spec["process"]["env"],
            json!(["PATH=/bin", "MODE=prod", "X=1"])
        );
        c.env = vec![("A=B".into(), "1".into())];
        assert!(matches!(
            runtime_spec(&c, &busybox()),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn limits_become_cgroup_resources() {
        let mut c = config();
        c.cpu = Some("250m".parse().expect("quantity"));
        c.memory = Some("128Mi".parse().expect("quantity"));
        c.pids_limit = Some(100);
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        let resources = &spec["linux"]["resources"];
        assert_eq!(resources["memory"]["limit"], json!(128 * 1024 * 1024));
        assert_eq!(resources["cpu"]["quota"], json!(25_000));
        assert_eq!(resources["cpu"]["period"], json!(100_000));
        assert_eq!(resources["cpu"]["shares"], json!(256));
        assert_eq!(resources["pids"]["limit"], json!(100));
        assert_eq!(spec["linux"]["cgroupsPath"], json!("/hypermesh/c1"));
    }

    #[test]
    fn relative_working_dir_and_no_command_are_rejected() {
        let mut c = config();
        c.working_dir = Some("tmp".into());
        assert!(runtime_spec(&c, &busybox()).is_err());
        let mut image = busybox();
        image.config.cmd.clear();
        assert!(runtime_spec(&config(), &image).is_err());
    }

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
    fn the_user_comes_from_the_config_then_the_image() {
        let spec = runtime_spec(&config(), &busybox()).expect("spec");
        assert_eq!(spec["process"]["user"], json!({"uid": 0, "gid": 0}));
        let mut image = busybox();
        image.config.user = "65534:65534".into();
        let spec = runtime_spec(&config(), &image).expect("spec");
        assert_eq!(spec["process"]["user"], json!({"uid": 65534, "gid": 65534}));
        let mut c = config();
        c.user = Some(ProcessUser { uid: 1000, gid: 7 });
        let spec = runtime_spec(&c, &image).expect("spec");
        assert_eq!(spec["process"]["user"], json!({"uid": 1000, "gid": 7}));
        image.config.user = "www-data".into();
        assert!(matches!(
            runtime_spec(&config(), &image),
            Err(Error::InvalidConfig(m)) if m.contains("www-data")
        ));
    }

    #[test]
    fn volumes_are_bind_mounts_parents_first() {
        let mut c = config();
        let bind = |source: &str, destination: &str, read_only| BindMount {
            source: source.into(),
            destination: destination.into(),
            read_only,
        };
        c.mounts = vec![
            bind("/host/b", "/data/cache", false),
            bind("/host/a", "/data", true),
        ];
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        let mounts = spec["mounts"].as_array().expect("mounts");
        let binds: Vec<&Value> = mounts.iter().filter(|m| m["type"] == "bind").collect();
        assert_eq!(
            binds,
            [
                &json!({"destination": "/data", "type": "bind", "source": "/host/a",
                        "options": ["rbind", "rprivate", "ro"]}),
                &json!({"destination": "/data/cache", "type": "bind", "source": "/host/b",
                        "options": ["rbind", "rprivate", "rw"]}),
            ]
        );
        assert!(mounts.iter().any(|m| m["destination"] == "/proc"));
        c.mounts = vec![bind("host", "/data", false)];
        assert!(runtime_spec(&c, &busybox()).is_err());
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
        let status = |code, oom_killed| ExitStatus { code, oom_killed };
        assert_eq!(status(0, false).reason(), "Completed");
        assert_eq!(status(1, false).reason(), "Error");
        assert_eq!(status(137, true).reason(), "OOMKilled");
    }
}
