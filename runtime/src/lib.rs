//! The one watch → cache → reconcile machinery shared by the scheduler, agent, proxy
//! and controllers, so nobody writes their own watch loop.
//!
//! # Layout
//! - [`watcher`]: a list-then-watch stream that resumes from the last resource
//!   version and re-lists when the server says it is too old (`OUT_OF_RANGE`).
//! - [`reflector`]: an in-memory cache of one kind kept current by a watcher.
//! - [`queue`]: a de-duplicating work queue with per-key exponential back-off.
//! - [`leader`]: Lease-based leader election, so one replica of a component acts.
//! - [`process`]: logging and the signal-driven shutdown token every binary starts with.

pub mod leader;
pub mod process;
pub mod queue;
pub mod reflector;
pub mod watcher;
