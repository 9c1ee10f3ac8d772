//! Live usage for `hmctl top`: every `--usage-interval` the agent samples the host
//! (`/proc/stat`, `/proc/meminfo`) and the cgroup of every container of the Instances
//! bound to it (CPU time and memory), turns CPU time into cores over the interval,
//! and sends one `UsageService.Report`. Numbers are what the kernel counts; an
//! Instance whose cgroups cannot be read is left out, and CPU is absent until two
//! samples exist.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hypermesh_api::Api;
use hypermesh_api::v1::usage_service_client::UsageServiceClient;
use hypermesh_api::v1::{Instance, ListRequest, NodeUsageReport, ResourceUsage};
use hypermesh_containers::container::cgroup_usage;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::debug;

use crate::config::Config;
use crate::reconcile::container_id;

/// Busy and total jiffies over all CPUs, and the number of CPUs, from `/proc/stat`.
fn host_cpu() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let fields: Vec<u64> = lines
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let cpus = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    Some((total.saturating_sub(idle), total, cpus))
}

/// MemTotal - MemAvailable, in bytes.
fn host_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(field("MemTotal:")?.saturating_sub(field("MemAvailable:")?) * 1024)
}

/// The previous sample of each thing measured, to turn counters into rates.
#[derive(Default)]
struct Samples {
    host: Option<(u64, u64)>,
    /// Instance uid → (when, CPU nanoseconds of all its containers).
    instances: HashMap<String, (Instant, u64)>,
}

fn millicores(nanos: u64, over: Duration) -> u64 {
    let seconds = over.as_secs_f64();
    if seconds <= 0.0 {
        return 0;
    }
    (nanos as f64 / 1e9 / seconds * 1000.0).round() as u64
}

impl Samples {
    fn node(&mut self, node: &str, window: Duration) -> ResourceUsage {
        let cpu = host_cpu().and_then(|(busy, total, cpus)| {
            let previous = self.host.replace((busy, total));
            let (b0, t0) = previous?;
            let (db, dt) = (busy.saturating_sub(b0), total.saturating_sub(t0));
            (dt > 0).then(|| (db as f64 / dt as f64 * cpus as f64 * 1000.0).round() as u64)
        });
        ResourceUsage {
            namespace: String::new(),
            name: node.to_string(),
            cpu_millicores: cpu,
            memory_bytes: host_memory().unwrap_or(0),
            timestamp: Some(hypermesh_api::time::now()),
            window_seconds: window.as_secs_f64(),
        }
    }

    fn instance(&mut self, instance: &Instance, now: Instant) -> Option<ResourceUsage> {
        let meta = instance.metadata.as_ref()?;
        let spec = instance.spec.as_ref()?;
        let (mut cpu_nanos, mut memory) = (0u64, 0u64);
        let mut any = false;
        for container in &spec.containers {
            let id = container_id(&meta.namespace, &meta.name, &meta.uid, &container.name);
            if let Some(usage) = cgroup_usage(&id) {
                any = true;
                cpu_nanos = cpu_nanos.saturating_add(usage.cpu_nanos);
                memory = memory.saturating_add(usage.memory_bytes);
            }
        }
        if !any {
            self.instances.remove(&meta.uid);
            return None;
        }
        let previous = self.instances.insert(meta.uid.clone(), (now, cpu_nanos));
        let (cpu, window) = match previous {
            Some((then, before)) => {
                let window = now.duration_since(then);
                (
                    Some(millicores(cpu_nanos.saturating_sub(before), window)),
                    window,
                )
            }
            None => (None, Duration::ZERO),
        };
        Some(ResourceUsage {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            cpu_millicores: cpu,
            memory_bytes: memory,
            timestamp: Some(hypermesh_api::time::now()),
            window_seconds: window.as_secs_f64(),
        })
    }
}

/// Reports usage every `config.usage_interval` until `shutdown`.
pub async fn run(
    config: Config,
    channel: Channel,
    accounting: std::sync::Arc<crate::accounting::Accounting>,
    shutdown: CancellationToken,
) {
    let instances = Api::<Instance>::new(channel.clone());
    let mut client = UsageServiceClient::new(channel);
    let period = config.usage_interval.max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Samples::default();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let window = now.duration_since(last);
        last = now;
        let bound = match instances
            .list_all(ListRequest {
                field_selector: format!("spec.nodeName={}", config.node_name),
                ..Default::default()
            })
            .await
        {
            Ok((items, _)) => items,
            Err(e) => {
                debug!(error = %e.message(), "usage: cannot list bound instances");
                continue;
            }
        };
        let live: std::collections::HashSet<String> = bound
            .iter()
            .map(|i| hypermesh_api::Resource::meta(i).uid.clone())
            .collect();
        samples.instances.retain(|uid, _| live.contains(uid));
        accounting.observe(&bound);
        let report = NodeUsageReport {
            node_name: config.node_name.clone(),
            node: Some(samples.node(&config.node_name, window)),
            instances: bound
                .iter()
                .filter_map(|i| samples.instance(i, now))
                .collect(),
        };
        if let Err(e) = client.report(report).await {
            debug!(error = %e.message(), "usage: report refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_read_from_proc() {
        let (busy, total, cpus) = host_cpu().expect("/proc/stat");
        assert!(busy <= total && cpus >= 1);
        assert!(host_memory().expect("/proc/meminfo") > 0);
        assert_eq!(millicores(500_000_000, Duration::from_secs(1)), 500);
    }
}
