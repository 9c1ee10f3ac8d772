//! The per-host agent: hardware detection, node and asset registration, heartbeats,
//! and reconciling Instances against containerd.
//!
//! Empty until issues 5 and 6.
