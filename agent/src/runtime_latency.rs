//! How long the agent's calls to the container runtime take: one histogram,
//! `hypermesh_agent_runtime_operation_duration_seconds{operation, result}`, observed
//! where the agent calls containerd (image pulls and imports, container create, start,
//! stop, kill and delete, exec), as kubelet's `runtime_operations_duration_seconds`.
//!
//! `result` is `ok`, `unreachable` (containerd not running or restarting), the gRPC
//! code containerd answered in snake case (`already_exists`, `not_found`, …), or
//! `error` for a failure of our own (a bad archive, a digest mismatch, a timeout).

use std::fmt::Write as _;
use std::future::Future;
use std::time::Instant;

use hypermesh_containers::{self as containers, pull::PullError};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A kind of call to the runtime.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Operation {
    /// Pulling an image from a registry (manifest, blobs, unpack).
    Pull,
    /// Importing an OCI archive from `--image-dir` or `hmctl image import`.
    Import,
    /// Creating a container (and its snapshot).
    Create,
    /// Creating and starting its task.
    Start,
    /// Stopping a container: SIGTERM, the grace period, SIGKILL if needed.
    Stop,
    /// Sending a signal to a task.
    Kill,
    /// Deleting task, container and snapshot.
    Delete,
    /// Starting a process in a running container (`hmctl exec`).
    Exec,
}

impl Operation {
    /// The `operation` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Pull => "pull",
            Operation::Import => "import",
            Operation::Create => "create",
            Operation::Start => "start",
            Operation::Stop => "stop",
            Operation::Kill => "kill",
            Operation::Delete => "delete",
            Operation::Exec => "exec",
        }
    }
}

impl EncodeLabelValue for Operation {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: Operation,
    result: &'static str,
}

/// What a failed call is labelled with.
pub trait Outcome {
    /// The `result` label of this failure.
    fn result(&self) -> &'static str;
}

impl Outcome for containers::Error {
    fn result(&self) -> &'static str {
        if self.is_unreachable() {
            return "unreachable";
        }
        match self.code() {
            Some(code) => code_name(code),
            None => "error",
        }
    }
}

impl Outcome for PullError {
    fn result(&self) -> &'static str {
        self.containerd().map_or("error", Outcome::result)
    }
}

/// A gRPC code in snake case, as Prometheus label values usually are.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// The histogram of runtime calls; clones share it.
#[derive(Clone, Debug)]
pub struct RuntimeLatency {
    family: Family<OperationLabels, Histogram>,
}

impl Default for RuntimeLatency {
    fn default() -> Self {
        // 1 ms .. ~65 s: a start is tens of milliseconds, a pull or a graceful stop
        // can take many seconds.
        let family = Family::<OperationLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 17))) as fn() -> Histogram,
        );
        RuntimeLatency { family }
    }
}

impl RuntimeLatency {
    /// Adds the histogram to `registry` (prefixed `hypermesh_agent` there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "runtime_operation_duration_seconds",
            "Duration of the agent's calls to the container runtime by operation and result",
            self.family.clone(),
        );
    }

    /// Runs `call`, recording how long it took under `operation` and its result.
    pub async fn time<T, E: Outcome>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        self.observe(
            operation,
            result.as_ref().err().map_or("ok", Outcome::result),
            started,
        );
        result
    }

    /// Records one call of `operation` that started at `started` and ended now.
    pub fn observe(&self, operation: Operation, result: &'static str, started: Instant) {
        self.family
            .get_or_create(&OperationLabels { operation, result })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_counted_by_operation_and_result() {
        let latency = RuntimeLatency::default();
        let mut registry = Registry::with_prefix("hypermesh_agent");
        latency.register(&mut registry);
        let ok: Result<(), containers::Error> =
            latency.time(Operation::Start, async { Ok(()) }).await;
        assert!(ok.is_ok());
        let status = tonic::Status::already_exists("container exists");
        let _ = latency
            .time(Operation::Create, async {
                Err::<(), _>(containers::Error::Call {
                    call: "create container",
                    source: status,
                })
            })
            .await;
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        for series in [
            "hypermesh_agent_runtime_operation_duration_seconds_count{operation=\"start\",result=\"ok\"} 1",
            "hypermesh_agent_runtime_operation_duration_seconds_count{operation=\"create\",result=\"already_exists\"} 1",
        ] {
            assert!(out.contains(series), "{series} in\n{out}");
        }
    }
}
