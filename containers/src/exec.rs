//! Extra processes inside a running container (`hmctl exec`, exec probes): containerd's
//! task Exec with the container's own process spec (environment, working directory,
//! user, capabilities) and new arguments, its stdio carried over FIFOs in a private
//! directory that is removed with the session.
//!
//! The output FIFOs are opened for reading *before* the process starts, on blocking
//! threads that complete once the runc shim opens the other end, so a reader sees the
//! real end of the stream (EOF) when the process and its output copy are done.

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest, containers_client::ContainersClient,
    tasks_client::TasksClient,
};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::{ContainerdClient, Error};

/// The `Any` type URL containerd expects for an OCI process spec (JSON-encoded).
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Where each session's FIFOs live (a tmpfs on systemd hosts; the shim must reach it).
const FIFO_ROOT: &str = "/run/hypermesh/exec";
/// The most output [`run_captured`] keeps (the rest is read and dropped).
pub const CAPTURE_LIMIT: usize = 64 * 1024;
const SIGKILL: u32 = 9;

/// What to run in the container.
#[derive(Clone, Debug, Default)]
pub struct ExecSpec {
    /// argv; the first element is looked up in the container's PATH.
    pub args: Vec<String>,
    /// Run on a pseudo-terminal (stdout and stderr merged into [`ExecSession::stdout`]).
    pub tty: bool,
    /// Give the process a stdin the caller writes to ([`ExecSession::stdin`]).
    pub stdin: bool,
}

/// A started exec process. Read `stdout`/`stderr` to their end, then [`ExecSession::wait`]
/// and [`ExecSession::remove`].
pub struct ExecSession {
    container_id: String,
    exec_id: String,
    /// The process's stdin, when asked for; dropping it closes the process's stdin.
    pub stdin: Option<pipe::Sender>,
    /// The process's stdout (with a tty: the terminal's output).
    pub stdout: pipe::Receiver,
    /// The process's stderr (none with a tty).
    pub stderr: Option<pipe::Receiver>,
    _fifos: FifoDir,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("container_id", &self.container_id)
            .field("exec_id", &self.exec_id)
            .finish()
    }
}

/// A directory of FIFOs, removed on drop.
struct FifoDir(PathBuf);

impl Drop for FifoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn make_fifo(path: &Path) -> Result<(), Error> {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Opens the read end of an output FIFO on a blocking thread; completes when the shim
/// opens the write end.
fn open_reader(path: PathBuf) -> tokio::task::JoinHandle<std::io::Result<pipe::Receiver>> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        pipe::Receiver::from_file(file)
    })
}

/// Unblocks a reader still waiting in `open` (the process never started) by opening and
/// closing the write end.
fn release_reader(path: &Path) {
    let _ = pipe::OpenOptions::new().open_sender(path);
}

/// The output FIFOs whose readers [`open_reader`] may still be waiting on: released when
/// dropped armed, i.e. when starting failed or was given up half-way (the caller's future
/// was dropped, e.g. a probe stopped because its container exited). A blocking thread
/// left in `open` would otherwise never end, and the runtime waits for it at shutdown.
struct WaitingReaders(Vec<PathBuf>);

impl WaitingReaders {
    /// Both readers have their FIFO open: nothing to release.
    fn disarm(&mut self) {
        self.0.clear();
    }
}

impl Drop for WaitingReaders {
    fn drop(&mut self) {
        for path in &self.0 {
            release_reader(path);
        }
    }
}

/// The container's process spec with `spec.args` (and the terminal flag) in place.
async fn process_spec(
    client: &ContainerdClient,
    container_id: &str,
    spec: &ExecSpec,
) -> Result<Vec<u8>, Error> {
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return Err(Error::InvalidConfig("exec: no command given".to_string()));
    }
    let container = ContainersClient::new(client.channel())
        .get(client.request(GetContainerRequest {
            id: container_id.to_string(),
        }))
        .await
        .map_err(Error::call("containers.get"))?
        .into_inner()
        .container
        .ok_or_else(|| Error::InvalidConfig(format!("{container_id}: no container")))?;
    let runtime_spec: Value = container
        .spec
        .as_ref()
        .and_then(|any| serde_json::from_slice(&any.value).ok())
        .ok_or_else(|| Error::InvalidConfig(format!("{container_id}: unreadable runtime spec")))?;
    let mut process = runtime_spec
        .get("process")
        .cloned()
        .ok_or_else(|| Error::InvalidConfig(format!("{container_id}: spec has no process")))?;
    process["args"] = Value::from(spec.args.clone());
    process["terminal"] = Value::from(spec.tty);
    if spec.tty
        && let Some(env) = process.get_mut("env").and_then(Value::as_array_mut)
        && !env
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
    {
        env.push(Value::from("TERM=xterm"));
    }
    serde_json::to_vec(&process)
        .map_err(|e| Error::InvalidConfig(format!("{container_id}: process spec: {e}")))
}

impl ExecSession {
    /// Starts `spec` in the running container `container_id`.
    pub async fn start(
        client: &ContainerdClient,
        container_id: &str,
        spec: &ExecSpec,
    ) -> Result<ExecSession, Error> {
        let process = process_spec(client, container_id, spec).await?;
        let exec_id = format!("exec-{}", crate::content::unique_suffix());
        let dir = Path::new(FIFO_ROOT).join(&exec_id);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let fifos = FifoDir(dir.clone());
        let stdin_path = dir.join("stdin");
        let stdout_path = dir.join("stdout");
        let stderr_path = dir.join("stderr");
        make_fifo(&stdout_path)?;
        if !spec.tty {
            make_fifo(&stderr_path)?;
        }
        let stdin = if spec.stdin {
            make_fifo(&stdin_path)?;
            // Read-write: opens without a reader yet; dropping it is the process's EOF.
            Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(&stdin_path)
                    .map_err(io_error(&stdin_path))?,
            )
        } else {
            None
        };
        let stdout = open_reader(stdout_path.clone());
        let stderr = (!spec.tty).then(|| open_reader(stderr_path.clone()));
        // Dropped before `fifos`, so the FIFOs still exist when it releases them.
        let mut waiting = WaitingReaders(if spec.tty {
            vec![stdout_path.clone()]
        } else {
            vec![stdout_path.clone(), stderr_path.clone()]
        });

        let path_of = |p: &Path, used: bool| {
            if used {
                p.display().to_string()
            } else {
                String::new()
            }
        };
        let mut tasks = TasksClient::new(client.channel());
        let started = async {
            tasks
                .exec(client.request(ExecProcessRequest {
                    container_id: container_id.to_string(),
                    stdin: path_of(&stdin_path, spec.stdin),
                    stdout: path_of(&stdout_path, true),
                    stderr: path_of(&stderr_path, !spec.tty),
                    terminal: spec.tty,
                    spec: Some(prost_types::Any {
                        type_url: PROCESS_TYPE_URL.to_string(),
                        value: process,
                    }),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(Error::call("tasks.exec"))?;
            tasks
                .start(client.request(StartRequest {
                    container_id: container_id.to_string(),
                    exec_id: exec_id.clone(),
                }))
                .await
                .map_err(Error::call("tasks.start (exec)"))?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = started {
            drop(waiting);
            let _ = tasks
                .delete_process(client.request(DeleteProcessRequest {
                    container_id: container_id.to_string(),
                    exec_id: exec_id.clone(),
                }))
                .await;
            return Err(e);
        }
        let stdout = stdout.await?.map_err(io_error(&stdout_path))?;
        let stderr = match stderr {
            Some(handle) => Some(handle.await?.map_err(io_error(&stderr_path))?),
            None => None,
        };
        waiting.disarm();
        Ok(ExecSession {
            container_id: container_id.to_string(),
            exec_id,
            stdin,
            stdout,
            stderr,
            _fifos: fifos,
        })
    }

    /// The process's handle, for resizing, ending stdin or killing it while other code
    /// owns the session's pipes.
    pub fn process(&self) -> ExecProcess {
        ExecProcess {
            container_id: self.container_id.clone(),
            exec_id: self.exec_id.clone(),
        }
    }

    /// Resizes the terminal (tty sessions only).
    pub async fn resize(
        &self,
        client: &ContainerdClient,
        width: u32,
        height: u32,
    ) -> Result<(), Error> {
        self.process().resize(client, width, height).await
    }

    /// See [`ExecProcess::close_stdin`].
    pub async fn close_stdin(&self, client: &ContainerdClient) -> Result<(), Error> {
        self.process().close_stdin(client).await
    }

    /// Kills the process (SIGKILL).
    pub async fn kill(&self, client: &ContainerdClient) -> Result<(), Error> {
        self.process().kill(client).await
    }

    /// Waits for the process to exit; returns its exit code (128 + signal when killed).
    pub async fn wait(&self, client: &ContainerdClient) -> Result<i32, Error> {
        let response = TasksClient::new(client.channel())
            .wait(client.request(WaitRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await
            .map_err(Error::call("tasks.wait (exec)"))?
            .into_inner();
        Ok(i32::try_from(response.exit_status).unwrap_or(i32::MAX))
    }

    /// Forgets the exited process in containerd and removes the FIFOs.
    pub async fn remove(self, client: &ContainerdClient) {
        let _ = TasksClient::new(client.channel())
            .delete_process(client.request(DeleteProcessRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            }))
            .await;
    }
}

/// An exec process as containerd knows it (container and exec ID), detached from the
/// session's pipes.
#[derive(Clone, Debug)]
pub struct ExecProcess {
    container_id: String,
    exec_id: String,
}

impl ExecProcess {
    /// Resizes the terminal (tty sessions only).
    pub async fn resize(
        &self,
        client: &ContainerdClient,
        width: u32,
        height: u32,
    ) -> Result<(), Error> {
        TasksClient::new(client.channel())
            .resize_pty(client.request(ResizePtyRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                width,
                height,
            }))
            .await
            .map_err(Error::call("tasks.resize_pty"))?;
        Ok(())
    }

    /// Ends the process's stdin (after the caller dropped its [`ExecSession::stdin`]):
    /// the shim keeps the FIFO open, so end of input is sent explicitly.
    pub async fn close_stdin(&self, client: &ContainerdClient) -> Result<(), Error> {
        TasksClient::new(client.channel())
            .close_io(client.request(CloseIoRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                stdin: true,
            }))
            .await
            .map_err(Error::call("tasks.close_io"))?;
        Ok(())
    }

    /// Kills the process (SIGKILL).
    pub async fn kill(&self, client: &ContainerdClient) -> Result<(), Error> {
        TasksClient::new(client.channel())
            .kill(client.request(KillRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                signal: SIGKILL,
                all: false,
            }))
            .await
            .map_err(Error::call("tasks.kill (exec)"))?;
        Ok(())
    }
}

/// How a captured exec ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// The exit code (128 + signal when killed, e.g. 137 after a timeout).
    pub exit_code: i32,
    /// stdout then stderr, at most [`CAPTURE_LIMIT`] bytes.
    pub output: Vec<u8>,
}

/// Runs `args` in the container without stdin and collects its output; kills it after
/// `timeout` (then fails with [`Error::Timeout`]).
pub async fn run_captured(
    client: &ContainerdClient,
    container_id: &str,
    args: &[String],
    timeout: Duration,
) -> Result<Captured, Error> {
    let spec = ExecSpec {
        args: args.to_vec(),
        tty: false,
        stdin: false,
    };
    let mut session = ExecSession::start(client, container_id, &spec).await?;
    let collect = async {
        // Both at once: a full stderr pipe must not stall the process behind stdout.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let stderr = async {
            if let Some(stderr) = session.stderr.as_mut() {
                read_capped(stderr, &mut err).await;
            }
        };
        tokio::join!(read_capped(&mut session.stdout, &mut out), stderr);
        let room = CAPTURE_LIMIT.saturating_sub(out.len());
        out.extend_from_slice(&err[..err.len().min(room)]);
        let code = session.wait(client).await;
        (out, code)
    };
    let result = tokio::time::timeout(timeout, collect).await;
    let result = match result {
        Ok((output, code)) => code.map(|exit_code| Captured { exit_code, output }),
        Err(_) => {
            let _ = session.kill(client).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), session.wait(client)).await;
            Err(Error::Timeout(timeout))
        }
    };
    session.remove(client).await;
    result
}

/// Reads `from` to its end, keeping at most [`CAPTURE_LIMIT`] bytes in `into`.
async fn read_capped(from: &mut pipe::Receiver, into: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = CAPTURE_LIMIT.saturating_sub(into.len());
                into.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
