//! The one watch → cache → reconcile machinery shared by the scheduler, agent, proxy
//! and controllers, so nobody writes their own watch loop.
//!
//! # Layout
//! - [`controller`]: the controller driver: watches, caches, a work queue with
//!   per-key back-off, leader gating, supervision and shutdown around a
//!   `reconcile(object, ctx)` function.
//! - [`watcher`]: a list-then-watch stream that resumes from the last resource
//!   version and re-lists when the server says it is too old (`OUT_OF_RANGE`).
//! - [`reflector`]: an in-memory cache of one kind kept current by a watcher.
//! - [`queue`]: a de-duplicating work queue with per-key exponential back-off and
//!   delayed keys.
//! - [`backoff`]: the one exponential back-off policy everything retries with.
//! - [`leader`]: Lease-based leader election, so one replica of a component acts.
//! - [`events`]: recording Events about objects.
//! - [`health`] and [`telemetry`]: what a process reports on `/healthz` and
//!   `/metrics`, and the small HTTP server that serves both.
//! - [`process`]: logging and the signal-driven shutdown token every binary starts with.

// Unit tests may unwrap: a panic there is a failed test, not a crash on network input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod backoff;
pub mod controller;
pub mod events;
pub mod health;
pub mod leader;
pub mod process;
pub mod queue;
pub mod reflector;
pub mod telemetry;
pub mod watcher;
