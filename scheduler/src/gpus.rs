//! GPU placement: which of a node's GPUs an Instance would get (whole free devices for
//! whole-GPU requests, the most-used shareable device for fractional ones), and the
//! cheaper yes/no check the filter runs on every candidate node.

use crate::cluster::{ClusterState, GpuDevice, NodeState};
use crate::plugins::{GpuPick, Request, privacy_allows};

/// Whether one GPU of `node` matches the request's model, memory and privacy.
fn gpu_eligible(cluster: &ClusterState, node: &NodeState, req: &Request, g: &GpuDevice) -> bool {
    let level = if g.privacy == 0 {
        node.privacy
    } else {
        g.privacy
    };
    g.model.contains(&req.gpu_model)
        && g.memory >= req.gpu_memory
        && privacy_allows(cluster, node, level, &req.namespace, req.spec.privacy)
}

/// The GPUs an Instance would get on `node`: whole free devices for whole-GPU requests,
/// the most-used shareable device with room for fractional ones (keeping whole GPUs free).
pub fn pick_gpus(cluster: &ClusterState, node: &NodeState, req: &Request) -> Option<GpuPick> {
    let wanted = req.resources.gpu_milli;
    if wanted == 0 {
        return Some(Vec::new());
    }
    let eligible = |g: &&GpuDevice| gpu_eligible(cluster, node, req, g);
    if wanted.is_multiple_of(1000) {
        let count = usize::try_from(wanted / 1000).ok()?;
        let free: Vec<&GpuDevice> = node
            .gpus
            .iter()
            .filter(eligible)
            .filter(|g| g.used_milli == 0)
            .take(count)
            .collect();
        return (free.len() == count)
            .then(|| free.iter().map(|g| (g.asset.clone(), 1000)).collect());
    }
    if wanted > 1000 {
        return None;
    }
    node.gpus
        .iter()
        .filter(eligible)
        .filter(|g| g.has_room_for(wanted))
        .max_by_key(|g| (g.used_milli, std::cmp::Reverse(g.asset.clone())))
        .map(|g| vec![(g.asset.clone(), wanted)])
}

/// Whether `node` has the GPUs `req` asks for, without choosing them (no allocation:
/// this runs for every candidate node; [`pick_gpus`] runs for the winner only).
pub fn gpus_fit(cluster: &ClusterState, node: &NodeState, req: &Request) -> bool {
    let wanted = req.resources.gpu_milli;
    if wanted == 0 {
        return true;
    }
    if wanted > 1000 && !wanted.is_multiple_of(1000) {
        return false;
    }
    let eligible = |g: &&GpuDevice| gpu_eligible(cluster, node, req, g);
    if wanted.is_multiple_of(1000) {
        let count = usize::try_from(wanted / 1000).unwrap_or(usize::MAX);
        return node
            .gpus
            .iter()
            .filter(eligible)
            .filter(|g| g.used_milli == 0)
            .take(count)
            .count()
            == count;
    }
    node.gpus
        .iter()
        .filter(eligible)
        .any(|g| g.has_room_for(wanted))
}
