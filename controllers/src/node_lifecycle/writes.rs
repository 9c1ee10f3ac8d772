//! What the node-lifecycle controller writes through the API: the unreachable taint
//! (added, removed), `Ready=Unknown`, and evictions (deleting Instances, and removing
//! the containers finalizer their unreachable agent cannot), each with an Event.

use std::time::{Instant, SystemTime};

use hypermesh_api::conditions::{condition, find, set_condition};
use hypermesh_api::time::MAX_TOLERATION;
use hypermesh_api::v1::{DeleteRequest, Instance, ListRequest, Node, Taint, TaintEffect};
use hypermesh_api::{CONTAINERS_FINALIZER, Resource};
use hypermesh_runtime::events::EventType;
use tonic::Code;
use tracing::{info, warn};

use super::eviction::{eviction_time, instant_of, is_unreachable, out_of_range};
use super::{Ctx, NodeLifecycleError, READY, UNREACHABLE_TAINT, unreachable_taint};
use crate::workload::template::{is_deleting, is_terminal};

impl Ctx {
    /// Removes the unreachable taint: the node's Lease was seen renewed again.
    pub(super) async fn remove_taint(&self, node: &Node) -> Result<(), NodeLifecycleError> {
        let mut updated = node.clone();
        if let Some(spec) = updated.spec.as_mut() {
            spec.taints.retain(|t| !is_unreachable(t));
        }
        match self.nodes.update(&updated).await {
            Ok(written) => {
                info!(node = %node.meta().name, "lease renewed; unreachable taint removed");
                self.recorder
                    .record(
                        &written,
                        EventType::Normal,
                        "NodeReachable",
                        format!("Lease renewed again; removed taint {UNREACHABLE_TAINT}:NoExecute"),
                    )
                    .await;
                Ok(())
            }
            Err(source) if source.code() == Code::NotFound => Ok(()),
            Err(source) => Err(NodeLifecycleError::Taint {
                node: node.meta().name.clone(),
                source,
            }),
        }
    }

    /// Adds the taint and sets `Ready=Unknown` where missing; returns the Node as
    /// last written (or as cached when nothing changed).
    pub(super) async fn mark_unreachable(
        &self,
        node: &Node,
        reason: &str,
        message: &str,
    ) -> Result<Node, NodeLifecycleError> {
        let name = node.meta().name.clone();
        let mut current = node.clone();
        if unreachable_taint(&current).is_none() {
            let mut updated = current.clone();
            updated.spec.get_or_insert_default().taints.push(Taint {
                key: UNREACHABLE_TAINT.to_string(),
                value: String::new(),
                effect: TaintEffect::NoExecute as i32,
                time_added: Some(hypermesh_api::time::now()),
            });
            current = match self.nodes.update(&updated).await {
                Ok(written) => written,
                Err(source) if source.code() == Code::NotFound => return Ok(current),
                Err(source) => return Err(NodeLifecycleError::Taint { node: name, source }),
            };
            warn!(node = %name, reason, message, "node unreachable; tainted");
            self.recorder
                .record(
                    &current,
                    EventType::Warning,
                    "NodeNotReady",
                    format!(
                        "Node is unreachable: {message}; set Ready=Unknown and taint \
                         {UNREACHABLE_TAINT}:NoExecute"
                    ),
                )
                .await;
        }
        let ready_unknown = current
            .status
            .as_ref()
            .and_then(|s| find(&s.conditions, READY))
            .is_some_and(|c| c.status == "Unknown");
        if !ready_unknown {
            let mut updated = current.clone();
            set_condition(
                &mut updated.status.get_or_insert_default().conditions,
                condition(READY, "Unknown", reason, message),
                hypermesh_api::time::now(),
            );
            current = match self.nodes.update_status(&updated).await {
                Ok(written) => written,
                Err(source) if source.code() == Code::NotFound => return Ok(current),
                Err(source) => return Err(NodeLifecycleError::Status { node: name, source }),
            };
        }
        Ok(current)
    }

    /// Deletes the Instances on `node` whose time is up; returns when the next one
    /// falls due.
    pub(super) async fn evict(
        &self,
        node: &Node,
        why: &str,
    ) -> Result<Option<Instant>, NodeLifecycleError> {
        let name = node.meta().name.clone();
        let Some(taint) = unreachable_taint(node) else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let instances = self.instances_on(&name).await?;
        let mut next: Option<SystemTime> = None;
        let mut evicted = Vec::new();
        let mut failure = None;
        for instance in instances {
            self.report_out_of_range(&instance).await;
            let Some(at) = eviction_time(&instance, taint, self.config.eviction_grace) else {
                continue;
            };
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let meta = instance.meta();
            if is_deleting(&instance) {
                // Deleted earlier; its agent cannot confirm the containers are gone.
                self.force_remove(&instance, &name).await?;
                continue;
            }
            let result = self
                .instances
                .delete(DeleteRequest {
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone(),
                    ..Default::default()
                })
                .await;
            match result {
                Ok(deleted) => {
                    info!(node = %name, namespace = %meta.namespace, instance = %meta.name, "evicted");
                    self.force_remove(&deleted, &name).await?;
                    self.recorder
                        .record(
                            &instance,
                            EventType::Warning,
                            "Evicted",
                            format!(
                                "Node {name} is unreachable ({why}); deleted the instance so \
                                 it is replaced elsewhere"
                            ),
                        )
                        .await;
                    evicted.push(format!("{}/{}", meta.namespace, meta.name));
                }
                Err(status) if status.code() == Code::NotFound => {}
                Err(source) => {
                    failure.get_or_insert(NodeLifecycleError::Evict {
                        namespace: meta.namespace.clone(),
                        instance: meta.name.clone(),
                        source,
                    });
                }
            }
        }
        if !evicted.is_empty() {
            self.recorder
                .record(
                    node,
                    EventType::Warning,
                    "EvictingInstances",
                    format!(
                        "Node is unreachable; deleted {} instance(s): {}",
                        evicted.len(),
                        evicted.join(", ")
                    ),
                )
                .await;
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(next.and_then(instant_of)),
        }
    }

    /// Logs and records (once per Instance) a toleration whose seconds lie beyond
    /// the bound validation enforces: the Instance bypassed it, e.g. it was stored
    /// by an older version. It is evicted as if it said the maximum.
    async fn report_out_of_range(&self, instance: &Instance) {
        let Some(seconds) = out_of_range(instance) else {
            return;
        };
        let meta = instance.meta();
        if !self.reported().insert(meta.uid.clone()) {
            return;
        }
        warn!(
            namespace = %meta.namespace,
            instance = %meta.name,
            seconds,
            "toleration seconds out of range; counted as the maximum"
        );
        self.recorder
            .record(
                instance,
                EventType::Warning,
                "TolerationOutOfRange",
                format!(
                    "tolerationSeconds {seconds} is beyond the allowed {}s; treated as {}s",
                    MAX_TOLERATION.as_secs(),
                    MAX_TOLERATION.as_secs()
                ),
            )
            .await;
    }

    /// The live Instances bound to `node`, in every namespace.
    async fn instances_on(&self, node: &str) -> Result<Vec<Instance>, NodeLifecycleError> {
        let (items, _) = self
            .instances
            .list_all(ListRequest {
                field_selector: format!("spec.nodeName={node}"),
                ..Default::default()
            })
            .await
            .map_err(|source| NodeLifecycleError::List {
                node: node.to_string(),
                source,
            })?;
        Ok(items
            .into_iter()
            .filter(|i| is_deleting(i) || !is_terminal(i))
            .collect())
    }

    /// Removes the [`CONTAINERS_FINALIZER`] of an Instance being deleted on the
    /// unreachable `node`: no agent will confirm its containers are gone, so it leaves
    /// the API now (and is replaced elsewhere).
    async fn force_remove(
        &self,
        instance: &Instance,
        node: &str,
    ) -> Result<(), NodeLifecycleError> {
        let mut latest = instance.clone();
        for _ in 0..8 {
            let m = latest.meta_mut();
            if !m.finalizers.iter().any(|f| f == CONTAINERS_FINALIZER) {
                return Ok(());
            }
            m.finalizers.retain(|f| f != CONTAINERS_FINALIZER);
            let (namespace, name) = (m.namespace.clone(), m.name.clone());
            let error = |source| NodeLifecycleError::Evict {
                namespace: namespace.clone(),
                instance: name.clone(),
                source,
            };
            match self.instances.update(&latest).await {
                Ok(_) => {
                    info!(%node, %namespace, instance = %name, "force-removed: its node is unreachable");
                    return Ok(());
                }
                Err(status) if status.code() == Code::NotFound => return Ok(()),
                Err(status) if status.code() == Code::Aborted => {
                    latest = match self.instances.get(&namespace, &name).await {
                        Ok(latest) => latest,
                        Err(status) if status.code() == Code::NotFound => return Ok(()),
                        Err(source) => return Err(error(source)),
                    };
                }
                Err(source) => return Err(error(source)),
            }
        }
        Ok(())
    }
}
