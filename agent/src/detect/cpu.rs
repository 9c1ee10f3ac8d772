//! CPU detection: model, sockets, cores, threads, MHz, interesting flags and NUMA
//! placement, read from `/proc/cpuinfo` and `/sys/devices/system/node`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{DetectError, read_to_string};

/// Instruction-set flags worth advertising to the scheduler.
pub const FLAGS_OF_INTEREST: &[&str] = &[
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "amx_tile",
    "aes",
    "sha_ni",
    "fma",
    "sse4_2",
    "vmx",
    "svm",
    "neon",
    "asimd",
    "sve",
];

/// One CPU package (socket) as the kernel lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuSocket {
    /// `physical id` from /proc/cpuinfo (0 when the kernel does not report one).
    pub id: u32,
    /// `model name` (or `Processor`/`CPU part` on some ARM kernels).
    pub model: String,
    /// Distinct (physical id, core id) pairs.
    pub cores: u32,
    /// Logical processors.
    pub threads: u32,
    /// Maximum clock from cpufreq where the kernel has it, else the `cpu MHz` of
    /// the first logical processor, when reported.
    pub mhz: Option<f64>,
    /// The first logical processor of this package.
    pub first_cpu: u32,
    /// The flags of interest this package has, sorted.
    pub flags: Vec<String>,
    /// NUMA nodes holding this package's processors.
    pub numa_nodes: BTreeSet<u32>,
}

/// Everything about the host's processors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CpuInfo {
    pub sockets: Vec<CpuSocket>,
}

impl CpuInfo {
    /// Logical processors across all sockets.
    pub fn threads(&self) -> u32 {
        self.sockets.iter().map(|s| s.threads).sum()
    }

    /// Physical cores across all sockets.
    pub fn cores(&self) -> u32 {
        self.sockets.iter().map(|s| s.cores).sum()
    }
}

/// Reads `/proc/cpuinfo` and the NUMA topology under `sys_node_dir`.
pub fn detect(cpuinfo_path: &Path, sys_node_dir: &Path) -> Result<CpuInfo, DetectError> {
    let text = read_to_string(cpuinfo_path)?;
    let numa = cpu_to_numa(sys_node_dir);
    let mut info = parse(&text, &numa);
    for s in &mut info.sockets {
        // The current `cpu MHz` moves with frequency scaling; the maximum does not,
        // so assets are not rewritten every time the clock changes.
        let max = format!(
            "/sys/devices/system/cpu/cpu{}/cpufreq/cpuinfo_max_freq",
            s.first_cpu
        );
        if let Some(khz) = std::fs::read_to_string(max)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
        {
            s.mhz = Some(khz / 1000.0);
        }
    }
    Ok(info)
}

/// Parses /proc/cpuinfo text; `numa` maps logical CPU → NUMA node.
pub fn parse(text: &str, numa: &BTreeMap<u32, u32>) -> CpuInfo {
    #[derive(Default)]
    struct Acc {
        model: String,
        cores: BTreeSet<u32>,
        threads: u32,
        mhz: Option<f64>,
        flags: BTreeSet<String>,
        numa: BTreeSet<u32>,
        first: Option<u32>,
    }
    let mut sockets: BTreeMap<u32, Acc> = BTreeMap::new();
    let mut fallback_model = String::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for line in block.lines() {
            if let Some((k, v)) = line.split_once(':') {
                fields.entry(k.trim()).or_insert(v.trim());
            }
        }
        let Some(processor) = fields.get("processor").and_then(|p| p.parse::<u32>().ok()) else {
            // Trailer blocks (e.g. ARM "Hardware") carry a model for the whole machine.
            if let Some(m) = fields.get("Hardware").or(fields.get("model name")) {
                fallback_model = m.to_string();
            }
            continue;
        };
        let socket = fields
            .get("physical id")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let acc = sockets.entry(socket).or_default();
        acc.threads += 1;
        acc.first.get_or_insert(processor);
        if acc.model.is_empty()
            && let Some(m) = fields.get("model name").or(fields.get("Processor"))
        {
            acc.model = m.to_string();
        }
        let core = fields
            .get("core id")
            .and_then(|v| v.parse().ok())
            .unwrap_or(processor);
        acc.cores.insert(core);
        if acc.mhz.is_none() {
            acc.mhz = fields.get("cpu MHz").and_then(|v| v.parse().ok());
        }
        let flags = fields.get("flags").or(fields.get("Features")).copied();
        for flag in flags.unwrap_or_default().split_whitespace() {
            if FLAGS_OF_INTEREST.contains(&flag) {
                acc.flags.insert(flag.to_string());
            }
        }
        if let Some(node) = numa.get(&processor) {
            acc.numa.insert(*node);
        }
    }
    CpuInfo {
        sockets: sockets
            .into_iter()
            .map(|(id, acc)| CpuSocket {
                id,
                model: if acc.model.is_empty() {
                    fallback_model.clone()
                } else {
                    acc.model
                },
                cores: acc.cores.len() as u32,
                threads: acc.threads,
                mhz: acc.mhz,
                flags: acc.flags.into_iter().collect(),
                numa_nodes: acc.numa,
                first_cpu: acc.first.unwrap_or(0),
            })
            .collect(),
    }
}

/// Maps each logical CPU to its NUMA node from `nodeN/cpulist`; empty if the kernel
/// has no NUMA sysfs.
pub fn cpu_to_numa(sys_node_dir: &Path) -> BTreeMap<u32, u32> {
    let mut map = BTreeMap::new();
    for (node, dir) in super::numa_nodes(sys_node_dir) {
        let Ok(list) = std::fs::read_to_string(dir.join("cpulist")) else {
            continue;
        };
        for cpu in parse_cpu_list(&list) {
            map.insert(cpu, node);
        }
    }
    map
}

/// Parses a kernel CPU list like `0-3,8,10-11`.
pub fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<u32>().ok()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_sockets_with_smt() {
        let mut text = String::new();
        for (p, socket, core) in [(0, 0, 0), (1, 0, 0), (2, 1, 0), (3, 1, 1)] {
            text.push_str(&format!(
                "processor\t: {p}\nmodel name\t: Test CPU\nphysical id\t: {socket}\ncore id\t: {core}\ncpu MHz\t\t: 2400.5\nflags\t\t: fpu avx2 aes sse2\n\n"
            ));
        }
        let numa = BTreeMap::from([(0, 0), (1, 0), (2, 1), (3, 1)]);
        let info = parse(&text, &numa);
        assert_eq!(info.sockets.len(), 2);
        assert_eq!(info.threads(), 4);
        assert_eq!(info.cores(), 3);
        assert_eq!(info.sockets[0].flags, vec!["aes", "avx2"]);
        assert_eq!(info.sockets[1].numa_nodes, BTreeSet::from([1]));
        assert_eq!(info.sockets[0].mhz, Some(2400.5));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5,7-8\n"), vec![0, 1, 2, 5, 7, 8]);
        assert!(parse_cpu_list("\n").is_empty());
    }
}
