//! `UsageService`: the built-in metrics API `hmctl top` reads. Agents report what
//! their host and the Instances bound to them use; the reports are kept in memory
//! (the latest per node, for [`KEEP_FOR`]) rather than in the store, so live numbers
//! cost no store writes and no watch traffic. With several apiservers each answers
//! with the reports it received itself.
//!
//! Access: a report needs `update` on `nodes/status` of its own node (node restriction
//! keeps a node to its own), and keeps only Instances the store shows bound to that
//! node; reading needs `list` on nodes, or on instances in the namespace asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1::{
    self, NodeUsageReport, ReportUsageResponse, ResourceUsage, UsageList, UsageListRequest,
};
use tonic::{Request, Response, Status};

use crate::admission::Operation;
use crate::call::Call;
use crate::registry::Registry;

/// How long a report is shown after it arrived (a node that stopped reporting drops
/// out of `hmctl top`).
pub const KEEP_FOR: Duration = Duration::from_secs(60);
/// Most Instances one report may carry.
pub const MAX_INSTANCES_PER_REPORT: usize = 4096;

/// The service, over the node and instance registries.
#[derive(Clone)]
pub struct UsageService {
    /// For authorizing reports and node reads.
    pub nodes: Registry<v1::Node>,
    /// For authorizing instance reads and checking where Instances are bound.
    pub instances: Registry<v1::Instance>,
    reports: Arc<Mutex<HashMap<String, (Instant, NodeUsageReport)>>>,
}

impl std::fmt::Debug for UsageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageService").finish_non_exhaustive()
    }
}

impl UsageService {
    /// A service with no reports yet.
    pub fn new(nodes: Registry<v1::Node>, instances: Registry<v1::Instance>) -> Self {
        UsageService {
            nodes,
            instances,
            reports: Arc::default(),
        }
    }

    /// The reports younger than [`KEEP_FOR`] (older ones are forgotten).
    fn fresh_reports(&self) -> Vec<NodeUsageReport> {
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        reports.retain(|_, (at, _)| at.elapsed() < KEEP_FOR);
        reports.values().map(|(_, r)| r.clone()).collect()
    }

    async fn report(
        &self,
        caller: &crate::caller::Caller,
        mut report: NodeUsageReport,
    ) -> Result<ReportUsageResponse, Status> {
        let node = match caller.node_name() {
            Some(own) if report.node_name.is_empty() || report.node_name == own => own.to_string(),
            Some(own) => {
                return Err(status(
                    Reason::Forbidden,
                    format!(
                        "node {own:?} cannot report the usage of node {:?}",
                        report.node_name
                    ),
                ));
            }
            None if report.node_name.is_empty() => {
                return Err(Status::invalid_argument("node_name: required"));
            }
            None => report.node_name.clone(),
        };
        self.nodes
            .authorize(caller, Operation::UpdateStatus, "", &node)
            .await?;
        if report.instances.len() > MAX_INSTANCES_PER_REPORT {
            return Err(Status::invalid_argument(format!(
                "instances: {} entries, at most {MAX_INSTANCES_PER_REPORT}",
                report.instances.len()
            )));
        }
        report.node_name = node.clone();
        if let Some(n) = report.node.as_mut() {
            n.name = node.clone();
            n.namespace.clear();
        }
        let mut kept = Vec::with_capacity(report.instances.len());
        for usage in std::mem::take(&mut report.instances) {
            let bound_here = self
                .instances
                .read(&usage.namespace, &usage.name)
                .await
                .ok()
                .and_then(|i| i.spec)
                .is_some_and(|s| s.node_name == node);
            if bound_here {
                kept.push(usage);
            }
        }
        report.instances = kept;
        self.reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, (Instant::now(), report));
        Ok(ReportUsageResponse {})
    }

    async fn list(
        &self,
        caller: &crate::caller::Caller,
        request: UsageListRequest,
    ) -> Result<UsageList, Status> {
        let reports = match request.kind.as_str() {
            "nodes" | "node" => {
                self.nodes
                    .authorize(caller, Operation::List, "", "")
                    .await?;
                return Ok(UsageList {
                    items: self
                        .fresh_reports()
                        .into_iter()
                        .filter_map(|r| r.node)
                        .collect(),
                });
            }
            "instances" | "instance" => {
                self.instances
                    .authorize(caller, Operation::List, &request.namespace, "")
                    .await?;
                self.fresh_reports()
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "kind: {other:?} is not one of nodes, instances"
                )));
            }
        };
        let items: Vec<ResourceUsage> = reports
            .into_iter()
            .flat_map(|r| r.instances)
            .filter(|u| request.namespace.is_empty() || u.namespace == request.namespace)
            .collect();
        Ok(UsageList { items })
    }
}

#[tonic::async_trait]
impl v1::usage_service_server::UsageService for UsageService {
    async fn report(
        &self,
        request: Request<NodeUsageReport>,
    ) -> Result<Response<ReportUsageResponse>, Status> {
        crate::call!(&self.nodes, "Report", request, |caller, report| async {
            self.report(&caller, report).await
        })
    }

    async fn list(
        &self,
        request: Request<UsageListRequest>,
    ) -> Result<Response<UsageList>, Status> {
        crate::call!(&self.nodes, "ListUsage", request, |caller, req| async {
            self.list(&caller, req).await
        })
    }
}
