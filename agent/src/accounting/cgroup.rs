//! What the kernel gives without eBPF: where a container's cgroups are (the cgroup v2
//! hierarchy, alone or beside v1 ones), its disk bytes (v2 `io.stat`, else v1
//! `blkio.throttle.io_service_bytes`), and the fallback network counters of its network
//! namespace (`/proc/<pid>/net/dev` of a process in its cgroup).

use std::path::{Path, PathBuf};

use hypermesh_containers::container::cgroup_path;

use super::bpf::NetCounters;

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on a v2-only host,
/// `/sys/fs/cgroup/unified` beside v1 hierarchies), from `mountinfo` text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split_whitespace().next()? == "cgroup2")
            .then(|| before.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The cgroup v2 hierarchy of this process's mount namespace, if one is mounted.
pub fn cgroup2_root() -> Option<PathBuf> {
    cgroup2_mount(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// Container `id`'s directory in the cgroup v2 hierarchy at `root`.
pub fn v2_dir(root: &Path, id: &str) -> PathBuf {
    root.join(cgroup_path(id).trim_start_matches('/'))
}

/// Bytes a container read from and wrote to block devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskBytes {
    pub read: u64,
    pub write: u64,
}

/// Sums `rbytes=`/`wbytes=` over the devices of a v2 `io.stat`.
pub fn parse_io_stat(text: &str) -> DiskBytes {
    let mut sum = DiskBytes::default();
    for field in text.split_whitespace() {
        let number = |v: &str| v.parse::<u64>().unwrap_or(0);
        if let Some(v) = field.strip_prefix("rbytes=") {
            sum.read = sum.read.saturating_add(number(v));
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            sum.write = sum.write.saturating_add(number(v));
        }
    }
    sum
}

/// Sums the `MAJ:MIN Read N` / `MAJ:MIN Write N` lines of a v1
/// `blkio.throttle.io_service_bytes` (the `Total` lines repeat them).
pub fn parse_blkio(text: &str) -> DiskBytes {
    let mut sum = DiskBytes::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, op, value] = fields[..] else {
            continue;
        };
        if !device.contains(':') {
            continue;
        }
        let value = value.parse::<u64>().unwrap_or(0);
        match op {
            "Read" => sum.read = sum.read.saturating_add(value),
            "Write" => sum.write = sum.write.saturating_add(value),
            _ => {}
        }
    }
    sum
}

/// Container `id`'s disk bytes: v2 `io.stat` when the io controller is enabled there,
/// else v1 blkio; `None` when neither file can be read (no such cgroup).
pub fn disk_bytes(v2_root: Option<&Path>, id: &str) -> Option<DiskBytes> {
    if let Some(root) = v2_root
        && let Ok(text) = std::fs::read_to_string(v2_dir(root, id).join("io.stat"))
    {
        return Some(parse_io_stat(&text));
    }
    let path = cgroup_path(id);
    std::fs::read_to_string(format!(
        "/sys/fs/cgroup/blkio{path}/blkio.throttle.io_service_bytes"
    ))
    .ok()
    .map(|text| parse_blkio(&text))
}

/// A process of container `id` (the first in its `cgroup.procs`), if it has one.
pub fn member_pid(v2_root: Option<&Path>, id: &str) -> Option<u32> {
    let path = cgroup_path(id);
    let mut candidates: Vec<PathBuf> = v2_root
        .map(|root| v2_dir(root, id).join("cgroup.procs"))
        .into_iter()
        .collect();
    candidates.push(PathBuf::from(format!(
        "/sys/fs/cgroup/pids{path}/cgroup.procs"
    )));
    candidates.push(PathBuf::from(format!(
        "/sys/fs/cgroup/memory{path}/cgroup.procs"
    )));
    candidates.iter().find_map(|file| {
        std::fs::read_to_string(file)
            .ok()?
            .lines()
            .find_map(|l| l.trim().parse().ok())
    })
}

/// Sums the receive and transmit bytes and packets of every interface (loopback
/// included) of a `/proc/<pid>/net/dev` text.
pub fn parse_net_dev(text: &str) -> Option<NetCounters> {
    let mut sum = NetCounters::default();
    let mut interfaces = 0;
    for line in text.lines().skip(2) {
        let Some((_, counters)) = line.split_once(':') else {
            continue;
        };
        let fields: Vec<u64> = counters
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if fields.len() < 10 {
            continue;
        }
        interfaces += 1;
        sum.rx_bytes = sum.rx_bytes.saturating_add(fields[0]);
        sum.rx_packets = sum.rx_packets.saturating_add(fields[1]);
        sum.tx_bytes = sum.tx_bytes.saturating_add(fields[8]);
        sum.tx_packets = sum.tx_packets.saturating_add(fields[9]);
    }
    (interfaces > 0).then_some(sum)
}

/// The counters of the network namespace container `id`'s processes are in.
pub fn net_dev(v2_root: Option<&Path>, id: &str) -> Option<NetCounters> {
    let pid = member_pid(v2_root, id)?;
    parse_net_dev(&std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_hierarchy_is_found_beside_v1_ones() {
        let hybrid = "\
35 25 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
45 35 0:40 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_mount(v2), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw"), None);
        assert_eq!(
            v2_dir(Path::new("/sys/fs/cgroup/unified"), "hm-1"),
            PathBuf::from("/sys/fs/cgroup/unified/hypermesh/hm-1")
        );
    }

    #[test]
    fn disk_bytes_are_summed_over_devices() {
        let v2 = "8:0 rbytes=4096 wbytes=100 rios=1 wios=1 dbytes=0 dios=0\n\
                  253:1 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(
            parse_io_stat(v2),
            DiskBytes {
                read: 4106,
                write: 120
            }
        );
        let v1 = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\n\
                  254:0 Read 1\n254:0 Write 2\nTotal 4611\n";
        assert_eq!(
            parse_blkio(v1),
            DiskBytes {
                read: 4097,
                write: 514
            }
        );
        assert_eq!(parse_blkio("Total 0\n"), DiskBytes::default());
    }

    #[test]
    fn net_dev_sums_every_interface() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     200       2    0    0    0     0          0         0      200       2    0    0    0     0       0          0
  eth0:    1000      10    0    0    0     0          0         0      500       5    0    0    0     0       0          0
";
        assert_eq!(
            parse_net_dev(text),
            Some(NetCounters {
                rx_bytes: 1200,
                rx_packets: 12,
                tx_bytes: 700,
                tx_packets: 7
            })
        );
        assert_eq!(parse_net_dev("header\nheader\n"), None);
    }

    #[test]
    fn this_process_has_network_counters() {
        let own = std::fs::read_to_string("/proc/self/net/dev").expect("net/dev");
        assert!(parse_net_dev(&own).is_some(), "{own}");
    }
}
