//! Controllers that talk to the API like any client: workloads (replicas, rolling
//! update) and node lifecycle. `hm-apiserver` will run them in-process.
//!
//! Empty until the workload controller lands (issue 4). Garbage collection and
//! namespace deletion currently live in the apiserver (see `apiserver/src/gc.rs`).
