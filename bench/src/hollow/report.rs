//! The hollow benchmark's markdown tables, and one JSON line per run (for the plot).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::{HollowArgs, HollowResult};
use crate::stats::{format_count, format_duration, percentile};

/// The run as markdown.
pub fn table(args: &HollowArgs, r: &HollowResult) -> String {
    let mut out = String::new();
    let expected = args.nodes as f64 / args.heartbeat_interval.as_secs_f64();
    out.push_str(&format!(
        "{} hollow nodes (heartbeat {:?}, Lease {:?}) joined and registered in {:.1} s ({} nodes/s); hollow fleet RSS {:.0} MiB; apiserver RSS before any node joined {:.0} MiB\n\n",
        args.nodes,
        args.heartbeat_interval,
        args.lease_duration,
        r.register_wall.as_secs_f64(),
        format_count(args.nodes as f64 / r.register_wall.as_secs_f64().max(f64::MIN_POSITIVE)),
        r.fleet_rss_mib,
        r.apiserver_rss_start_mib,
    ));
    out.push_str(&format!("| window | s | apiserver CPU (cores) | scheduler CPU | apiserver RSS MiB (peak) | heartbeats/s (expected) | Lease renew p50 / p99 | Get node p50 / p99 | List 100 instances p50 / p99 | watch delivery p50 / p99 ({} watchers) |\n", args.probe_watchers));
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for w in &r.windows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.0} ({:.0}) | {} ({}){} | {} / {} | {} / {} | {} / {} | {} / {}{} |\n",
            w.label,
            w.wall.as_secs_f64(),
            w.apiserver_cores,
            w.scheduler_cores,
            w.apiserver_rss_mib,
            w.apiserver_rss_peak_mib,
            format_count(w.heartbeats_per_s),
            format_count(expected),
            if w.heartbeat_failures > 0 {
                format!(", {} failed", w.heartbeat_failures)
            } else {
                String::new()
            },
            format_duration(w.lease_p50),
            format_duration(w.lease_p99),
            format_duration(w.get_p50),
            format_duration(w.get_p99),
            format_duration(w.list_p50),
            format_duration(w.list_p99),
            format_duration(w.watch_p50),
            format_duration(w.watch_p99),
            if w.watch_errors > 0 {
                format!(", {} failed", w.watch_errors)
            } else {
                String::new()
            },
        ));
    }
    if let Some(l) = &r.load {
        out.push_str(&format!(
            "\nLoad: {} Workloads, {} Instances. Created by the workload controller at {}/s ({:.1} s); bound at {} bindings/s (first to last binding {:.1} s; last binding {:.1} s after the first create); all Running {:.1} s after the first create.\n",
            l.workloads,
            format_count(l.instances as f64),
            format_count(l.created_per_s()),
            l.created_wall.as_secs_f64(),
            format_count(l.bindings_per_s()),
            l.bound_span.as_secs_f64(),
            l.bound_wall.as_secs_f64(),
            l.running_wall.as_secs_f64(),
        ));
        if !r.bind_delivery.is_empty() {
            out.push_str(&format!(
                "Bind → the node's Instance watch: p50 {}, p99 {}, max {} ({} Instances).\n",
                format_duration(percentile(&r.bind_delivery, 0.5)),
                format_duration(percentile(&r.bind_delivery, 0.99)),
                format_duration(r.bind_delivery.last().copied().unwrap_or_default()),
                r.bind_delivery.len(),
            ));
        }
    }
    if let Some(d) = &r.detect {
        out.push_str(&format!(
            "\nDetect: {} nodes stopped at once; marked Ready=Unknown after p50 {}, max {} (Lease {:?}).\n",
            d.killed,
            format_duration(percentile(&d.detected, 0.5)),
            format_duration(d.detected.last().copied().unwrap_or_default()),
            args.lease_duration,
        ));
    }
    out
}

/// Appends the run's key figures as one JSON line.
pub fn append_record(path: &Path, args: &HollowArgs, r: &HollowResult) -> Result<()> {
    let window = |prefix: &str| r.windows.iter().find(|w| w.label.starts_with(prefix));
    let w = |prefix: &str| {
        window(prefix).map(|w| {
            serde_json::json!({
                "apiserver_cores": w.apiserver_cores,
                "scheduler_cores": w.scheduler_cores,
                "apiserver_rss_mib": w.apiserver_rss_mib,
                "apiserver_rss_peak_mib": w.apiserver_rss_peak_mib,
                "heartbeats_per_s": w.heartbeats_per_s,
                "lease_p99_ms": w.lease_p99.as_secs_f64() * 1e3,
                "get_p50_ms": w.get_p50.as_secs_f64() * 1e3,
                "get_p99_ms": w.get_p99.as_secs_f64() * 1e3,
                "list_p50_ms": w.list_p50.as_secs_f64() * 1e3,
                "list_p99_ms": w.list_p99.as_secs_f64() * 1e3,
                "watch_p50_ms": w.watch_p50.as_secs_f64() * 1e3,
                "watch_p99_ms": w.watch_p99.as_secs_f64() * 1e3,
            })
        })
    };
    let line = serde_json::json!({
        "nodes": args.nodes,
        "instances": args.instances,
        "heartbeat_s": args.heartbeat_interval.as_secs_f64(),
        "lease_s": args.lease_duration.as_secs_f64(),
        "register_s": r.register_wall.as_secs_f64(),
        "apiserver_rss_start_mib": r.apiserver_rss_start_mib,
        "idle": w("idle"),
        "load": w("creating"),
        "steady": w("steady"),
        "bindings_per_s": r.load.as_ref().map(|l| l.bindings_per_s()),
        "created_per_s": r.load.as_ref().map(|l| l.created_per_s()),
        "running_s": r.load.as_ref().map(|l| l.running_wall.as_secs_f64()),
        "detect_p50_s": r.detect.as_ref().map(|d| percentile(&d.detected, 0.5).as_secs_f64()),
        "detect_max_s": r.detect.as_ref().and_then(|d| d.detected.last()).map(|d| d.as_secs_f64()),
        "fleet_rss_mib": r.fleet_rss_mib,
        "probe_watchers": args.probe_watchers,
        "bind_delivery_p50_ms": (!r.bind_delivery.is_empty())
            .then(|| percentile(&r.bind_delivery, 0.5).as_secs_f64() * 1e3),
        "bind_delivery_p99_ms": (!r.bind_delivery.is_empty())
            .then(|| percentile(&r.bind_delivery, 0.99).as_secs_f64() * 1e3),
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))
}
