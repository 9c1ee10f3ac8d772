//! Priority and preemption: a higher-priority Instance that fits nowhere evicts the
//! cheapest set of lower-priority Instances on one node — the set whose highest
//! priority is lowest, then the smallest — chosen by simulating their removal.

use hypermesh_api::v1::{DeleteRequest, Instance};
use hypermesh_api::{Api, Resource};
use tracing::info;

use crate::cluster::InstanceKey;
use crate::plugins::{self, Request};
use crate::scheduler::Scheduler;

/// Victims on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    /// The node that would fit.
    pub node: String,
    /// Instances to evict.
    pub victims: Vec<InstanceKey>,
}

fn fits_on(scheduler: &Scheduler, node: &str, req: &Request) -> bool {
    scheduler
        .cluster()
        .node(node)
        .is_some_and(|n| plugins::filter(scheduler.cluster(), n, req).is_ok())
}

/// Finds the cheapest preemption for `req` at `priority`, without changing anything
/// (the what-if removals are undone, and do not count as a cluster change).
pub fn plan(scheduler: &mut Scheduler, req: &Request, priority: i32) -> Option<Preemption> {
    let generation = scheduler.cluster().generation;
    let best = plan_inner(scheduler, req, priority);
    scheduler.cluster_mut().generation = generation;
    best
}

fn plan_inner(scheduler: &mut Scheduler, req: &Request, priority: i32) -> Option<Preemption> {
    let mut best: Option<((i32, usize), Preemption)> = None;
    for node_name in scheduler.cluster().node_names().to_vec() {
        let Some(node) = scheduler.cluster().node(&node_name) else {
            continue;
        };
        match plugins::filter(scheduler.cluster(), node, req) {
            Ok(_) => continue,
            Err(reason) if !reason.resolvable_by_preemption() => continue,
            Err(_) => {}
        }
        let mut candidates: Vec<(InstanceKey, i32, i64)> = node
            .instances
            .iter()
            .filter_map(|k| {
                scheduler
                    .cluster()
                    .bound(k)
                    .map(|b| (k.clone(), b.priority, b.created))
            })
            .filter(|(_, p, _)| *p < priority)
            .collect();
        // Lowest priority first, newest first among equals.
        candidates.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
        let mut removed = Vec::new();
        let mut fits = false;
        for (key, _, _) in &candidates {
            if let Some(binding) = scheduler.cluster_mut().unbind(key) {
                removed.push((key.clone(), binding));
            }
            if fits_on(scheduler, &node_name, req) {
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
                scheduler.cluster_mut().bind(key.clone(), binding.clone());
                if fits_on(scheduler, &node_name, req) {
                    continue; // reprieved: stays bound
                }
                scheduler.cluster_mut().unbind(&key);
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
            scheduler.cluster_mut().bind(key, binding);
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

/// Plans and starts a preemption for `inst`; true when victims are being evicted.
pub fn preempt(scheduler: &mut Scheduler, inst: &Instance, req: &Request) -> bool {
    let priority = inst.spec.as_ref().map_or(0, |s| s.priority);
    let Some(plan) = plan(scheduler, req, priority) else {
        return false;
    };
    info!(preemptor = %inst.meta().name, node = %plan.node, victims = plan.victims.len(), "preempting");
    let reporter = scheduler.reporter().clone();
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
            "Normal",
            "Preempted",
            format!(
                "preempted by {}/{} (priority {priority}) on node {}",
                inst.meta().namespace,
                inst.meta().name,
                plan.node
            ),
        );
    }
    reporter.event(
        inst,
        "Normal",
        "Preempting",
        format!(
            "evicting {} lower-priority instance(s) on node {}",
            plan.victims.len(),
            plan.node
        ),
    );
    let api: Api<Instance> = scheduler.instances_api();
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
    true
}
