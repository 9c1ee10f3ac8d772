//! What the benchmarks read about processes from `/proc`: CPU time, resident memory
//! (RSS and PSS), the open-file limit and the process table (parent, command line), so
//! a benchmark can find the processes containerd started for its containers.

use std::path::Path;

/// CPU time (user + system) a process has used so far, in seconds; 0 when it is gone.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields = stat_fields(&stat);
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ") ".
    (ticks(11) + ticks(12)) / 100.0
}

/// This process's soft limit on open files (`Max open files` in `/proc/self/limits`);
/// `None` when unlimited or unreadable.
pub fn open_files_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// CPU time the whole machine has spent busy so far (every core: user, nice, system,
/// irq, softirq, steal), in seconds, from the first line of `/proc/stat`.
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    stat.lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(busy_ticks)
        .unwrap_or(0.0)
        / 100.0
}

/// user + nice + system + irq + softirq + steal of a `/proc/stat` cpu line's numbers
/// (idle and iowait are fields 4 and 5; guest time is already inside user).
fn busy_ticks(numbers: &str) -> f64 {
    numbers
        .split_whitespace()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, n)| n.parse::<f64>().ok())
        .sum()
}

/// The fields of `/proc/PID/stat` after the command name (which may contain spaces):
/// index 0 is the state, 1 the parent pid.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// Resident memory of one process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS` from `/proc/PID/status`: every page it maps that is in RAM, shared ones
    /// (the binary's text, libraries) counted in full.
    pub rss_kib: u64,
    /// `Pss` from `/proc/PID/smaps_rollup`: shared pages divided among the processes
    /// sharing them, so PSS of several processes adds up to what they really use.
    pub pss_kib: u64,
}

impl std::ops::Add for Memory {
    type Output = Memory;
    fn add(self, other: Memory) -> Memory {
        Memory {
            rss_kib: self.rss_kib + other.rss_kib,
            pss_kib: self.pss_kib + other.pss_kib,
        }
    }
}

impl std::iter::Sum for Memory {
    fn sum<I: Iterator<Item = Memory>>(iter: I) -> Memory {
        iter.fold(Memory::default(), |a, b| a + b)
    }
}

/// The `KEY:   1234 kB` value of a `/proc` key-value file, in KiB.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    })
}

/// RSS and PSS of `pid`; `None` when the process is gone (or /proc is unreadable).
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(Memory {
        rss_kib: kib_field(&status, "VmRSS")?,
        pss_kib: kib_field(&rollup, "Pss")?,
    })
}

/// One row of the process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub parent: u32,
    /// argv, as `/proc/PID/cmdline` holds it.
    pub argv: Vec<String>,
}

impl Process {
    /// The file name of argv\[0\] (`containerd-shim-runc-v2`).
    pub fn program(&self) -> &str {
        self.argv
            .first()
            .map(|a| {
                Path::new(a)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(a)
            })
            .unwrap_or("")
    }

    /// The value following `flag` in argv (`-address SOCK` → `SOCK`).
    pub fn flag(&self, flag: &str) -> Option<&str> {
        self.argv
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.argv.get(i + 1))
            .map(String::as_str)
    }
}

/// Every process readable now (processes that exit while listed are skipped; kernel
/// threads have an empty argv).
pub fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let parent = stat_fields(&stat).get(1)?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Process { pid, parent, argv })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_listed_with_memory() {
        let me = std::process::id();
        let table = processes();
        let row = table.iter().find(|p| p.pid == me).expect("own process");
        assert_eq!(row.parent, std::os::unix::process::parent_id());
        let memory = memory(me).expect("own memory");
        assert!(memory.rss_kib > 0 && memory.pss_kib > 0 && memory.pss_kib <= memory.rss_kib);
        assert!(cpu_seconds(Some(me)) >= 0.0);
        assert_eq!(cpu_seconds(None), 0.0);
        assert!(machine_busy_seconds() > 0.0);
    }

    #[test]
    fn fields_parse() {
        let status = "Name:\tx\nVmRSS:\t    6812 kB\nVmSwap:\t0 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(6812));
        assert_eq!(kib_field(status, "VmHWM"), None);
        assert_eq!(busy_ticks(" 100 2 30 999 7 1 4 3 0 0"), 140.0);
        let stat = "42 (a b) S 7 42 42 0 -1 4194560 1 0 0 0 5 3";
        assert_eq!(stat_fields(stat)[1], "7");
        let shim = Process {
            pid: 9,
            parent: 1,
            argv: vec![
                "/usr/bin/containerd-shim-runc-v2".into(),
                "-namespace".into(),
                "hypermesh".into(),
            ],
        };
        assert_eq!(shim.program(), "containerd-shim-runc-v2");
        assert_eq!(shim.flag("-namespace"), Some("hypermesh"));
        assert_eq!(shim.flag("-id"), None);
    }
}
