//! Errors as hmctl prints them: `Error from server (Reason): message` for failed API
//! calls (the stable reason from the `hm-reason` metadata), `error: ...` for the rest.

use std::fmt;

use hypermesh_api::reason::reason_of;
use tonic::{Code, Status};

/// A failed API call. It is printed as is, without an `error:` prefix, like kubectl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The stable reason (`QuantityInvalid`), or the gRPC code's name when the server
    /// sent none.
    pub reason: String,
    /// What the call was doing, e.g. `error when creating "web.yaml" document 1: `.
    pub context: String,
    /// The server's message.
    pub message: String,
    /// The gRPC code.
    pub code: Code,
}

impl ServerError {
    /// The error of `status`, with its reason.
    pub fn from_status(status: &Status) -> Self {
        let reason = match reason_of(status) {
            Some(reason) => reason.to_string(),
            None => code_name(status.code()).to_string(),
        };
        ServerError {
            reason,
            context: String::new(),
            message: status.message().to_string(),
            code: status.code(),
        }
    }

    /// The error of a Get/Delete of `plural/name`; a plain NotFound reads
    /// `workloads "web" not found`.
    pub fn for_object(status: &Status, plural: &str, name: &str) -> Self {
        let mut err = Self::from_status(status);
        if err.reason == "NotFound" {
            err.message = format!("{plural} {name:?} not found");
        }
        err
    }

    /// Adds what the call was doing in front of the message.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = context.into();
        self
    }

    /// True when the object (or its namespace) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code == Code::NotFound
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Error from server ({}): {}{}",
            self.reason, self.context, self.message
        )
    }
}

impl std::error::Error for ServerError {}

/// The name of a gRPC code as a reason, for statuses that carry none (e.g. transport
/// errors from the client itself).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "Invalid",
        Code::DeadlineExceeded => "Timeout",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "Forbidden",
        Code::ResourceExhausted => "TooManyRequests",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Conflict",
        Code::OutOfRange => "Expired",
        Code::Unimplemented => "NotImplemented",
        Code::Internal => "InternalError",
        Code::Unavailable => "ServiceUnavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthorized",
    }
}

/// Prints `err` to stderr the way hmctl reports failures.
pub fn report(err: &anyhow::Error) {
    match err.downcast_ref::<ServerError>() {
        Some(server) => eprintln!("{server}"),
        None => eprintln!("error: {err:#}"),
    }
}

/// True when `err` is a closed stdout (e.g. `hmctl get wl | head -1`), which is not a
/// failure worth reporting.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::reason::{Reason, status};

    #[test]
    fn prints_the_stable_reason() {
        let s = status(
            Reason::QuantityInvalid,
            "spec.template.containers[0].resources.cpu: invalid quantity \"lots\"",
        );
        let err = ServerError::from_status(&s).with_context("error when creating \"w.yaml\": ");
        assert_eq!(
            err.to_string(),
            "Error from server (QuantityInvalid): error when creating \"w.yaml\": \
             spec.template.containers[0].resources.cpu: invalid quantity \"lots\""
        );
    }

    #[test]
    fn not_found_names_the_object() {
        let err =
            ServerError::for_object(&status(Reason::NotFound, "no such key"), "workloads", "x");
        assert_eq!(
            err.to_string(),
            "Error from server (NotFound): workloads \"x\" not found"
        );
        assert!(err.is_not_found());
        let bare = ServerError::from_status(&Status::unavailable("connection refused"));
        assert_eq!(
            bare.to_string(),
            "Error from server (ServiceUnavailable): connection refused"
        );
    }
}
