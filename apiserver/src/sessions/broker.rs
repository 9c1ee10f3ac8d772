//! The session broker: which agents are connected (one Listen stream each, a newer one
//! replacing an older one) and which sessions wait for their agent to attach. Knows
//! nothing of objects or callers: `super` resolves and authorizes requests first.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use futures::Stream;
use hypermesh_api::v1::{SessionFrame, SessionOpen, session_open};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// How long the agent has to attach after being asked to open a session.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(15);
/// Frames buffered per direction of a session.
const FRAME_BUFFER: usize = 16;

/// A boxed response stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The agent's half of an attached session.
pub(super) struct Attached {
    pub(super) from_agent: Streaming<SessionFrame>,
    pub(super) to_agent: mpsc::Sender<Result<SessionFrame, Status>>,
}

/// One agent's Listen stream.
struct AgentLink {
    /// Distinguishes a replaced link from its successor on removal.
    generation: u64,
    opens: mpsc::Sender<Result<SessionOpen, Status>>,
}

/// A session waiting for its agent: the node it was opened on and where to hand
/// the agent's streams.
struct Waiting {
    node: String,
    attach: oneshot::Sender<Attached>,
}

/// The broker: connected agents and sessions waiting for their agent to attach.
#[derive(Default)]
pub struct Sessions {
    agents: Mutex<HashMap<String, AgentLink>>,
    waiting: Mutex<HashMap<String, Waiting>>,
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self
            .agents
            .lock()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Sessions").field("agents", &nodes).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    /// Registers `node`'s Listen stream (replacing an older one); the stream ends when
    /// the agent goes away or a newer Listen replaces it.
    pub(super) fn listen(self: &std::sync::Arc<Self>, node: String) -> BoxStream<SessionOpen> {
        let (tx, rx) = mpsc::channel(FRAME_BUFFER);
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.agents).insert(
            node.clone(),
            AgentLink {
                generation,
                opens: tx.clone(),
            },
        );
        tracing::info!(node = %node, "agent connected for sessions");
        // Forget the link once the agent's stream is gone.
        let this = self.clone();
        tokio::spawn(async move {
            tx.closed().await;
            let mut agents = lock(&this.agents);
            if agents
                .get(&node)
                .is_some_and(|l| l.generation == generation)
            {
                agents.remove(&node);
                tracing::info!(node = %node, "agent disconnected from sessions");
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    /// Asks `node`'s agent to open a session and waits until it attaches.
    pub(super) async fn open(
        &self,
        node: &str,
        instance_uid: &str,
        request: session_open::Request,
    ) -> Result<Attached, Status> {
        let session_id = crate::object::uid();
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(
            session_id.clone(),
            Waiting {
                node: node.to_string(),
                attach: tx,
            },
        );
        let opens = lock(&self.agents).get(node).map(|l| l.opens.clone());
        let result = async {
            let opens = opens.ok_or_else(|| {
                Status::unavailable(format!(
                    "node {node:?} has no agent connected: check that hm-agent runs there \
                     (`hmctl get node {node}`)"
                ))
            })?;
            opens
                .send(Ok(SessionOpen {
                    session_id: session_id.clone(),
                    instance_uid: instance_uid.to_string(),
                    request: Some(request),
                }))
                .await
                .map_err(|_| Status::unavailable(format!("node {node:?}: agent disconnected")))?;
            match tokio::time::timeout(ATTACH_TIMEOUT, rx).await {
                Ok(Ok(attached)) => Ok(attached),
                _ => Err(Status::unavailable(format!(
                    "node {node:?}: the agent did not answer within {}s",
                    ATTACH_TIMEOUT.as_secs()
                ))),
            }
        }
        .await;
        lock(&self.waiting).remove(&session_id);
        result
    }

    /// The agent's Attach: pairs its streams with the waiting session. `node` is the
    /// attaching node when the caller is a node identity: a session opened on another
    /// node is refused (and stays waiting for the right one).
    pub(super) async fn attach(
        &self,
        node: Option<&str>,
        mut from_agent: Streaming<SessionFrame>,
    ) -> Result<BoxStream<SessionFrame>, Status> {
        let first = from_agent
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("attach: no first frame"))?;
        let waiting = {
            let mut waiting = lock(&self.waiting);
            match waiting.get(&first.session_id) {
                Some(w) if node.is_some_and(|n| n != w.node) => {
                    return Err(Status::permission_denied(format!(
                        "attach: session {:?} belongs to another node",
                        first.session_id
                    )));
                }
                Some(_) => waiting.remove(&first.session_id),
                None => None,
            }
        };
        let waiting = waiting
            .ok_or_else(|| {
                Status::not_found(format!(
                    "attach: session {:?} is unknown or expired",
                    first.session_id
                ))
            })?
            .attach;
        let (to_agent, rx) = mpsc::channel(FRAME_BUFFER);
        waiting
            .send(Attached {
                from_agent,
                to_agent,
            })
            .map_err(|_| Status::cancelled("attach: the user went away"))?;
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}
