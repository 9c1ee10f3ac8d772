//! Network detection: interfaces from `/sys/class/net` (MTU, MAC, state, link speed
//! where the kernel reports one) with their addresses (sysinfo).

use std::collections::BTreeMap;
use std::path::Path;

use super::DetectError;

/// One network interface.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub name: String,
    pub mtu: u64,
    pub mac: Option<String>,
    /// `operstate`: up, down, unknown, ...
    pub state: String,
    /// Mb/s from `speed`; `None` where the kernel answers -1 or EINVAL (virtual links,
    /// down links).
    pub speed_mbps: Option<u64>,
    /// `addr/prefix` strings.
    pub addresses: Vec<String>,
    pub loopback: bool,
}

/// Reads every interface under `sys_net` (normally `/sys/class/net`).
pub fn detect(sys_net: &Path) -> Result<Vec<Interface>, DetectError> {
    let mut addresses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Ok(networks) = sysinfo::Networks::new_with_refreshed_list() {
        for (name, data) in networks.iter() {
            addresses.insert(
                name.to_string_lossy().into_owned(),
                data.ip_networks()
                    .iter()
                    .map(|n| format!("{}/{}", n.addr, n.prefix))
                    .collect(),
            );
        }
    }
    let entries = std::fs::read_dir(sys_net).map_err(|source| DetectError::Read {
        path: sys_net.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let Some(mtu) = read("mtu").and_then(|m| m.parse().ok()) else {
            continue;
        };
        let loopback = read("type").as_deref() == Some("772");
        let mut addrs = addresses.remove(&name).unwrap_or_default();
        addrs.sort();
        out.push(Interface {
            mtu,
            mac: read("address").filter(|m| !m.is_empty() && !loopback),
            state: read("operstate").unwrap_or_else(|| "unknown".into()),
            speed_mbps: read("speed").and_then(|s| parse_speed(&s)),
            addresses: addrs,
            loopback,
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `speed` contents → Mb/s; -1 (unknown) and garbage give `None`.
pub fn parse_speed(s: &str) -> Option<u64> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_speed_is_none() {
        assert_eq!(parse_speed("-1\n"), None);
        assert_eq!(parse_speed(""), None);
        assert_eq!(parse_speed("10000\n"), Some(10000));
    }
}
