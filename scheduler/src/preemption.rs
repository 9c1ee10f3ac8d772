//! Priority and preemption: a higher-priority Instance that fits nowhere evicts the
//! cheapest set of lower-priority Instances on one node — the set whose highest
//! priority is lowest, then the smallest — chosen by simulating their removal on the
//! cluster picture ([`plan`]), then evicted through the API ([`evict`]).

use hypermesh_api::v1::{DeleteRequest, Instance};
use hypermesh_api::{Api, Resource};
use tracing::info;

use crate::cluster::{ClusterState, InstanceKey};
use crate::plugins::{self, Request};
use crate::report::Reporter;
use hypermesh_runtime::events::EventType;

/// Victims on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    /// The node that would fit.
    pub node: String,
    /// Instances to evict.
    pub victims: Vec<InstanceKey>,
}

fn fits_on(cluster: &ClusterState, node: &str, req: &Request) -> bool {
    cluster
        .node(node)
        .is_some_and(|n| plugins::filter(cluster, n, req).is_ok())
}

/// Finds the cheapest preemption for `req` at `priority`, without changing anything
/// (the what-if removals are undone, and do not count as a cluster change).
pub fn plan(cluster: &mut ClusterState, req: &Request, priority: i32) -> Option<Preemption> {
    let generation = cluster.generation;
    let best = plan_inner(cluster, req, priority);
    cluster.generation = generation;
    best
}

fn plan_inner(cluster: &mut ClusterState, req: &Request, priority: i32) -> Option<Preemption> {
    let mut best: Option<((i32, usize), Preemption)> = None;
    for node_name in cluster.node_names().to_vec() {
        let Some(node) = cluster.node(&node_name) else {
            continue;
        };
        match plugins::filter(cluster, node, req) {
            Ok(_) => continue,
            Err(reason) if !reason.resolvable_by_preemption() => continue,
            Err(_) => {}
        }
        let mut candidates: Vec<(InstanceKey, i32, i64)> = node
            .instances
            .iter()
            .filter_map(|k| cluster.bound(k).map(|b| (k.clone(), b.priority, b.created)))
            .filter(|(_, p, _)| *p < priority)
            .collect();
        // Lowest priority first, newest first among equals.
        candidates.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
        let mut removed = Vec::new();
        let mut fits = false;
        for (key, _, _) in &candidates {
            if let Some(binding) = cluster.unbind(key) {
                removed.push((key.clone(), binding));
            }
            if fits_on(cluster, &node_name, req) {
                fits = true;
                break;
            }
        }
        // Reprieve: give back every removed Instance that can stay, most important
        // first, so only what must go is evicted.
        let mut victims = Vec::new();
        if fits {
            removed.sort_by(|a, b| {
                b.1.priority
                    .cmp(&a.1.priority)
                    .then(a.1.created.cmp(&b.1.created))
            });
            for (key, binding) in std::mem::take(&mut removed) {
                cluster.bind(key.clone(), binding.clone());
                if fits_on(cluster, &node_name, req) {
                    continue; // reprieved: stays bound
                }
                cluster.unbind(&key);
                victims.push((key, binding));
            }
        } else {
            victims = removed;
        }
        let cost = (
            victims
                .iter()
                .map(|(_, b)| b.priority)
                .max()
                .unwrap_or(i32::MIN),
            victims.len(),
        );
        let victim_keys: Vec<InstanceKey> = victims.iter().map(|(k, _)| k.clone()).collect();
        for (key, binding) in victims {
            cluster.bind(key, binding);
        }
        let victims = victim_keys;
        if fits && best.as_ref().is_none_or(|(c, _)| cost < *c) {
            best = Some((
                cost,
                Preemption {
                    node: node_name,
                    victims,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

/// Announces `plan` (Events on the victims and on `preemptor`) and deletes the
/// victims in the background.
pub fn evict(plan: Preemption, preemptor: &Instance, reporter: &Reporter, api: Api<Instance>) {
    let priority = preemptor.spec.as_ref().map_or(0, |s| s.priority);
    info!(preemptor = %preemptor.meta().name, node = %plan.node, victims = plan.victims.len(), "preempting");
    for key in &plan.victims {
        let victim = Instance {
            metadata: Some(hypermesh_api::v1::ObjectMeta {
                namespace: key.0.clone(),
                name: key.1.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        reporter.event(
            &victim,
            EventType::Normal,
            "Preempted",
            format!(
                "preempted by {}/{} (priority {priority}) on node {}",
                preemptor.meta().namespace,
                preemptor.meta().name,
                plan.node
            ),
        );
    }
    reporter.event(
        preemptor,
        EventType::Normal,
        "Preempting",
        format!(
            "evicting {} lower-priority instance(s) on node {}",
            plan.victims.len(),
            plan.node
        ),
    );
    let victims = plan.victims;
    tokio::spawn(async move {
        for (namespace, name) in victims {
            let _ = api
                .delete(DeleteRequest {
                    namespace,
                    name,
                    ..Default::default()
                })
                .await;
        }
    });
}
