//! Heartbeats: renews the Lease `node-{name}` in `hypermesh-system` every
//! `--heartbeat-interval`, and refreshes the Node's conditions, writing them with
//! UpdateStatus only when something changed.

use hypermesh_api::v1::{Lease, LeaseSpec, Node, ObjectMeta};
use hypermesh_api::{Api, Resource};
use tonic::{Code, Status};

use crate::conditions::{self, Thresholds};
use crate::config::Config;
use crate::detect::gpu::GpuReport;

/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "hypermesh-system";

/// The Lease name of node `node`.
pub fn lease_name(node: &str) -> String {
    format!("node-{node}")
}

/// Renews one node's Lease, remembering the last stored copy so a renewal is a
/// single Update (re-read only after a conflict).
pub struct LeaseRenewer {
    api: Api<Lease>,
    holder: String,
    name: String,
    duration_seconds: i32,
    last: Option<Lease>,
}

impl LeaseRenewer {
    pub fn new(api: Api<Lease>, config: &Config) -> Self {
        LeaseRenewer {
            api,
            holder: config.node_name.clone(),
            name: lease_name(&config.node_name),
            duration_seconds: i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX),
            last: None,
        }
    }

    /// Sets `renew_time` to now (creating the Lease, or taking it over, if needed).
    pub async fn renew(&mut self) -> Result<Lease, Status> {
        let now = hypermesh_api::time::now();
        let mut lease = match self.last.take() {
            Some(l) => l,
            None => match self.api.get(LEASE_NAMESPACE, &self.name).await {
                Ok(l) => l,
                Err(s) if s.code() == Code::NotFound => {
                    let lease = Lease {
                        metadata: Some(ObjectMeta {
                            name: self.name.clone(),
                            namespace: LEASE_NAMESPACE.into(),
                            ..Default::default()
                        }),
                        spec: Some(LeaseSpec {
                            holder_identity: self.holder.clone(),
                            lease_duration_seconds: self.duration_seconds,
                            acquire_time: Some(now),
                            renew_time: Some(now),
                            lease_transitions: 0,
                        }),
                        status: None,
                    };
                    let created = self.api.create(&lease).await?;
                    self.last = Some(created.clone());
                    return Ok(created);
                }
                Err(s) => return Err(s),
            },
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity != self.holder {
            spec.holder_identity = self.holder.clone();
            spec.acquire_time = Some(now);
            spec.lease_transitions += 1;
        }
        spec.lease_duration_seconds = self.duration_seconds;
        spec.renew_time = Some(now);
        let updated = self.api.update(&lease).await?;
        self.last = Some(updated.clone());
        Ok(updated)
    }
}

/// Reads memory, disk and runtime, and writes the Node's conditions if they changed.
/// Returns whether an UpdateStatus was sent.
pub async fn refresh_conditions(
    nodes: &Api<Node>,
    config: &Config,
    gpu: &GpuReport,
) -> Result<bool, Status> {
    let readings = conditions::read(&config.paths.proc_meminfo, &config.containerd_socket).await;
    let desired = conditions::evaluate(
        &readings,
        Thresholds {
            memory_available_percent: config.memory_pressure_percent,
            disk_free_percent: config.disk_pressure_percent,
        },
        gpu,
        &config.containerd_socket,
    );
    let mut node = nodes.get("", &config.node_name).await?;
    let status = node.status.get_or_insert_with(Default::default);
    let merged = conditions::merge(&status.conditions, desired);
    if conditions::same(&status.conditions, &merged) {
        return Ok(false);
    }
    status.conditions = merged;
    nodes.update_status(&node).await?;
    tracing::debug!(node = %node.meta().name, "node conditions updated");
    Ok(true)
}
