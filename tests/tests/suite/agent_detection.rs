//! Hardware detection reports what the host itself says: logical CPUs as `nproc` and
//! /proc/cpuinfo count them, MemTotal from /proc/meminfo, block device sizes from
//! /sys/block (and `lsblk -b` where installed), and interface MTUs from `ip -j link`.

use std::collections::BTreeMap;
use std::process::Command;

use hypermesh_agent::detect::{self, HostPaths};
use hypermesh_api::v1::AssetType;

fn inventory() -> detect::Inventory {
    detect::detect(&HostPaths::default(), 110).expect("detection succeeds on Linux")
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn cpu_threads_match_nproc_and_cpuinfo() {
    let inv = inventory();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("cpuinfo");
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as u32;
    assert_eq!(inv.cpu.threads(), processors);
    if let Some(all) = run("nproc", &["--all"]) {
        assert_eq!(inv.cpu.threads().to_string(), all.trim(), "nproc --all");
    }
    assert!(inv.cpu.cores() >= 1 && inv.cpu.cores() <= inv.cpu.threads());
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string());
    if let Some(model) = model {
        assert_eq!(inv.cpu.sockets[0].model, model);
    }
    let cpu_assets = inv
        .device_assets()
        .into_iter()
        .filter(|a| a.kind == AssetType::Cpu)
        .count();
    assert_eq!(cpu_assets, inv.cpu.sockets.len());
}

#[test]
fn memory_matches_proc_meminfo_and_numa_split() {
    let inv = inventory();
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    assert_eq!(inv.memory.total_bytes, kb * 1024);
    let nodes = std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("node")
                        .is_some_and(|r| r.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(inv.memory.numa_total_bytes.len(), nodes);
    if nodes > 0 {
        let sum: u64 = inv.memory.numa_total_bytes.values().sum();
        assert!(
            sum > 0 && sum <= inv.memory.total_bytes * 2,
            "numa split {sum}"
        );
    }
}

#[test]
fn block_devices_match_sys_block_and_lsblk() {
    let inv = inventory();
    for d in &inv.storage.devices {
        let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{}/size", d.name))
            .expect("size")
            .trim()
            .parse()
            .expect("sectors");
        assert_eq!(d.size_bytes, sectors * 512, "{}", d.name);
    }
    if let Some(out) = run("lsblk", &["-b", "-d", "-n", "-o", "NAME,SIZE"]) {
        let lsblk: BTreeMap<&str, u64> = out
            .lines()
            .filter_map(|l| {
                let mut p = l.split_whitespace();
                Some((p.next()?, p.next()?.parse().ok()?))
            })
            .collect();
        for d in &inv.storage.devices {
            if let Some(size) = lsblk.get(d.name.as_str()) {
                assert_eq!(d.size_bytes, *size, "lsblk size of {}", d.name);
            }
        }
    }
    // Every hardware-backed disk with a size is reported.
    let backed = std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|s| s > 0)
        })
        .count();
    assert_eq!(inv.storage.devices.len(), backed);
    if let Some(root) = inv.storage.root() {
        assert!(root.available_bytes <= root.total_bytes);
    }
}

#[test]
fn interface_mtus_match_ip_link() {
    let inv = inventory();
    let Some(out) = run("ip", &["-j", "link"]) else {
        // iproute2 missing: compare with sysfs only.
        for i in &inv.network {
            let mtu =
                std::fs::read_to_string(format!("/sys/class/net/{}/mtu", i.name)).expect("mtu");
            assert_eq!(i.mtu.to_string(), mtu.trim());
        }
        return;
    };
    let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j link is JSON");
    let links = links.as_array().expect("array");
    let by_name: BTreeMap<String, u64> = links
        .iter()
        .filter_map(|l| Some((l["ifname"].as_str()?.to_string(), l["mtu"].as_u64()?)))
        .collect();
    // Other tests may add or remove interfaces meanwhile: compare the ones both saw.
    assert!(inv.network.iter().any(|i| by_name.contains_key(&i.name)));
    for i in inv.network.iter().filter(|i| by_name.contains_key(&i.name)) {
        assert_eq!(Some(&i.mtu), by_name.get(&i.name), "mtu of {}", i.name);
        // Link speed is only reported where the kernel knows it.
        let raw = std::fs::read_to_string(format!("/sys/class/net/{}/speed", i.name));
        match raw.ok().and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(s) if s > 0 => assert_eq!(i.speed_mbps, Some(s as u64)),
            _ => assert_eq!(i.speed_mbps, None, "{}", i.name),
        }
    }
}

#[test]
fn no_gpu_is_invented() {
    let inv = inventory();
    let gpu_assets = inv
        .device_assets()
        .into_iter()
        .filter(|a| a.kind == AssetType::Gpu)
        .count();
    assert_eq!(gpu_assets, inv.gpu.gpus().len());
    if let detect::gpu::GpuReport::Unavailable { reason, message } = &inv.gpu {
        assert_eq!(gpu_assets, 0);
        assert!(!reason.is_empty() && !message.is_empty());
    }
}
