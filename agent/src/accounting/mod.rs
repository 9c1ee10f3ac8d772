//! Per-Instance accounting on the agent's `/metrics`: CPU seconds and memory (cgroup),
//! disk bytes (cgroup `io.stat`/blkio), network bytes and packets, and process starts.
//!
//! At start the agent loads eBPF programs (written in C in `agent/bpf/`, built by
//! `build.rs`, embedded): a cgroup_skb ingress/egress pair that the reconciler attaches
//! to each container's cgroup as it creates it (and that is detached when the
//! container is deleted), counting the bytes and packets of its sockets, and a
//! `sched/sched_process_exec` tracepoint counting the programs its processes start.
//! Whether that worked is the Node condition `NetworkAccounting` (`True`/`Ebpf`, or
//! `False`/`EbpfUnavailable` with the error). Without eBPF the network counters come
//! from `/proc/<pid>/net/dev` of a process in the container (its network namespace's
//! interfaces, `source="netdev"`) and process starts are absent: nothing is invented.
//!
//! The samples are taken every `--usage-interval` (with the `hmctl top` report) and
//! describe each container's current cgroup, so they reset when a container restarts,
//! as cAdvisor's do.
//!
//! # Layout
//! - [`bpf`]: loading the programs, attaching them per cgroup, reading their maps.
//! - [`cgroup`]: the cgroup v2 mount, disk bytes and the `/proc/<pid>/net/dev` fallback.
//! - `exposition`: the Prometheus collector of the latest samples.

pub mod bpf;
pub mod cgroup;
mod exposition;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hypermesh_api::Resource;
use hypermesh_api::v1::{Condition, Instance};
use hypermesh_containers::container::cgroup_usage;
use hypermesh_runtime::telemetry::{self, Exposition};
use prometheus_client::registry::Registry;

use crate::reconcile::container_id;
use bpf::{BpfAccounting, NetCounters};
use cgroup::DiskBytes;

/// The Node condition saying how Instance network traffic is counted.
pub const CONDITION: &str = "NetworkAccounting";

/// Where a container's network counters came from (the `source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkSource {
    /// The cgroup_skb programs: bytes and packets of the container's own sockets.
    Ebpf,
    /// `/proc/<pid>/net/dev`: every interface of the container's network namespace.
    NetDev,
}

impl NetworkSource {
    pub fn label(self) -> &'static str {
        match self {
            NetworkSource::Ebpf => "ebpf",
            NetworkSource::NetDev => "netdev",
        }
    }
}

/// One container's readings; `None` where the kernel gave nothing.
#[derive(Clone, Debug, Default)]
pub struct ContainerSample {
    pub namespace: String,
    pub instance: String,
    pub container: String,
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub network: Option<(NetCounters, NetworkSource)>,
    pub disk: Option<DiskBytes>,
    pub process_starts: Option<u64>,
}

/// The accounting of one agent: the eBPF programs if they loaded, and the samples.
pub struct Accounting {
    bpf: Option<Mutex<BpfAccounting>>,
    /// Why eBPF is not used, when it is not.
    unavailable: Option<String>,
    cgroup2: Option<PathBuf>,
    samples: Arc<Mutex<Vec<ContainerSample>>>,
    /// Containers whose cgroup the programs could not be attached to.
    attach_failures: Arc<AtomicU64>,
}

/// `error` with its sources, each once.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Accounting {
    /// Loads the eBPF programs; on failure (no CAP_BPF/CAP_SYS_ADMIN, no cgroup v2
    /// hierarchy, a kernel that refuses them) keeps the reason and uses the fallback.
    pub fn start() -> Arc<Accounting> {
        let cgroup2 = cgroup::cgroup2_root();
        let loaded = match &cgroup2 {
            None => Err(
                "no cgroup v2 hierarchy is mounted (cgroup_skb programs attach to \
                 cgroup v2 directories)"
                    .to_string(),
            ),
            Some(_) => BpfAccounting::load().map_err(|e| error_chain(&e)),
        };
        let (bpf, unavailable) = match loaded {
            Ok(bpf) => {
                tracing::info!("eBPF accounting loaded (cgroup_skb, sched_process_exec)");
                (Some(Mutex::new(bpf)), None)
            }
            Err(error) => {
                tracing::warn!(%error, "eBPF accounting unavailable; network counters from /proc/<pid>/net/dev");
                (None, Some(error))
            }
        };
        Arc::new(Accounting {
            bpf,
            unavailable,
            cgroup2,
            samples: Arc::default(),
            attach_failures: Arc::default(),
        })
    }

    /// Whether the eBPF programs are loaded.
    pub fn ebpf(&self) -> bool {
        self.bpf.is_some()
    }

    /// The `NetworkAccounting` Node condition (no transition time yet).
    pub fn condition(&self) -> Condition {
        match &self.unavailable {
            None => crate::conditions::condition(
                CONDITION,
                true,
                "Ebpf",
                "eBPF programs count each Instance container's network bytes and packets \
                 (cgroup_skb) and process starts (sched_process_exec)",
            ),
            Some(error) => crate::conditions::condition(
                CONDITION,
                false,
                "EbpfUnavailable",
                format!(
                    "{error}; network counters come from each container's \
                     /proc/<pid>/net/dev and process starts are not counted"
                ),
            ),
        }
    }

    /// Starts counting container `id`, whose task (and so cgroup) was just created.
    /// Failures are logged: that container falls back to `/proc/<pid>/net/dev`.
    pub fn attach(&self, id: &str) {
        let (Some(bpf), Some(root)) = (&self.bpf, &self.cgroup2) else {
            return;
        };
        match lock(bpf).attach(id, &cgroup::v2_dir(root, id)) {
            Ok(cgroup) => tracing::debug!(container = id, cgroup, "eBPF accounting attached"),
            Err(e) => {
                self.attach_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(container = id, error = %error_chain(&e), "eBPF accounting not attached")
            }
        }
    }

    /// Stops counting container `id` (deleted) and drops its counters.
    pub fn forget(&self, id: &str) {
        if let Some(bpf) = &self.bpf {
            lock(bpf).forget(id);
        }
    }

    /// Samples every container of `instances` (the Instances bound to this node) and
    /// forgets attachments whose cgroup is gone.
    pub fn observe(&self, instances: &[Instance]) {
        let root = self.cgroup2.as_deref();
        let mut bpf = self.bpf.as_ref().map(|b| lock(b));
        let mut samples = Vec::new();
        for instance in instances {
            let meta = instance.meta();
            let containers = instance.spec.iter().flat_map(|s| &s.containers);
            for container in containers {
                let id = container_id(&meta.namespace, &meta.name, &meta.uid, &container.name);
                let usage = cgroup_usage(&id);
                let current = root.and_then(|r| bpf::cgroup_id(&cgroup::v2_dir(r, &id)));
                let counted = bpf.as_ref().and_then(|b| {
                    b.cgroup_of(&id)
                        .filter(|c| Some(*c) == current)
                        .map(|c| (b, c))
                });
                let (network, process_starts) = match counted {
                    Some((b, cgroup)) => (
                        b.network(cgroup).ok().map(|n| (n, NetworkSource::Ebpf)),
                        b.execs(cgroup).ok(),
                    ),
                    None => (
                        cgroup::net_dev(root, &id).map(|n| (n, NetworkSource::NetDev)),
                        None,
                    ),
                };
                let disk = cgroup::disk_bytes(root, &id);
                if usage.is_none() && network.is_none() && disk.is_none() {
                    continue;
                }
                samples.push(ContainerSample {
                    namespace: meta.namespace.clone(),
                    instance: meta.name.clone(),
                    container: container.name.clone(),
                    cpu_seconds: usage.map(|u| u.cpu_nanos as f64 / 1e9),
                    memory_bytes: usage.map(|u| u.memory_bytes),
                    network,
                    disk,
                    process_starts,
                });
            }
        }
        if let Some(b) = bpf.as_mut() {
            // Attachments whose cgroup is gone (a deletion the reconciler did not see
            // through, e.g. containerd deleted it): judged by the cgroup, not by the
            // list, which may predate a container the reconciler just created.
            let stale: Vec<String> = b
                .attached()
                .filter(|id| {
                    let now = root.and_then(|r| bpf::cgroup_id(&cgroup::v2_dir(r, id)));
                    now.is_none() || now != b.cgroup_of(id)
                })
                .map(str::to_string)
                .collect();
            for id in stale {
                b.forget(&id);
            }
        }
        *lock(&self.samples) = samples;
    }

    /// The latest samples.
    pub fn samples(&self) -> Vec<ContainerSample> {
        lock(&self.samples).clone()
    }

    /// These metrics for the telemetry server (prefix `hypermesh_agent_`).
    pub fn exposition(&self) -> Exposition {
        let mut registry = Registry::with_prefix("hypermesh_agent");
        registry.register_collector(Box::new(exposition::SampleCollector {
            samples: self.samples.clone(),
            ebpf: self.ebpf(),
            attach_failures: self.attach_failures.clone(),
        }));
        Arc::new(move |out: &mut String| telemetry::write_registry(out, &registry))
    }
}
