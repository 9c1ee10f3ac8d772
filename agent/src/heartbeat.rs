//! Heartbeats: renews the Lease `node-{name}` in `hypermesh-system` every
//! `--heartbeat-interval`, and refreshes the Node's conditions, writing them with
//! UpdateStatus only when one changed state (messages alone every few minutes).

use hypermesh_api::v1::{Lease, LeaseSpec, Node, ObjectMeta};
use hypermesh_api::{Api, Resource};
use tonic::{Code, Status};

use std::time::{Duration, Instant};

use crate::conditions::{self, Difference, Thresholds};
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

/// How often a Node's condition messages alone (live memory and disk figures) are
/// written: kubelet's `nodeStatusReportFrequency`. A change of status or reason is
/// written at the next heartbeat; rewriting the Node every heartbeat for a moving
/// percentage was what broke first with 1,000 nodes (docs/scaling.md).
pub const MESSAGE_REPORT_INTERVAL: Duration = Duration::from_secs(300);

/// Writes the Node's conditions: at once when one changes state, and refreshes their
/// messages every [`MESSAGE_REPORT_INTERVAL`].
#[derive(Debug, Default)]
pub struct ConditionReporter {
    last_written: Option<Instant>,
    /// Conditions measured elsewhere (`NetworkAccounting`), written with the others.
    pub extra: Vec<hypermesh_api::v1::Condition>,
}

impl ConditionReporter {
    /// Reads memory, disk and runtime, and writes the Node's conditions if they changed
    /// state (or only their messages, once the report interval has passed). Returns
    /// whether an UpdateStatus was sent.
    pub async fn refresh(
        &mut self,
        nodes: &Api<Node>,
        config: &Config,
        gpu: &GpuReport,
    ) -> Result<bool, Status> {
        let readings =
            conditions::read(&config.paths.proc_meminfo, &config.containerd_socket).await;
        let mut desired = conditions::evaluate(
            &readings,
            Thresholds {
                memory_available_percent: config.memory_pressure_percent,
                disk_free_percent: config.disk_pressure_percent,
            },
            gpu,
            &config.containerd_socket,
        );
        desired.extend(self.extra.iter().cloned());
        let mut node = nodes.get("", &config.node_name).await?;
        let status = node.status.get_or_insert_with(Default::default);
        let merged = conditions::merge(&status.conditions, desired);
        let messages_due = self
            .last_written
            .is_none_or(|at| at.elapsed() >= MESSAGE_REPORT_INTERVAL);
        match conditions::difference(&status.conditions, &merged) {
            Difference::None => return Ok(false),
            Difference::Messages if !messages_due => return Ok(false),
            Difference::Messages | Difference::State => {}
        }
        status.conditions = merged;
        nodes.update_status(&node).await?;
        self.last_written = Some(Instant::now());
        tracing::debug!(node = %node.meta().name, "node conditions updated");
        Ok(true)
    }
}
