//! Gang scheduling: the Instances of a Workload with `spec.gang.minAvailable` are
//! bound all-or-nothing. Placements are simulated on the live cluster picture; if
//! fewer than `minAvailable` (counting members already bound) fit, every simulated
//! placement is undone and the whole gang waits.
//!
//! The scheduler lends itself through [`GangHost`]: the few operations a gang needs,
//! not its internals.

use std::collections::BTreeMap;

use hypermesh_api::Resource;
use hypermesh_api::v1::Instance;

use crate::cluster::{ClusterState, InstanceKey};
use crate::plugins::{self, GpuPick, Placement, Request, Unfit};
use crate::resources::Resources;

/// What gang scheduling needs from the scheduler.
pub trait GangHost {
    /// The cluster picture.
    fn cluster(&self) -> &ClusterState;
    /// The cluster picture, for what-if placements that are undone after.
    fn cluster_mut(&mut self) -> &mut ClusterState;
    /// The unbound members of `gang`, by name.
    fn pending_members(&self, gang: &(String, String)) -> Vec<Instance>;
    /// Takes an Instance out of the scheduling queue.
    fn dequeue(&mut self, key: &InstanceKey);
    /// Parks an Instance that cannot be placed now, with the reason.
    fn park(&mut self, inst: &Instance, message: String);
    /// The best node for `req`, or why none fits.
    fn place(&mut self, req: &Request) -> Result<Placement, BTreeMap<Unfit, usize>>;
    /// Counts `inst` as bound to `node` without telling the apiserver.
    fn assume_only(&mut self, inst: &Instance, requests: Resources, node: String, gpus: GpuPick);
    /// Counts `inst` as bound to `node` and sends the Bind.
    fn assume_and_bind(
        &mut self,
        inst: &Instance,
        requests: Resources,
        node: String,
        gpus: GpuPick,
    );
}

/// Tries to place the gang `(namespace, workload)` needing `min_available` members.
pub fn schedule_gang(scheduler: &mut impl GangHost, gang: (String, String), min_available: i32) {
    let min = usize::try_from(min_available).unwrap_or(0);
    let members = scheduler.pending_members(&gang);
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
