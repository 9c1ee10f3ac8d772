//! `hm-apiserver`: stores declarative objects, validates and admits them, versions
//! every write, and serves List/Watch over gRPC.
//!
//! # Layout
//! - [`store`]: the `Store` trait, its conformance suite and the embedded redb backend.
//! - [`registry`]: per-kind object semantics over the store (uid, generation,
//!   optimistic concurrency, finalizers, selectors, pagination, watch).
//! - [`caller`]: who is calling (the identity a client certificate proved).
//! - [`admission`]: the admission chain every request walks once: authorize, mutate,
//!   validate (authorization, node identity, workload policy, asset proofs, GPUs).
//! - [`limits`]: per-identity request rate limits.
//! - [`kinds`]: per-kind defaults, immutable fields and deletion hooks.
//! - [`findings`]: what admission found, recorded as Events.
//! - [`suspect`]: marks nodes Suspect from those Events (Byzantine reaction).
//! - [`usage`]: the live usage agents report, for `hmctl top` (kept in memory).
//! - [`version`]: `VersionService`, the server version for `hmctl version`.
//! - [`access_review`]: "may I do this?" answered by the authorize phase, for `hmctl dashboard`.
//! - [`join`]: the cluster CA's certificates: node joins with tokens, renewals, user
//!   certificates, and their records.
//! - [`key_rotation`]: `hm-apiserver rotate-encryption-key` (re-seals Secrets and the CA key).
//! - [`audit`]: the audit log, one JSON line per request, rotated by size.
//! - [`tls`]: TLS 1.3 with client certificates on the gRPC port, revocation.
//! - [`object`]: the kind-agnostic view of stored objects (keys, deletion, orphaning).
//! - `bind`: `InstanceService.Bind`.
//! - `challenge`: `AssetService.Challenge`.
//! - [`proof_ledger`]: the persisted proof state per node (challenges, last proof time).
//! - [`call`]: one request's caller, metrics and audit record (`call!`).
//! - [`secrets`]: `SecretService`: sealed to the reading node, values withheld from
//!   everyone else unless revealed (`get secrets/data`).
//! - `service`: the gRPC services, one generic implementation for every kind.
//! - [`ca`]: the cluster CA the server holds and its certificate lifetimes.
//! - [`metrics`]: Prometheus metrics on `/metrics` (and `/healthz`).
//! - [`controller_identity`]: the controllers' election identity, kept in the data dir.
//! - [`in_process`]: the controllers run beside the server (garbage collection and
//!   namespace deletion always, the leader-elected ones unless `--controllers none`).
//! - [`watch_cache`]: one store watch per kind, fanned out from memory to every
//!   watcher as bytes encoded once.
//! - [`server`]: [`Config`] and [`serve`], wiring it together with health and reflection.

pub mod access_review;
pub mod admission;
pub mod audit;
mod bind;
pub mod ca;
pub mod call;
pub mod caller;
mod challenge;
pub mod controller_identity;
pub mod findings;
pub mod in_process;
pub mod join;
pub mod key_rotation;
pub mod kinds;
pub mod limits;
pub mod metrics;
pub mod object;
pub mod proof_ledger;
pub mod registry;
pub mod secrets;
pub mod selectors;
pub mod server;
pub mod service;
pub mod sessions;
pub mod store;
pub mod suspect;
pub mod tls;
pub mod usage;
pub mod version;
pub mod watch_cache;

pub use server::{ApiServer, Config, ServerError, TlsSettings, serve};
