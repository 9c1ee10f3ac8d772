//! Sessions between users and nodes (logs, exec, image import), relayed over
//! connections the agents open (see `session.proto`).
//!
//! Each agent keeps one `AgentTunnelService.Listen` stream; [`Sessions::open`] sends a
//! [`SessionOpen`] down it and waits for the agent's `Attach` call naming the session.
//! The attached streams are then piped to and from the user's call, so HTTP/2 flow
//! control applies per session end to end and a slow reader only slows itself.

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::{
    self, AgentHello, ExecInput, ExecOutput, ImageImportRequest, ImageImportResponse,
    ImageImportStart, LogChunk, LogsRequest, SessionFrame, SessionOpen, exec_input,
    image_import_request, session_frame, session_open,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::Operation;
use crate::call::Call;
use crate::caller::Caller;
use crate::registry::Registry;

pub mod broker;

use broker::Attached;
pub use broker::{BoxStream, Sessions};

/// The user-bound stream of an attached session: the payloads `pick` keeps, ending with
/// the agent's error frame as a status. `keep` lives as long as the stream (what must not
/// be dropped before the user is done).
fn relay<T: Send + 'static>(
    from_agent: Streaming<SessionFrame>,
    keep: impl Send + 'static,
    pick: fn(session_frame::Payload) -> Option<T>,
) -> BoxStream<T> {
    Box::pin(from_agent.filter_map(move |frame| {
        let _ = &keep;
        match frame {
            Err(status) => Some(Err(status)),
            Ok(f) => match f.payload? {
                session_frame::Payload::Error(e) => Some(Err(e.into())),
                payload => pick(payload).map(Ok),
            },
        }
    }))
}

/// The gRPC service agents call. A node identity opens only its own tunnel: the
/// node name comes from its certificate, never from the request.
#[derive(Clone)]
pub struct TunnelService {
    /// The node registry, for authorization.
    pub nodes: Registry<v1::Node>,
}

impl std::fmt::Debug for TunnelService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelService").finish_non_exhaustive()
    }
}

impl TunnelService {
    /// The node whose tunnel `caller` may open or attach to, given the name it sent.
    async fn tunnel_node(&self, caller: &Caller, sent: &str) -> Result<String, Status> {
        let node = match caller.node_name() {
            Some(own) if sent.is_empty() || sent == own => own.to_string(),
            Some(own) => {
                return Err(hypermesh_api::reason::status(
                    hypermesh_api::reason::Reason::Forbidden,
                    format!("node {own:?} cannot open the tunnel of node {sent:?}"),
                ));
            }
            None => sent.to_string(),
        };
        self.nodes
            .authorize(caller, Operation::Tunnel, "", &node)
            .await?;
        Ok(node)
    }
}

#[tonic::async_trait]
impl v1::agent_tunnel_service_server::AgentTunnelService for TunnelService {
    type ListenStream = BoxStream<SessionOpen>;

    async fn listen(
        &self,
        request: Request<AgentHello>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        crate::call!(&self.nodes, "Listen", request, |caller, hello| async {
            let sent = hello.node_name;
            if sent.is_empty() && caller.node_name().is_none() {
                return Err(Status::invalid_argument("node_name: required"));
            }
            let node = self.tunnel_node(&caller, &sent).await?;
            Ok(self.nodes.sessions().listen(node))
        })
    }

    type AttachStream = BoxStream<SessionFrame>;

    async fn attach(
        &self,
        request: Request<Streaming<SessionFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        crate::call!(&self.nodes, "Attach", request, |caller, frames| async {
            if let Some(node) = caller.node_name() {
                self.tunnel_node(&caller, node).await?;
            } else {
                self.nodes
                    .authorize(&caller, Operation::Tunnel, "", "")
                    .await?;
            }
            self.nodes
                .sessions()
                .attach(caller.node_name(), frames)
                .await
        })
    }
}

/// The Instance a user request names, once `caller` may do `operation` on it: fills
/// in `namespace` (`default` when empty) and `container` (the only one when empty) and
/// returns the bound node and the uid.
async fn target(
    instances: &Registry<v1::Instance>,
    caller: &Caller,
    operation: Operation,
    namespace: &mut String,
    name: &str,
    container: &mut String,
) -> Result<(String, String), Status> {
    if namespace.is_empty() {
        *namespace = "default".to_string();
    }
    instances
        .authorize(caller, operation, namespace, name)
        .await?;
    let instance = instances.read(namespace, name).await?;
    let spec = instance.spec.unwrap_or_default();
    let meta = instance.metadata.unwrap_or_default();
    if spec.node_name.is_empty() {
        return Err(Status::failed_precondition(format!(
            "instance {namespace}/{name} is not scheduled to a node yet"
        )));
    }
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let resolved = match (container.as_str(), names.as_slice()) {
        ("", [only]) => only.to_string(),
        ("", _) => {
            return Err(Status::invalid_argument(format!(
                "container: instance {namespace}/{name} has several containers; choose one of {}",
                names.join(", ")
            )));
        }
        (c, _) if names.contains(&c) => c.to_string(),
        (c, _) => {
            return Err(Status::not_found(format!(
                "container {c:?} not found in instance {namespace}/{name} (containers: {})",
                names.join(", ")
            )));
        }
    };
    *container = resolved;
    Ok((spec.node_name, meta.uid))
}

/// `InstanceService.Logs`.
pub async fn logs(
    instances: &Registry<v1::Instance>,
    caller: &Caller,
    sessions: &Sessions,
    mut request: LogsRequest,
) -> Result<BoxStream<LogChunk>, Status> {
    let (node, uid) = target(
        instances,
        caller,
        Operation::Logs,
        &mut request.namespace,
        &request.name,
        &mut request.container,
    )
    .await?;
    let attached = sessions
        .open(&node, &uid, session_open::Request::Logs(request))
        .await?;
    // Keep the agent-bound sender alive for the whole stream: dropping it would end the
    // agent's Attach response early.
    Ok(relay(
        attached.from_agent,
        attached.to_agent,
        |payload| match payload {
            session_frame::Payload::Logs(chunk) => Some(chunk),
            _ => None,
        },
    ))
}

/// `InstanceService.Exec`.
pub async fn exec(
    instances: &Registry<v1::Instance>,
    caller: &Caller,
    sessions: &Sessions,
    mut input: Streaming<ExecInput>,
) -> Result<BoxStream<ExecOutput>, Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("exec: no start message"))?;
    let Some(exec_input::Input::Start(mut start)) = first.input else {
        return Err(Status::invalid_argument(
            "exec: the first message must be `start`",
        ));
    };
    if start.command.is_empty() || start.command[0].is_empty() {
        return Err(Status::invalid_argument("command: required"));
    }
    let (node, uid) = target(
        instances,
        caller,
        Operation::Exec,
        &mut start.namespace,
        &start.name,
        &mut start.container,
    )
    .await?;
    let attached = sessions
        .open(&node, &uid, session_open::Request::Exec(start))
        .await?;
    // User → agent: stdin, resizes, close; until the output stream below is dropped
    // (the agent finished or the user went away), which ends the agent's inbound side.
    let to_agent = attached.to_agent;
    let output_done = tokio_util::sync::CancellationToken::new();
    let relay_done = output_done.clone();
    tokio::spawn(async move {
        let relay = async {
            while let Some(Ok(message)) = input.next().await {
                let frame = SessionFrame::of(session_frame::Payload::ExecInput(message));
                if to_agent.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
            // The user's stream ended: the process sees end of input; its output still
            // flows until it exits.
            let close = SessionFrame::of(session_frame::Payload::ExecInput(ExecInput {
                input: Some(exec_input::Input::CloseStdin(true)),
            }));
            let _ = to_agent.send(Ok(close)).await;
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = relay => {}
            _ = relay_done.cancelled() => {}
        }
    });
    Ok(relay(
        attached.from_agent,
        output_done.drop_guard(),
        |payload| match payload {
            session_frame::Payload::ExecOutput(out) => Some(out),
            _ => None,
        },
    ))
}

/// `NodeService.ImportImage`.
pub async fn import_image(
    nodes: &Registry<v1::Node>,
    caller: &Caller,
    sessions: &Sessions,
    mut input: Streaming<ImageImportRequest>,
) -> Result<ImageImportResponse, Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("import: no start message"))?;
    let Some(image_import_request::Part::Start(start)) = first.part else {
        return Err(Status::invalid_argument(
            "import: the first message must be `start`",
        ));
    };
    let ImageImportStart { node_name, .. } = &start;
    if node_name.is_empty() {
        return Err(Status::invalid_argument("node_name: required"));
    }
    nodes
        .authorize(caller, Operation::ImportImage, "", node_name)
        .await?;
    nodes.read("", node_name).await?;
    let node = node_name.clone();
    let limit = nodes.max_image_upload_bytes();
    let Attached {
        mut from_agent,
        to_agent,
    } = sessions
        .open(&node, "", session_open::Request::ImageImport(start))
        .await?;
    let too_large = status(
        Reason::TooLarge,
        format!(
            "import to node {node:?}: the image archive exceeds {limit} bytes, the largest upload a node accepts (hm-apiserver --max-image-upload-mib)"
        ),
    );
    let upload = async move {
        let mut uploaded: u64 = 0;
        while let Some(message) = input.next().await {
            let Some(image_import_request::Part::Chunk(chunk)) = message?.part else {
                return Err(Status::invalid_argument(
                    "import: only chunks may follow `start`",
                ));
            };
            uploaded = uploaded.saturating_add(chunk.len() as u64);
            if uploaded > limit {
                // The agent sees its stream fail, not end: it imports nothing.
                let _ = to_agent.send(Err(too_large.clone())).await;
                return Err(too_large);
            }
            let frame = SessionFrame::of(session_frame::Payload::ImageChunk(chunk));
            if to_agent.send(Ok(frame)).await.is_err() {
                break;
            }
        }
        // End of the archive: the agent sees its inbound stream end.
        drop(to_agent);
        Ok(())
    };
    let outcome = async {
        while let Some(frame) = from_agent.next().await {
            match frame?.payload {
                Some(session_frame::Payload::ImageImported(done)) => return Ok(done),
                Some(session_frame::Payload::Error(e)) => return Err(e.into()),
                _ => {}
            }
        }
        Err(Status::unavailable(format!(
            "node {node:?}: the agent ended the import without an answer"
        )))
    };
    tokio::pin!(upload, outcome);
    tokio::select! {
        uploaded = &mut upload => match uploaded {
            // An upload that failed (too large, broken) ends the import at once.
            Err(e) => Err(e),
            Ok(()) => outcome.await,
        },
        done = &mut outcome => done,
    }
}
