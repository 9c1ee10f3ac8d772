//! HyperMesh's container runtime client: running containers on the host's containerd
//! through its gRPC API over the unix socket, bringing images in (OCI archives, registry
//! pulls), and running extra processes in containers. The agent is its user; nothing
//! here knows about Instances or the API.
//!
//! Everything lives in the containerd namespace [`NAMESPACE`], so other tools' containers
//! on the same containerd are never seen or disturbed. Debian's containerd 1.6 has no
//! Transfer service, so images are brought in client-side, as `ctr` does: blobs through
//! the content service (every one hashed on the way in, committed only on a match),
//! layers unpacked through the diff and snapshot services.
//!
//! # Public face
//! - [`ContainerdClient::connect`]: the connection (`version` for readiness checks).
//! - [`image::import_archive`], [`pull::pull`] (with [`pull::PullConfig`]),
//!   [`image::resolve`]: images in, and looking them up.
//! - [`container`]: a [`ContainerConfig`] (with its [`container::Security`]) is created,
//!   started, waited on, killed and deleted; [`container::list_labelled`] finds them.
//! - [`TaskExits`]: waits for task exits over one event subscription.
//! - [`exec`]: processes in a running container ([`exec::ExecSession`],
//!   [`exec::run_captured`]).
//! - [`Error`] (containerd, archive and config failures) and [`pull::PullError`].
//!
//! # Layout
//! - [`client`]: [`ContainerdClient`], the connection, namespace metadata and leases.
//! - `content`: writing blobs with their digest and size verified, leases for imports.
//! - [`image`]: manifests and configs, recording and unpacking images (decompression
//!   capped), resolving them, importing OCI image archives read without trusting them.
//! - [`mod@reference`]: parsing image references (`host[:port]/path[:tag][@digest]`).
//! - [`pull`]: pulling images from OCI/Docker registries over HTTP(S), credentials sent
//!   only to the host they are for.
//! - [`container`]: [`ContainerConfig`] → OCI runtime spec (by concern in
//!   [`container::spec`]: default capabilities and seccomp profile, non-recursive volume
//!   binds, user namespaces), container and task lifecycle.
//! - [`exits`]: task exits from one subscription to containerd's events, for every
//!   container waiting on its task.
//! - [`exec`]: extra processes in a running container (exec sessions, exec probes).

pub mod client;
pub mod container;
mod content;
pub mod exec;
pub mod exits;
pub mod image;
pub mod pull;
pub mod reference;

pub use client::ContainerdClient;
pub use container::{ContainerConfig, ExitStatus, LogSink};
pub use content::sha256_digest;
pub use exits::{TaskEnd, TaskExits};
pub use image::ImportedImage;

/// The containerd namespace every HyperMesh container, image and snapshot lives in.
pub const NAMESPACE: &str = "hypermesh";

/// The snapshotter used for image layers and container root filesystems.
pub const SNAPSHOTTER: &str = "overlayfs";

/// Why a containerd operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be connected to (containerd not running, wrong path).
    #[error("connecting to containerd at {socket}: {source}")]
    Connect {
        socket: std::path::PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    /// containerd answered a call with an error status.
    #[error("containerd {call}: {} ({})", .source.message(), .source.code())]
    Call {
        call: &'static str,
        #[source]
        source: tonic::Status,
    },
    /// A local file (image archive, log file) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image archive or one of its blobs is malformed or inconsistent.
    #[error("invalid image archive {path}: {detail}")]
    InvalidImage {
        path: std::path::PathBuf,
        detail: String,
    },
    /// The image is not known to containerd (not imported or pulled).
    #[error("image {0} not found")]
    ImageNotFound(String),
    /// A blob's bytes do not hash to the digest it was written as; nothing was committed.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// A blob has another size than its descriptor says; nothing was committed.
    #[error("blob {digest}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: i64,
        actual: i64,
    },
    /// A digest other than `sha256:<64 hex>`.
    #[error("unsupported digest {0:?} (only sha256 is supported)")]
    UnsupportedDigest(String),
    /// A container's configuration cannot be turned into a runtime spec.
    #[error("invalid container config: {0}")]
    InvalidConfig(String),
    /// An operation did not finish in time (and was cancelled).
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A blocking helper task panicked.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// Wraps a failed containerd call, naming it.
    pub(crate) fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |source| Error::Call { call, source }
    }

    /// The gRPC status code when containerd answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Call { source, .. } => Some(source.code()),
            _ => None,
        }
    }

    /// True when containerd could not be reached (not running, restarting): the call
    /// may be retried as it was, nothing is known to have changed.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Call { source, .. } => match source.code() {
                tonic::Code::Unavailable | tonic::Code::Cancelled => true,
                // A connection that breaks mid-call (containerd restarting) surfaces as
                // UNKNOWN carrying the transport's error, not as a status containerd sent.
                tonic::Code::Unknown => is_transport_failure(source),
                _ => false,
            },
            _ => false,
        }
    }
}

/// True when `status` was made by tonic from a broken connection (its source is a
/// transport error, or tonic's message for one) rather than returned by containerd.
fn is_transport_failure(status: &tonic::Status) -> bool {
    let from_transport = std::error::Error::source(status)
        .is_some_and(|e| e.is::<tonic::transport::Error>() || e.is::<hyper::Error>());
    let message = status.message();
    from_transport
        || message.starts_with("transport error")
        || message.starts_with("h2 protocol error")
        || message.starts_with("error trying to connect")
}

#[cfg(test)]
mod tests {
    use super::Error;

    fn call(status: tonic::Status) -> Error {
        Error::Call {
            call: "tasks.start (exec)",
            source: status,
        }
    }

    #[test]
    fn a_connection_broken_mid_call_is_unreachable_and_containerd_errors_are_not() {
        assert!(call(tonic::Status::unavailable("connection refused")).is_unreachable());
        // What a probe saw while containerd restarted: tonic's status for a broken
        // connection (it used to count as a failed liveness probe and kill the container).
        assert!(call(tonic::Status::unknown("transport error")).is_unreachable());
        assert!(
            call(tonic::Status::unknown(
                "h2 protocol error: error reading a body"
            ))
            .is_unreachable()
        );
        assert!(!call(tonic::Status::unknown("exec failed: no such file")).is_unreachable());
        assert!(!call(tonic::Status::not_found("task x not found")).is_unreachable());
    }
}
