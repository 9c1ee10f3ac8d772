//! What the hollow benchmark samples while the fleet runs: an API prober (an admin
//! client getting a random Node and listing a page of Instances, at a fixed rate), and
//! a window over the apiserver's CPU and resident memory plus the fleet's heartbeats.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_api::v1::{Instance, ListRequest, Node};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::node::{FleetStats, node_name};
use crate::procfs::{cpu_seconds, memory};
use crate::stats::percentile;

/// Latencies the prober gathered.
#[derive(Debug, Default)]
pub struct ProbeSamples {
    /// `NodeService.Get` of a random hollow node.
    pub get: Vec<Duration>,
    /// `InstanceService.List` of one page (limit 100) of `default`.
    pub list: Vec<Duration>,
    /// Calls that failed.
    pub errors: u64,
    /// Probe Lease write → its MODIFIED event at each watcher ([`super::watch_probe`]).
    pub delivery: Vec<Duration>,
    /// Probe writes or watches that failed.
    pub delivery_errors: u64,
}

/// Runs the prober until `stop`: every `period`, one Get and one List, one after the
/// other, from its own connection.
pub fn start_prober(
    channel: tonic::transport::Channel,
    nodes: usize,
    period: Duration,
    stop: CancellationToken,
) -> Arc<Mutex<ProbeSamples>> {
    let samples = Arc::new(Mutex::new(ProbeSamples::default()));
    let out = samples.clone();
    tokio::spawn(async move {
        let node_api: Api<Node> = Api::new(channel.clone());
        let instance_api: Api<Instance> = Api::new(channel);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let name = node_name(rand::random_range(0..nodes.max(1)));
            let started = Instant::now();
            let get = node_api.get("", &name).await;
            let get_took = started.elapsed();
            let started = Instant::now();
            let list = instance_api
                .list(ListRequest {
                    namespace: "default".into(),
                    limit: 100,
                    ..Default::default()
                })
                .await;
            let list_took = started.elapsed();
            let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
            match get {
                Ok(_) => s.get.push(get_took),
                Err(_) => s.errors += 1,
            }
            match list {
                Ok(_) => s.list.push(list_took),
                Err(_) => s.errors += 1,
            }
        }
    });
    out
}

/// One measured window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// What was going on.
    pub label: String,
    /// Its length.
    pub wall: Duration,
    /// Apiserver CPU over the window, in cores (CPU seconds ÷ wall seconds).
    pub apiserver_cores: f64,
    /// Scheduler CPU, in cores.
    pub scheduler_cores: f64,
    /// Apiserver RSS at the end, MiB.
    pub apiserver_rss_mib: f64,
    /// Highest apiserver RSS sampled during the window, MiB.
    pub apiserver_rss_peak_mib: f64,
    /// Lease renewals per second the apiserver absorbed.
    pub heartbeats_per_s: f64,
    /// Failed renewals or condition reads in the window.
    pub heartbeat_failures: u64,
    /// Lease renewal p50 and p99.
    pub lease_p50: Duration,
    pub lease_p99: Duration,
    /// Prober Get p50/p99 and List p50/p99.
    pub get_p50: Duration,
    pub get_p99: Duration,
    pub list_p50: Duration,
    pub list_p99: Duration,
    /// Prober calls that failed.
    pub probe_errors: u64,
    /// Watch delivery (probe write → event at a watcher): samples, p50 and p99.
    pub watch_samples: usize,
    pub watch_p50: Duration,
    pub watch_p99: Duration,
    /// Probe writes or watches that failed.
    pub watch_errors: u64,
}

/// Starts a window: remembers the counters, samples RSS every second until `finish`.
pub struct WindowMeter {
    label: String,
    began: Instant,
    cpu: (f64, f64),
    heartbeats: u64,
    failures: u64,
    apiserver: Option<u32>,
    scheduler: Option<u32>,
    peak_kib: Arc<std::sync::atomic::AtomicU64>,
    sampler: CancellationToken,
}

impl WindowMeter {
    /// Starts measuring; drains the samples gathered before.
    pub fn start(
        label: impl Into<String>,
        apiserver: Option<u32>,
        scheduler: Option<u32>,
        stats: &FleetStats,
        probe: &Mutex<ProbeSamples>,
    ) -> WindowMeter {
        stats.take_lease_latency();
        *probe.lock().unwrap_or_else(|e| e.into_inner()) = ProbeSamples::default();
        let peak_kib = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampler = CancellationToken::new();
        if let Some(pid) = apiserver {
            let (peak, stop) = (peak_kib.clone(), sampler.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    if let Some(m) = memory(pid) {
                        peak.fetch_max(m.rss_kib, Ordering::Relaxed);
                    }
                }
            });
        }
        WindowMeter {
            label: label.into(),
            began: Instant::now(),
            cpu: (cpu_seconds(apiserver), cpu_seconds(scheduler)),
            heartbeats: stats.heartbeats.load(Ordering::Relaxed),
            failures: stats.heartbeat_failures.load(Ordering::Relaxed),
            apiserver,
            scheduler,
            peak_kib,
            sampler,
        }
    }

    /// Ends the window.
    pub fn finish(self, stats: &FleetStats, probe: &Mutex<ProbeSamples>) -> Window {
        self.sampler.cancel();
        let wall = self.began.elapsed();
        let secs = wall.as_secs_f64().max(f64::MIN_POSITIVE);
        let rss = self.apiserver.and_then(memory).map_or(0, |m| m.rss_kib);
        let peak = self.peak_kib.load(Ordering::Relaxed).max(rss);
        let mut lease = stats.take_lease_latency();
        lease.sort();
        let probe = std::mem::take(&mut *probe.lock().unwrap_or_else(|e| e.into_inner()));
        let (mut get, mut list, mut delivery) = (probe.get, probe.list, probe.delivery);
        get.sort();
        list.sort();
        delivery.sort();
        Window {
            label: self.label,
            wall,
            apiserver_cores: (cpu_seconds(self.apiserver) - self.cpu.0) / secs,
            scheduler_cores: (cpu_seconds(self.scheduler) - self.cpu.1) / secs,
            apiserver_rss_mib: rss as f64 / 1024.0,
            apiserver_rss_peak_mib: peak as f64 / 1024.0,
            heartbeats_per_s: (stats.heartbeats.load(Ordering::Relaxed) - self.heartbeats) as f64
                / secs,
            heartbeat_failures: stats.heartbeat_failures.load(Ordering::Relaxed) - self.failures,
            lease_p50: percentile(&lease, 0.50),
            lease_p99: percentile(&lease, 0.99),
            get_p50: percentile(&get, 0.50),
            get_p99: percentile(&get, 0.99),
            list_p50: percentile(&list, 0.50),
            list_p99: percentile(&list, 0.99),
            probe_errors: probe.errors,
            watch_samples: delivery.len(),
            watch_p50: percentile(&delivery, 0.50),
            watch_p99: percentile(&delivery, 0.99),
            watch_errors: probe.delivery_errors,
        }
    }
}
