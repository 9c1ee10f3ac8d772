//! Gang scheduling: the Instances of a Workload with `spec.gang.minAvailable` are
//! bound all-or-nothing. Placements are simulated on the live cluster picture; if
//! fewer than `minAvailable` (counting members already bound) fit, every simulated
//! placement is undone and the whole gang waits.

use hypermesh_api::Resource;
use hypermesh_api::v1::Instance;

use crate::cluster::InstanceKey;
use crate::plugins::{self, Placement, Request};
use crate::scheduler::Scheduler;

/// Tries to place the gang `(namespace, workload)` needing `min_available` members.
pub fn schedule_gang(scheduler: &mut Scheduler, gang: (String, String), min_available: i32) {
    let min = usize::try_from(min_available).unwrap_or(0);
    let mut members: Vec<Instance> = scheduler
        .pending()
        .values()
        .filter(|i| {
            scheduler
                .cluster()
                .gang_of(i)
                .is_some_and(|(g, _)| g == gang)
        })
        .cloned()
        .collect();
    members.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
    for m in &members {
        scheduler.dequeue(&(m.meta().namespace.clone(), m.meta().name.clone()));
    }
    let already_bound = scheduler.cluster().bound_members(&gang);
    if members.len() + already_bound < min {
        let message = format!(
            "gang {}: {} of minAvailable {min} instances exist; waiting for the rest",
            gang.1,
            members.len() + already_bound
        );
        for m in &members {
            scheduler.park(m, message.clone());
        }
        return;
    }
    let generation = scheduler.cluster().generation;
    let mut placed: Vec<(Instance, Request, Placement)> = Vec::new();
    let mut unplaced: Vec<(Instance, String)> = Vec::new();
    let mut last_reasons = None;
    for m in &members {
        let req = Request::new(m, scheduler.cluster());
        match scheduler.place(&req) {
            Ok((node, gpus)) => {
                scheduler.assume_only(m, req.resources, node.clone(), gpus.clone());
                placed.push((m.clone(), req, (node, gpus)));
            }
            Err(reasons) => {
                let why = plugins::explain(scheduler.cluster().node_count(), &reasons);
                unplaced.push((m.clone(), why));
                last_reasons = Some(reasons);
            }
        }
    }
    if placed.len() + already_bound >= min {
        for (inst, req, (node, gpus)) in placed {
            let key: InstanceKey = (inst.meta().namespace.clone(), inst.meta().name.clone());
            scheduler.cluster_mut().unbind(&key);
            scheduler.assume_and_bind(&inst, req.resources, node, gpus);
        }
        // Members beyond minAvailable that found no room wait like any Instance.
        for (inst, why) in unplaced {
            scheduler.park(&inst, why);
        }
        return;
    }
    for (inst, _, _) in &placed {
        scheduler
            .cluster_mut()
            .unbind(&(inst.meta().namespace.clone(), inst.meta().name.clone()));
    }
    // The what-if placements were undone: nothing changed in the cluster.
    scheduler.cluster_mut().generation = generation;
    let why = last_reasons
        .map(|r| plugins::explain(scheduler.cluster().node_count(), &r))
        .unwrap_or_default();
    let message = format!(
        "gang {}: only {} of minAvailable {min} instances fit; none bound. {why}",
        gang.1,
        placed.len() + already_bound
    );
    for m in &members {
        scheduler.park(m, message.clone());
    }
}
