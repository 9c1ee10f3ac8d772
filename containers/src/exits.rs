//! Task exits from containerd's event stream: one subscription to `/tasks/exit` in the
//! agent's namespace serves every container waiting for its task to end, instead of one
//! long `tasks.Wait` call per task.
//!
//! An exit event is only a hint. For a container someone waits on, the task is read
//! (`tasks.Get`): a STOPPED task ends the waits with its exit status, and with the OOM
//! count of its cgroup, read before anybody deletes the task. No exit can slip through:
//! - a waiter registers first and then reads the task once itself, so an exit before it
//!   registered is seen by that read and one after it by the event;
//! - containerd publishes no event for an exit while the subscription is down (containerd
//!   restarting), so every time the subscription becomes live again every waiter's task
//!   is read again.
//!
//! containerd sends a stream's headers only with its first event, so a subscription is
//! known to be live when a marker event the agent publishes itself comes back through it.
//! A read of a task ends only the waits registered before the read started, so a late
//! answer about an earlier run of a container never ends the wait of its next run.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::events::TaskExit;
use containerd_client::services::v1::{
    GetRequest, PublishRequest, SubscribeRequest, events_client::EventsClient,
    tasks_client::TasksClient,
};
use containerd_client::types::Envelope;
use containerd_client::types::v1::Status;
use prost::Message;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::container::{self, ExitStatus};
use crate::{ContainerdClient, Error};

/// The topic containerd publishes task exits on.
const EXIT_TOPIC: &str = "/tasks/exit";
/// The topic of the marker that shows a subscription is live.
const MARKER_TOPIC: &str = "/hypermesh/exits/subscribed";
/// The marker's `Any` type (it carries the subscription's nonce as its value).
const MARKER_TYPE: &str = "hypermesh.io/exits/SubscriptionMarker";
/// How often the marker is published until it comes back.
const MARKER_EVERY: Duration = Duration::from_millis(200);
/// First wait before subscribing again after the subscription broke.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(250);
/// Longest wait between subscription attempts while containerd is away.
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);
/// Wait before reading a task again after containerd answered with an error.
const REREAD: Duration = Duration::from_secs(1);

/// How waiting for a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEnd {
    /// The task's init process exited (the task is kept until it is deleted).
    Exited(ExitStatus),
    /// The container has no task: never created, or already deleted.
    Missing,
}

/// Why the subscription ended (it is re-established after a pause).
#[derive(Debug, thiserror::Error)]
enum SubscriptionError {
    /// Subscribing, publishing the marker or reading the stream failed.
    #[error(transparent)]
    Runtime(#[from] Error),
    /// containerd ended the stream.
    #[error("containerd closed the event stream")]
    Closed,
}

/// Waits for task exits, for any number of containers, over one event subscription.
/// Clones share the subscription.
#[derive(Clone)]
pub struct TaskExits {
    shared: Arc<Shared>,
}

struct Shared {
    client: ContainerdClient,
    waiters: Waiters,
    /// Numbers the subscriptions, for their markers.
    subscriptions: AtomicU64,
}

/// Container id → the waits on its task, each with a token; tokens grow, so "registered
/// before `t`" is `token < t`.
#[derive(Default)]
struct Waiters {
    by_id: Mutex<HashMap<String, Vec<Waiter>>>,
    next_token: AtomicU64,
}

struct Waiter {
    token: u64,
    done: oneshot::Sender<TaskEnd>,
}

/// Removes a waiter that stopped waiting (its future was dropped).
struct Registration<'a> {
    waiters: &'a Waiters,
    id: &'a str,
    token: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock();
        if let Some(list) = waiters.get_mut(self.id) {
            list.retain(|w| w.token != self.token);
            if list.is_empty() {
                waiters.remove(self.id);
            }
        }
    }
}

impl TaskExits {
    /// Subscribes to containerd's task exits (and keeps resubscribing) until
    /// `shutdown`; waits work at once, whether or not the subscription is live yet.
    pub fn start(client: ContainerdClient, shutdown: CancellationToken) -> TaskExits {
        let shared = Arc::new(Shared {
            client,
            waiters: Waiters::default(),
            subscriptions: AtomicU64::new(0),
        });
        tokio::spawn(subscribe_forever(shared.clone(), shutdown));
        TaskExits { shared }
    }

    /// Waits until the task of container `id` has exited (at once if it already has).
    /// While containerd is unreachable it keeps waiting: a task that exited meanwhile is
    /// found when containerd answers again.
    pub async fn wait(&self, id: &str) -> TaskEnd {
        loop {
            let (token, done) = self.shared.waiters.register(id);
            let _registration = Registration {
                waiters: &self.shared.waiters,
                id,
                token,
            };
            self.shared.read(id).await;
            if let Ok(end) = done.await {
                return end;
            }
        }
    }

    /// How many waits are pending (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.shared.waiters.lock().values().map(Vec::len).sum()
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Waiter>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, id: &str) -> (u64, oneshot::Receiver<TaskEnd>) {
        let (done, receiver) = oneshot::channel();
        let mut waiters = self.lock();
        let token = self.next_token.fetch_add(1, Ordering::SeqCst);
        waiters
            .entry(id.to_string())
            .or_default()
            .push(Waiter { token, done });
        (token, receiver)
    }

    /// Whether a waiter registered before `before` waits on `id`.
    fn awaited(&self, id: &str, before: u64) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|list| list.iter().any(|w| w.token < before))
    }

    /// Ends the waits on `id` registered before `before` with `end`.
    fn finish(&self, id: &str, before: u64, end: TaskEnd) {
        let mut waiters = self.lock();
        let Some(list) = waiters.get_mut(id) else {
            return;
        };
        let (ended, kept): (Vec<Waiter>, Vec<Waiter>) =
            list.drain(..).partition(|w| w.token < before);
        *list = kept;
        if list.is_empty() {
            waiters.remove(id);
        }
        drop(waiters);
        for w in ended {
            let _ = w.done.send(end);
        }
    }

    /// The token the next waiter gets: waiters registered so far are before it.
    fn next(&self) -> u64 {
        self.next_token.load(Ordering::SeqCst)
    }

    fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

impl Shared {
    /// Reads the task of `id` and ends the waits registered so far if it has exited.
    /// While containerd is unreachable it gives up: the next live subscription reads
    /// every waited task again.
    async fn read(&self, id: &str) {
        let before = self.waiters.next();
        while self.waiters.awaited(id, before) {
            match task_end(&self.client, id).await {
                Ok(Some(end)) => return self.waiters.finish(id, before, end),
                Ok(None) => return,
                Err(e) if e.is_unreachable() => return,
                Err(e) => {
                    tracing::warn!(container = id, error = %e, "reading an exited task; retrying");
                    tokio::time::sleep(REREAD).await;
                }
            }
        }
    }

    /// Reads every waited task again (after the subscription became live).
    fn read_all(self: &Arc<Self>) {
        for id in self.waiters.ids() {
            let shared = self.clone();
            tokio::spawn(async move { shared.read(&id).await });
        }
    }

    /// Subscribes, waits until the subscription is live, reads every waited task, then
    /// follows the exits until the stream breaks.
    async fn follow(self: &Arc<Self>) -> SubscriptionError {
        let namespace = self.client.namespace().to_string();
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            self.subscriptions.fetch_add(1, Ordering::SeqCst)
        );
        let filters = vec![
            format!("topic==\"{EXIT_TOPIC}\",namespace==\"{namespace}\""),
            format!("topic==\"{MARKER_TOPIC}\",namespace==\"{namespace}\""),
        ];
        let mut events = EventsClient::new(self.client.channel());
        let mut marker = tokio::time::interval(MARKER_EVERY);
        let mut subscribe =
            pin!(events.subscribe(self.client.request(SubscribeRequest { filters })));
        // The response (its headers) arrives with the first event: publish markers
        // until one does.
        let mut stream = loop {
            tokio::select! {
                response = &mut subscribe => match response {
                    Ok(response) => break response.into_inner(),
                    Err(status) => return Error::call("events.subscribe")(status).into(),
                },
                _ = marker.tick() => {
                    if let Err(e) = self.publish_marker(&nonce).await {
                        return e.into();
                    }
                }
            }
        };
        let mut live = false;
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = marker.tick(), if !live => {
                    if let Err(e) = self.publish_marker(&nonce).await {
                        return e.into();
                    }
                    continue;
                }
            };
            let envelope = match message {
                Ok(Some(envelope)) => envelope,
                Ok(None) => return SubscriptionError::Closed,
                Err(status) => return Error::call("events.subscribe")(status).into(),
            };
            match classify(&envelope, &namespace, &nonce) {
                Some(Seen::Marker) if !live => {
                    live = true;
                    tracing::debug!("task exit subscription live");
                    self.read_all();
                }
                // Exits of containers nobody waits on (being stopped) need no read.
                Some(Seen::Exit(id)) if self.waiters.awaited(&id, u64::MAX) => {
                    let shared = self.clone();
                    tokio::spawn(async move { shared.read(&id).await });
                }
                _ => {}
            }
        }
    }

    /// Publishes this subscription's marker in the agent's namespace.
    async fn publish_marker(&self, nonce: &str) -> Result<(), Error> {
        EventsClient::new(self.client.channel())
            .publish(self.client.request(PublishRequest {
                topic: MARKER_TOPIC.to_string(),
                event: Some(prost_types::Any {
                    type_url: MARKER_TYPE.to_string(),
                    value: nonce.as_bytes().to_vec(),
                }),
            }))
            .await
            .map_err(Error::call("events.publish"))?;
        Ok(())
    }
}

/// Keeps a subscription up until `shutdown`, pausing (longer while it keeps failing)
/// between attempts.
async fn subscribe_forever(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut delay = RESUBSCRIBE_MIN;
    loop {
        let started = tokio::time::Instant::now();
        let ended = tokio::select! {
            _ = shutdown.cancelled() => return,
            ended = shared.follow() => ended,
        };
        // A subscription that lasted a while was healthy: retry quickly.
        if started.elapsed() > RESUBSCRIBE_MAX * 2 {
            delay = RESUBSCRIBE_MIN;
        }
        match &ended {
            // containerd stopped or restarts: expected, quiet.
            SubscriptionError::Runtime(e) if e.is_unreachable() => {
                tracing::debug!(error = %ended, retry_in = ?delay, "task exit subscription ended; resubscribing");
            }
            _ => {
                tracing::warn!(error = %ended, retry_in = ?delay, "task exit subscription ended; resubscribing");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RESUBSCRIBE_MAX);
    }
}

/// What an event of the subscription says.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The init process of container `.0` exited.
    Exit(String),
    /// This subscription's marker came back: it is live.
    Marker,
}

/// Recognises an init process exit in `namespace`, or this subscription's marker.
fn classify(envelope: &Envelope, namespace: &str, nonce: &str) -> Option<Seen> {
    if envelope.namespace != namespace {
        return None;
    }
    let event = envelope.event.as_ref()?;
    match envelope.topic.as_str() {
        EXIT_TOPIC => {
            let exit = TaskExit::decode(event.value.as_slice()).ok()?;
            // Exec'd processes exit under their own id; the init process under the
            // container's.
            (exit.id.is_empty() || exit.id == exit.container_id)
                .then_some(Seen::Exit(exit.container_id))
        }
        MARKER_TOPIC => (event.value == nonce.as_bytes()).then_some(Seen::Marker),
        _ => None,
    }
}

/// The task of `id`: ended (exited, with its status; or missing) or still there.
async fn task_end(client: &ContainerdClient, id: &str) -> Result<Option<TaskEnd>, Error> {
    let response = TasksClient::new(client.channel())
        .get(client.request(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await;
    let process = match response {
        Ok(response) => response.into_inner().process,
        Err(status) if status.code() == tonic::Code::NotFound => return Ok(Some(TaskEnd::Missing)),
        Err(status) => return Err(Error::call("tasks.get")(status)),
    };
    Ok(process
        .filter(|p| p.status == Status::Stopped as i32)
        .map(|p| {
            TaskEnd::Exited(ExitStatus {
                code: p.exit_status,
                oom_killed: container::oom_kills(id) > 0,
                exited_at: container::exit_time(p.exited_at),
            })
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(namespace: &str, topic: &str, value: Vec<u8>) -> Envelope {
        Envelope {
            timestamp: None,
            namespace: namespace.into(),
            topic: topic.into(),
            event: Some(prost_types::Any {
                type_url: "containerd.events.TaskExit".into(),
                value,
            }),
        }
    }

    fn exit(container: &str, id: &str) -> Vec<u8> {
        TaskExit {
            container_id: container.into(),
            id: id.into(),
            pid: 42,
            exit_status: 3,
            exited_at: None,
        }
        .encode_to_vec()
    }

    #[test]
    fn init_exits_in_our_namespace_are_seen() {
        let seen = classify(
            &envelope("hypermesh", EXIT_TOPIC, exit("c1", "c1")),
            "hypermesh",
            "n",
        );
        assert_eq!(seen, Some(Seen::Exit("c1".into())));
        // An exec'd process of c1 exiting does not end c1's task.
        let exec = classify(
            &envelope("hypermesh", EXIT_TOPIC, exit("c1", "exec-7")),
            "hypermesh",
            "n",
        );
        assert_eq!(exec, None);
        let other = classify(
            &envelope("k8s.io", EXIT_TOPIC, exit("c1", "c1")),
            "hypermesh",
            "n",
        );
        assert_eq!(other, None);
    }

    #[test]
    fn only_our_own_marker_shows_the_subscription_live() {
        let ours = envelope("hypermesh", MARKER_TOPIC, b"7-1".to_vec());
        assert_eq!(classify(&ours, "hypermesh", "7-1"), Some(Seen::Marker));
        assert_eq!(classify(&ours, "hypermesh", "7-2"), None);
    }

    #[test]
    fn a_read_ends_only_the_waits_registered_before_it() {
        let waiters = Waiters::default();
        let (_, mut first) = waiters.register("c1");
        let before = waiters.next();
        let (second_token, mut second) = waiters.register("c1");
        let end = TaskEnd::Exited(ExitStatus {
            code: 1,
            oom_killed: false,
            exited_at: None,
        });
        waiters.finish("c1", before, end);
        assert_eq!(first.try_recv().ok(), Some(end));
        assert!(second.try_recv().is_err(), "the later wait goes on");
        assert!(waiters.awaited("c1", u64::MAX));
        assert!(!waiters.awaited("c1", before));
        // A wait given up removes itself.
        drop(Registration {
            waiters: &waiters,
            id: "c1",
            token: second_token,
        });
        assert!(waiters.ids().is_empty());
    }
}
