//! `hm-apiserver`: stores declarative objects, validates and admits them, versions
//! every write, and serves List/Watch over gRPC.
//!
//! # Layout
//! - [`store`]: the `Store` trait, its conformance suite and the embedded redb backend.
//! - `registry`: per-kind object semantics over the store (uid, generation,
//!   optimistic concurrency, finalizers, selectors, pagination, watch).
//! - `service`: the gRPC services, one generic implementation for every kind.
//! - `gc`: garbage collection (owner references) and namespace deletion.
//! - `server`: [`Config`] and [`serve`], wiring it together with health and reflection.

pub mod store;
