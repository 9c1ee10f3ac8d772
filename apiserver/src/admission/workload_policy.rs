//! Workload policy: what Instances and Workloads may ask of a host.

use tonic::Status;

use super::Admit;

/// The plugin.
#[derive(Debug)]
pub struct WorkloadPolicy;

#[tonic::async_trait]
impl Admit for WorkloadPolicy {
    fn name(&self) -> &'static str {
        "WorkloadPolicy"
    }
}

#[allow(dead_code)]
fn _unused() -> Option<Status> {
    None
}
