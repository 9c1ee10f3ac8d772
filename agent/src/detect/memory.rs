//! Memory detection: total and available from `/proc/meminfo`, the per-NUMA split from
//! `/sys/devices/system/node/node*/meminfo`, and hugepages.

use std::collections::BTreeMap;
use std::path::Path;

use super::{DetectError, read_to_string};

/// The host's memory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemoryInfo {
    /// `MemTotal`, bytes.
    pub total_bytes: u64,
    /// `MemAvailable`, bytes.
    pub available_bytes: u64,
    /// `HugePages_Total`.
    pub hugepages_total: u64,
    /// `Hugepagesize`, bytes.
    pub hugepage_size_bytes: u64,
    /// NUMA node → its `MemTotal`, bytes (empty without NUMA sysfs).
    pub numa_total_bytes: BTreeMap<u32, u64>,
}

/// Reads `/proc/meminfo` and the per-node meminfo files under `sys_node_dir`.
pub fn detect(meminfo_path: &Path, sys_node_dir: &Path) -> Result<MemoryInfo, DetectError> {
    let fields = parse_meminfo(&read_to_string(meminfo_path)?);
    let total_bytes = *fields
        .get("MemTotal")
        .ok_or_else(|| DetectError::Missing(format!("{}: MemTotal", meminfo_path.display())))?;
    let mut numa_total_bytes = BTreeMap::new();
    for (node, dir) in super::numa_nodes(sys_node_dir) {
        let Ok(text) = std::fs::read_to_string(dir.join("meminfo")) else {
            continue;
        };
        // Lines look like "Node 0 MemTotal:       24683652 kB".
        let stripped: String = text
            .lines()
            .filter_map(|l| l.split_once(' ').and_then(|(_, rest)| rest.split_once(' ')))
            .map(|(_, rest)| format!("{rest}\n"))
            .collect();
        if let Some(total) = parse_meminfo(&stripped).get("MemTotal") {
            numa_total_bytes.insert(node, *total);
        }
    }
    Ok(MemoryInfo {
        total_bytes,
        available_bytes: fields.get("MemAvailable").copied().unwrap_or(0),
        hugepages_total: fields.get("HugePages_Total").copied().unwrap_or(0),
        hugepage_size_bytes: fields.get("Hugepagesize").copied().unwrap_or(0),
        numa_total_bytes,
    })
}

/// Parses meminfo lines into bytes (`kB` values are multiplied by 1024; unitless
/// counts such as `HugePages_Total` are kept as they are).
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let Some(Ok(value)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let value = match parts.next() {
            Some("kB") => value.saturating_mul(1024),
            _ => value,
        };
        out.insert(key.trim().to_string(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kb_and_counts() {
        let m = parse_meminfo("MemTotal:  1000 kB\nHugePages_Total:       4\nbad line\n");
        assert_eq!(m["MemTotal"], 1024 * 1000);
        assert_eq!(m["HugePages_Total"], 4);
    }
}
