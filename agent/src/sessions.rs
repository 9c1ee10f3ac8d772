//! Sessions the apiserver relays to this node: `hmctl logs`, `hmctl exec` and
//! `hmctl image import`. The agent dials out — it keeps `AgentTunnelService.Listen`
//! open and answers each `SessionOpen` by calling `Attach` — so this works for nodes
//! that accept no inbound connections. Logs come from the node's log files
//! ([`crate::logs`]), exec and imports from containerd ([`hypermesh_containers`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::v1::{
    AgentHello, ExecOutput, ExecStart, ImageImportResponse, ImageImportStart, LogChunk,
    LogsRequest, SessionFrame, SessionOpen, agent_tunnel_service_client::AgentTunnelServiceClient,
    exec_input, exec_output, session_frame, session_open,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::config::Config;
use crate::logs::reader::{self, LogOptions};
use hypermesh_containers::exec::{ExecProcess, ExecSession, ExecSpec};
use hypermesh_containers::{self as containers, ContainerdClient, image};
use hypermesh_runtime::backoff::Backoff;

use crate::metrics::{AgentMetrics, SessionLabels};
use crate::runtime_latency::{Operation, RuntimeLatency};

/// Waits between attempts to (re)open the Listen stream.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
/// How long a finished session waits for the apiserver to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Frames buffered towards the apiserver per session.
const FRAME_BUFFER: usize = 16;
/// gRPC message limit for session frames (image chunks are smaller).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

struct Ctx {
    tunnel: AgentTunnelServiceClient<Channel>,
    /// For the restart count in an Instance's status (which run is the previous).
    instances: hypermesh_api::Api<hypermesh_api::v1::Instance>,
    node_name: String,
    log_dir: PathBuf,
    import_dir: PathBuf,
    containerd_socket: PathBuf,
    /// Times exec starts and imports.
    latency: RuntimeLatency,
    /// Counts open sessions.
    metrics: Arc<AgentMetrics>,
}

impl Ctx {
    async fn containerd(&self) -> Result<ContainerdClient, Status> {
        ContainerdClient::connect(&self.containerd_socket)
            .await
            .map_err(|e| containerd_status(&self.node_name, e))
    }
}

/// A gRPC status for a containerd failure, naming the node.
fn containerd_status(node: &str, e: containers::Error) -> Status {
    match &e {
        containers::Error::Connect { .. } => {
            Status::unavailable(format!("node {node}: containerd is not reachable: {e}"))
        }
        containers::Error::Call { source, .. } => {
            Status::new(source.code(), format!("node {node}: {e}"))
        }
        containers::Error::InvalidImage { .. }
        | containers::Error::InvalidConfig(_)
        | containers::Error::DigestMismatch { .. }
        | containers::Error::SizeMismatch { .. }
        | containers::Error::UnsupportedDigest(_) => Status::invalid_argument(e.to_string()),
        containers::Error::ImageNotFound(_) => Status::not_found(e.to_string()),
        containers::Error::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        containers::Error::Io { .. } | containers::Error::Task(_) => {
            Status::internal(format!("node {node}: {e}"))
        }
    }
}

/// Keeps the Listen stream open (reconnecting with back-off) and serves each session
/// until `shutdown`.
pub async fn run(
    config: Config,
    channel: Channel,
    metrics: Arc<AgentMetrics>,
    shutdown: CancellationToken,
) {
    let tunnel = AgentTunnelServiceClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let ctx = Arc::new(Ctx {
        tunnel,
        instances: hypermesh_api::Api::new(channel.clone()),
        node_name: config.node_name.clone(),
        log_dir: config.log_dir(),
        import_dir: config.state_dir.join("imports"),
        containerd_socket: config.containerd_socket.clone(),
        latency: metrics.runtime.clone(),
        metrics,
    });
    let mut retry = RECONNECT.retry();
    loop {
        let hello = AgentHello {
            node_name: ctx.node_name.clone(),
        };
        match ctx.tunnel.clone().listen(hello).await {
            Ok(response) => {
                retry.reset();
                let mut opens = response.into_inner();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        open = opens.message() => match open {
                            Ok(Some(open)) => {
                                tokio::spawn(serve(ctx.clone(), open));
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "session listen stream ended");
                                break;
                            }
                        },
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot listen for sessions; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = retry.wait() => {}
        }
    }
}

/// Frames towards the apiserver.
type Outbound = mpsc::Sender<SessionFrame>;

async fn send(out: &Outbound, payload: session_frame::Payload) -> Result<(), Gone> {
    out.send(SessionFrame::of(payload)).await.map_err(|_| Gone)
}

/// The user (or the apiserver) went away.
struct Gone;

/// Attaches for one session and serves it; a failure becomes the session's error frame.
async fn serve(ctx: Arc<Ctx>, open: SessionOpen) {
    let (out, rx) = mpsc::channel(FRAME_BUFFER);
    let first = SessionFrame {
        session_id: open.session_id.clone(),
        payload: None,
    };
    if out.send(first).await.is_err() {
        return;
    }
    let mut inbound = match ctx.tunnel.clone().attach(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(e) => {
            tracing::warn!(session = %open.session_id, error = %e, "attaching a session failed");
            return;
        }
    };
    let uid = open.instance_uid;
    let kind = match &open.request {
        Some(session_open::Request::Logs(_)) => "logs",
        Some(session_open::Request::Exec(_)) => "exec",
        Some(session_open::Request::ImageImport(_)) => "image_import",
        None => "none",
    };
    let open_sessions = ctx
        .metrics
        .sessions
        .get_or_create(&SessionLabels { kind })
        .clone();
    open_sessions.inc();
    let result = match open.request {
        Some(session_open::Request::Logs(request)) => {
            logs(&ctx, &uid, request, &out, &mut inbound).await
        }
        Some(session_open::Request::Exec(start)) => {
            exec(&ctx, &uid, start, &out, &mut inbound).await
        }
        Some(session_open::Request::ImageImport(start)) => {
            import(&ctx, start, &out, &mut inbound).await
        }
        None => Err(Status::invalid_argument("session: no request")),
    };
    if let Err(status) = result {
        let _ = send(&out, session_frame::Payload::Error((&status).into())).await;
    }
    // Half-close, then let the apiserver end its side: dropping the response stream
    // first would reset the call and could discard the last frames sent.
    drop(out);
    let drain = async { while let Ok(Some(_)) = inbound.message().await {} };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    open_sessions.dec();
}

/// The restart count the Instance's status shows for the requested container, when
/// the Instance (with `uid`) can be read.
async fn restart_count(ctx: &Ctx, uid: &str, request: &LogsRequest) -> Option<u32> {
    let instance = ctx
        .instances
        .get(&request.namespace, &request.name)
        .await
        .ok()?;
    if instance.metadata.as_ref().is_none_or(|m| m.uid != uid) {
        return None;
    }
    instance
        .status?
        .container_statuses
        .into_iter()
        .find(|c| c.name == request.container)
        .map(|c| c.restart_count)
}

/// Streams one container run's log until it ends (or, following, until the run's
/// output ends or the user goes away).
async fn logs(
    ctx: &Ctx,
    uid: &str,
    request: LogsRequest,
    out: &Outbound,
    inbound: &mut Streaming<SessionFrame>,
) -> Result<(), Status> {
    let instance = format!("{}/{}", request.namespace, request.name);
    let dir = crate::logs::container_dir(
        &ctx.log_dir,
        &request.namespace,
        &request.name,
        uid,
        &request.container,
    );
    let runs = crate::logs::runs(&dir);
    let run = if request.previous {
        // The run before the restart count: during a back-off the newest log is the
        // run that just ended, which is the previous one (as kubelet's lastState).
        let restarts = restart_count(ctx, uid, &request).await;
        crate::logs::previous_run(&runs, restarts)
    } else {
        runs.last().copied()
    };
    let Some(run) = run else {
        return Err(Status::not_found(if request.previous {
            format!(
                "container {:?} of instance {instance} has no previous run (it has not restarted)",
                request.container
            )
        } else {
            format!(
                "container {:?} of instance {instance} has no log yet (it has not started)",
                request.container
            )
        }));
    };
    let options = LogOptions {
        tail: request
            .tail_lines
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        timestamps: request.timestamps,
        follow: request.follow && !request.previous,
    };
    let (chunks, mut rx) = mpsc::channel(FRAME_BUFFER);
    let reader = tokio::spawn(reader::stream(
        crate::logs::run_log(&dir, run),
        options,
        chunks,
    ));
    let result = loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(Ok(data)) => {
                    if send(out, session_frame::Payload::Logs(LogChunk { data })).await.is_err() {
                        break Ok(());
                    }
                }
                Some(Err(e)) => break Err(Status::internal(format!("reading the log of {instance}: {e}"))),
                None => break Ok(()),
            },
            message = inbound.message() => {
                if !matches!(message, Ok(Some(_))) {
                    break Ok(());
                }
            }
        }
    };
    reader.abort();
    result
}

/// Runs a command in a running container, relaying stdin, resizes and output; the last
/// frame carries the exit code.
async fn exec(
    ctx: &Ctx,
    uid: &str,
    start: ExecStart,
    out: &Outbound,
    inbound: &mut Streaming<SessionFrame>,
) -> Result<(), Status> {
    let client = ctx.containerd().await?;
    let id = crate::reconcile::container_id(&start.namespace, &start.name, uid, &start.container);
    let spec = ExecSpec {
        args: start.command.clone(),
        tty: start.tty,
        stdin: start.stdin,
    };
    let started = ctx
        .latency
        .time(Operation::Exec, ExecSession::start(&client, &id, &spec))
        .await;
    let mut session = match started {
        Ok(session) => session,
        Err(e) if exec_failure_code(&e.to_string()).is_some() => {
            // The command could not be started in the container: say why on its stderr
            // and exit as a shell would (127 not found, 126 not executable).
            let message = e.to_string();
            let code = exec_failure_code(&message).unwrap_or(126);
            let why = message
                .rsplit_once("exec: ")
                .map_or(message.as_str(), |(_, w)| w);
            let why = why.strip_suffix(": unknown").unwrap_or(why);
            for output in [
                exec_output::Output::Stderr(format!("exec: {why}\n").into_bytes()),
                exec_output::Output::ExitCode(code),
            ] {
                let frame = ExecOutput {
                    output: Some(output),
                };
                let _ = send(out, session_frame::Payload::ExecOutput(frame)).await;
            }
            return Ok(());
        }
        Err(e) if e.code() == Some(tonic::Code::NotFound) => {
            return Err(Status::failed_precondition(format!(
                "container {:?} of instance {}/{} is not running",
                start.container, start.namespace, start.name
            )));
        }
        Err(e) => return Err(containerd_status(&ctx.node_name, e)),
    };
    if let Some(size) = start.size.filter(|_| start.tty) {
        let _ = session.resize(&client, size.width, size.height).await;
    }
    let stdin = session.stdin.take();
    let process = session.process();
    // Input and output are pumped independently: a process that writes while it reads
    // (or a user slow to read) never stalls the other direction.
    let user_gone = {
        let input = pump_input(&client, &process, stdin, inbound);
        let output = pump_output(&mut session, out);
        tokio::pin!(input, output);
        let mut input_done = false;
        loop {
            tokio::select! {
                gone = &mut output => break gone,
                () = &mut input, if !input_done => input_done = true,
            }
        }
    };
    if user_gone {
        // Nobody reads the output any more: stop the process rather than leave it.
        let _ = session.kill(&client).await;
    }
    let code = session.wait(&client).await;
    session.remove(&client).await;
    let code = code.map_err(|e| containerd_status(&ctx.node_name, e))?;
    let _ = send(
        out,
        session_frame::Payload::ExecOutput(ExecOutput {
            output: Some(exec_output::Output::ExitCode(code)),
        }),
    )
    .await;
    Ok(())
}

/// The exit status a shell gives a command that could not start, from the runtime's
/// error: 127 when it does not exist, 126 when it is not executable; `None` for other
/// failures.
fn exec_failure_code(message: &str) -> Option<i32> {
    if !message.contains("exec failed") && !message.contains("exec: ") {
        return None;
    }
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        Some(127)
    } else if message.contains("permission denied") || message.contains("is a directory") {
        Some(126)
    } else {
        None
    }
}

/// A suffix that makes each upload's file name unique on this host.
fn upload_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static UPLOADS: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Relays the user's input frames: stdin bytes into the process (one frame at a time, so
/// at most one frame is buffered here), resizes, and the end of input. Returns when the
/// user ends the input or goes away.
async fn pump_input(
    client: &ContainerdClient,
    process: &ExecProcess,
    mut stdin: Option<tokio::net::unix::pipe::Sender>,
    inbound: &mut Streaming<SessionFrame>,
) {
    loop {
        let frame = inbound.message().await;
        let input = match frame {
            Ok(Some(SessionFrame {
                payload: Some(session_frame::Payload::ExecInput(input)),
                ..
            })) => input.input,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => None,
        };
        match input {
            Some(exec_input::Input::Stdin(data)) => {
                if let Some(pipe) = stdin.as_mut()
                    && pipe.write_all(&data).await.is_err()
                {
                    // The process closed its stdin: drop what else comes.
                    stdin = None;
                    let _ = process.close_stdin(client).await;
                }
            }
            Some(exec_input::Input::Resize(size)) => {
                let _ = process.resize(client, size.width, size.height).await;
            }
            Some(exec_input::Input::CloseStdin(_)) => {
                if stdin.take().is_some() {
                    let _ = process.close_stdin(client).await;
                }
            }
            Some(exec_input::Input::Start(_)) => {}
            None => {
                if stdin.take().is_some() {
                    let _ = process.close_stdin(client).await;
                }
                return;
            }
        }
    }
}

/// Relays the process's stdout and stderr (32 KiB reads, each sent before the next read,
/// into the session's bounded frame channel) until both end. True when the user went
/// away before that.
async fn pump_output(session: &mut ExecSession, out: &Outbound) -> bool {
    let (mut out_buf, mut err_buf) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let mut stdout_open = true;
    let mut stderr_open = session.stderr.is_some();
    while stdout_open || stderr_open {
        let output = tokio::select! {
            n = session.stdout.read(&mut out_buf), if stdout_open => match n {
                Ok(0) | Err(_) => {
                    stdout_open = false;
                    continue;
                }
                Ok(n) => exec_output::Output::Stdout(out_buf[..n].to_vec()),
            },
            n = read_optional(session.stderr.as_mut(), &mut err_buf), if stderr_open => match n {
                Ok(0) | Err(_) => {
                    stderr_open = false;
                    continue;
                }
                Ok(n) => exec_output::Output::Stderr(err_buf[..n].to_vec()),
            },
        };
        let frame = session_frame::Payload::ExecOutput(ExecOutput {
            output: Some(output),
        });
        if send(out, frame).await.is_err() {
            return true;
        }
    }
    false
}

async fn read_optional(
    pipe: Option<&mut tokio::net::unix::pipe::Receiver>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => Ok(0),
    }
}

/// Receives an OCI archive, imports it into containerd and answers with its images.
async fn import(
    ctx: &Ctx,
    start: ImageImportStart,
    out: &Outbound,
    inbound: &mut Streaming<SessionFrame>,
) -> Result<(), Status> {
    tokio::fs::create_dir_all(&ctx.import_dir)
        .await
        .map_err(|e| Status::internal(format!("{}: {e}", ctx.import_dir.display())))?;
    let path = ctx
        .import_dir
        .join(format!("upload-{}.tar", upload_suffix()));
    let result = async {
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
        let mut received = 0u64;
        loop {
            match inbound.message().await {
                Ok(Some(SessionFrame {
                    payload: Some(session_frame::Payload::ImageChunk(chunk)),
                    ..
                })) => {
                    received += chunk.len() as u64;
                    if received > image::MAX_ARCHIVE_BYTES {
                        return Err(Status::invalid_argument(format!(
                            "{}: larger than the {} bytes an image archive may have",
                            start.file_name,
                            image::MAX_ARCHIVE_BYTES
                        )));
                    }
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(Status::cancelled(format!("upload interrupted: {e}"))),
            }
        }
        file.flush()
            .await
            .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
        if start.size != 0 && received != start.size {
            return Err(Status::invalid_argument(format!(
                "{}: upload truncated: received {received} of {} bytes",
                start.file_name, start.size
            )));
        }
        let client = ctx.containerd().await?;
        let images = ctx
            .latency
            .time(Operation::Import, image::import_archive(&client, &path))
            .await
            .map_err(|e| match e {
                // The upload is not a readable archive: name the user's file, not ours.
                containers::Error::Io { source, .. } => Status::invalid_argument(format!(
                    "{}: not a readable OCI image archive: {source}",
                    start.file_name
                )),
                containers::Error::InvalidImage { detail, .. } => Status::invalid_argument(format!(
                    "{}: invalid OCI image archive: {detail}",
                    start.file_name
                )),
                e => containerd_status(&ctx.node_name, e),
            })?;
        for i in &images {
            tracing::info!(image = %i.name, archive = %start.file_name, "image imported on request");
        }
        Ok(images.into_iter().map(|i| i.name).collect::<Vec<_>>())
    }
    .await;
    let _ = tokio::fs::remove_file(&path).await;
    let images = result?;
    let _ = send(
        out,
        session_frame::Payload::ImageImported(ImageImportResponse { images }),
    )
    .await;
    Ok(())
}
