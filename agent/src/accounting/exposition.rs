//! The accounting samples as Prometheus metrics (`hypermesh_agent_instance_*`, labelled
//! `namespace`, `instance`, `container`, and `source` for network counters): a
//! collector that encodes the latest samples on each scrape. A value the kernel did
//! not give is left out, never written as zero.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::ContainerSample;

/// Encodes the samples [`super::Accounting::observe`] took last.
#[derive(Debug)]
pub(super) struct SampleCollector {
    pub(super) samples: Arc<Mutex<Vec<ContainerSample>>>,
    pub(super) ebpf: bool,
    pub(super) attach_failures: Arc<AtomicU64>,
}

fn labels(s: &ContainerSample, source: bool) -> Vec<(&'static str, String)> {
    let mut labels = vec![
        ("namespace", s.namespace.clone()),
        ("instance", s.instance.clone()),
        ("container", s.container.clone()),
    ];
    if source && let Some((_, source)) = &s.network {
        labels.push(("source", source.label().to_string()));
    }
    labels
}

/// One counter family (`name` gets `_total`), with a sample per container that has a
/// value; nothing at all when none has.
fn counters<N: EncodeCounterValue + fmt::Debug>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[ContainerSample],
    value: impl Fn(&ContainerSample) -> Option<N>,
) -> fmt::Result {
    let present: Vec<(&ContainerSample, N)> = samples
        .iter()
        .filter_map(|s| value(s).map(|v| (s, v)))
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let network = name.starts_with("instance_network_");
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (s, v) in present {
        let labels = labels(s, network);
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SampleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let ebpf = ConstGauge::new(i64::from(self.ebpf));
        ebpf.encode(encoder.encode_descriptor(
            "accounting_ebpf",
            "1 when eBPF programs count Instance network traffic and process starts, 0 when the agent fell back to /proc/<pid>/net/dev (see the NetworkAccounting Node condition)",
            None,
            ebpf.metric_type(),
        )?)?;
        if self.ebpf {
            let failures = ConstCounter::new(self.attach_failures.load(Ordering::Relaxed));
            failures.encode(encoder.encode_descriptor(
                "accounting_attach_failures",
                "Containers whose cgroup the eBPF programs could not be attached to (counted from /proc/<pid>/net/dev instead; the agent log says why)",
                None,
                failures.metric_type(),
            )?)?;
        }
        let e = &mut encoder;
        let s = &samples;
        counters(
            e,
            "instance_cpu_seconds",
            "CPU time used by an Instance's container (cgroup)",
            s,
            |c| c.cpu_seconds,
        )?;
        let memory: Vec<_> = s
            .iter()
            .filter_map(|c| c.memory_bytes.map(|m| (c, m)))
            .collect();
        if !memory.is_empty() {
            let mut family = e.encode_descriptor(
                "instance_memory_bytes",
                "Memory charged to an Instance's container now (cgroup)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (c, bytes) in memory {
                let gauge = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(&labels(c, false))?)?;
            }
        }
        let net = |f: fn(&super::NetCounters) -> u64| {
            move |c: &ContainerSample| c.network.as_ref().map(|(n, _)| f(n))
        };
        counters(
            e,
            "instance_network_receive_bytes",
            "Bytes (whole IP packets) received by an Instance container's sockets (source=ebpf) or its network namespace's interfaces (source=netdev)",
            s,
            net(|n| n.rx_bytes),
        )?;
        counters(
            e,
            "instance_network_receive_packets",
            "Packets received by an Instance container's sockets (source=ebpf) or its network namespace's interfaces (source=netdev)",
            s,
            net(|n| n.rx_packets),
        )?;
        counters(
            e,
            "instance_network_transmit_bytes",
            "Bytes (whole IP packets) sent by an Instance container's sockets (source=ebpf) or its network namespace's interfaces (source=netdev)",
            s,
            net(|n| n.tx_bytes),
        )?;
        counters(
            e,
            "instance_network_transmit_packets",
            "Packets sent by an Instance container's sockets (source=ebpf) or its network namespace's interfaces (source=netdev)",
            s,
            net(|n| n.tx_packets),
        )?;
        counters(
            e,
            "instance_disk_read_bytes",
            "Bytes an Instance's container read from block devices (cgroup io.stat or blkio)",
            s,
            |c| c.disk.map(|d| d.read),
        )?;
        counters(
            e,
            "instance_disk_write_bytes",
            "Bytes an Instance's container wrote to block devices (cgroup io.stat or blkio)",
            s,
            |c| c.disk.map(|d| d.write),
        )?;
        counters(
            e,
            "instance_process_starts",
            "Programs started (execve) in an Instance's container, counted by the sched_process_exec tracepoint",
            s,
            |c| c.process_starts,
        )?;
        Ok(())
    }
}
