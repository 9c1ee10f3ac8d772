//! `hm-apiserver`: stores declarative objects, validates and admits them, versions
//! every write, and serves List/Watch over gRPC.
//!
//! # Layout
//! - [`store`]: the `Store` trait, its conformance suite and the embedded redb backend.
//! - [`registry`]: per-kind object semantics over the store (uid, generation,
//!   optimistic concurrency, finalizers, selectors, pagination, watch).
//! - [`admission`]: per-kind defaults, immutable fields and deletion hooks.
//! - [`proofs`]: Asset proof verification at admission and Byzantine detection
//!   (Suspect condition, taint and Event).
//! - [`object`]: the kind-agnostic view of stored objects (keys, deletion, orphaning).
//! - `bind`: `InstanceService.Bind`.
//! - `service`: the gRPC services, one generic implementation for every kind.
//! - [`metrics`]: Prometheus metrics on `/metrics` (and `/healthz`).
//! - [`in_process`]: the controllers run beside the server (garbage collection and
//!   namespace deletion always, the leader-elected ones unless `--controllers none`).
//! - [`gc`]: a transitional shim `server` still spawns (see its documentation).
//! - [`server`]: [`Config`] and [`serve`], wiring it together with health and reflection.

pub mod admission;
mod bind;
pub mod gc;
pub mod in_process;
pub mod metrics;
pub mod object;
pub mod proofs;
pub mod registry;
pub mod server;
mod service;
pub mod sessions;
pub mod store;

pub use server::{ApiServer, Config, ServerError, serve};
