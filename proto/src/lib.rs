//! The HyperMesh API contract, shared by every component and client.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::unwrap_used)]
    tonic::include_proto!("hypermesh.v1");
    include!(concat!(env!("OUT_DIR"), "/hypermesh.v1.serde.rs"));
}
