//! The HyperMesh API contract, shared by every component and client.
//!
//! # Layout
//! - [`v1`]: types, gRPC clients and servers generated from `proto/hypermesh/v1/*.proto`,
//!   with canonical protobuf-JSON serde impls (pbjson).
//! - [`resource`]: the [`Resource`] trait every kind implements, and [`DynObject`] for
//!   code that handles any kind (manifests, `hmctl`).
//! - [`client`]: [`Api`], one generic gRPC client for every kind's service.
//! - [`quantity`], [`selector`], [`validation`]: pure parsing and checks, shared by the
//!   server (admission) and clients.
//! - [`manifest`]: YAML manifests ⇄ objects (over [`json`]: typed objects from
//!   protobuf-JSON with field paths).
//! - [`conditions`]: setting a status condition.
//! - [`reason`]: stable error reasons carried on gRPC statuses.
//! - [`time`]: timestamps, ages, and the bounds of every duration and timestamp.
//! - [`address`]: global addresses in `fd48:4d00::/32` and global names.

pub mod address;
pub mod client;
pub mod conditions;
pub mod json;
pub mod manifest;
pub mod quantity;
pub mod reason;
pub mod resource;
pub mod selector;
pub mod time;
pub mod validation;

pub use client::Api;
pub use resource::{DynObject, Resource};

/// Generated from `proto/hypermesh/v1/*.proto`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::unwrap_used)]
    tonic::include_proto!("hypermesh.v1");
    include!(concat!(env!("OUT_DIR"), "/hypermesh.v1.serde.rs"));
}

impl v1::SessionFrame {
    /// A frame carrying `payload` (only an agent's first frame names its session).
    pub fn of(payload: v1::session_frame::Payload) -> Self {
        v1::SessionFrame {
            session_id: String::new(),
            payload: Some(payload),
        }
    }
}

impl From<&tonic::Status> for v1::SessionError {
    fn from(status: &tonic::Status) -> Self {
        v1::SessionError {
            code: status.code() as i32,
            message: status.message().to_string(),
        }
    }
}

impl From<v1::SessionError> for tonic::Status {
    fn from(error: v1::SessionError) -> Self {
        tonic::Status::new(tonic::Code::from_i32(error.code), error.message)
    }
}

/// The encoded `FileDescriptorSet` of the contract (with its imports), for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hypermesh_descriptor.bin"));

/// `apiVersion` of every manifest.
pub const API_VERSION: &str = "hypermesh.io/v1";

/// The finalizer a Namespace carries while its contents are deleted (the garbage
/// collector removes it once the namespace is empty).
pub const NAMESPACE_FINALIZER: &str = "hypermesh.io/namespace";

/// The finalizer an Instance bound to a node carries while it is deleted: its node's
/// agent removes it once the Instance's containers are gone (the node-lifecycle
/// controller removes it when the node is unreachable past the eviction grace), so
/// `Terminating` lasts exactly as long as the containers run.
pub const CONTAINERS_FINALIZER: &str = "hypermesh.io/containers";

/// Namespaces that exist from the first start and cannot be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "hypermesh-system"];
