//! Hardware detection: reads the host (sysinfo, `/proc`, `/sys`, NVML) into an
//! [`Inventory`], and turns it into one [`DeviceAsset`] per device.
//!
//! Nothing here is invented: a value the host does not report is left out (or
//! reported as unavailable), and a subsystem that cannot be read says why.

pub mod containers;
pub mod cpu;
pub mod gpu;
pub mod memory;
pub mod network;
pub mod storage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hypermesh_api::v1::AssetType;

/// Why part of the host could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A file under /proc or /sys could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but lacked a field every kernel provides.
    #[error("missing {0}")]
    Missing(String),
}

/// Where the kernel files live (tests and containers may point these elsewhere).
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub proc_cpuinfo: PathBuf,
    pub proc_meminfo: PathBuf,
    pub sys_node: PathBuf,
    pub sys_block: PathBuf,
    pub sys_net: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc_cpuinfo: "/proc/cpuinfo".into(),
            proc_meminfo: "/proc/meminfo".into(),
            sys_node: "/sys/devices/system/node".into(),
            sys_block: "/sys/block".into(),
            sys_net: "/sys/class/net".into(),
        }
    }
}

/// Facts about the operating system.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel_version: String,
    pub os_image: String,
    pub architecture: String,
    pub boot_id: String,
}

/// Everything detection found on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    pub host: HostInfo,
    pub cpu: cpu::CpuInfo,
    pub memory: memory::MemoryInfo,
    pub storage: storage::StorageInfo,
    pub network: Vec<network::Interface>,
    pub gpu: gpu::GpuReport,
    pub containers: containers::ContainerCapacity,
}

/// One device the node offers, ready to become an Asset.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAsset {
    pub kind: AssetType,
    /// Short device name for the Asset name, e.g. `socket0`, `vda`, `eth0`.
    pub device: String,
    /// Device path or ID for the space proof, e.g. `/dev/vda`, `GPU-<uuid>`.
    pub location: String,
    /// Bytes this asset commits (memory, disk, GPU memory); 0 where not a size.
    pub committed_bytes: u64,
    pub capacity: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
}

/// Reads the whole host. CPU and memory are required (every Linux host has them);
/// storage and network read failures leave those lists empty with a warning.
pub fn detect(paths: &HostPaths, max_instances: u32) -> Result<Inventory, DetectError> {
    let cpu = cpu::detect(&paths.proc_cpuinfo, &paths.sys_node)?;
    let memory = memory::detect(&paths.proc_meminfo, &paths.sys_node)?;
    let storage = storage::detect(&paths.sys_block).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "storage detection failed");
        storage::StorageInfo::default()
    });
    let network = network::detect(&paths.sys_net).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "network detection failed");
        Vec::new()
    });
    Ok(Inventory {
        host: host_info(),
        cpu,
        memory,
        storage,
        network,
        gpu: gpu::detect(),
        containers: containers::detect(max_instances),
    })
}

/// Hostname, kernel, OS and architecture.
pub fn host_info() -> HostInfo {
    HostInfo {
        hostname: sysinfo::System::host_name().unwrap_or_default(),
        kernel_version: sysinfo::System::kernel_version().unwrap_or_default(),
        os_image: pretty_os_name()
            .or_else(|| sysinfo::System::long_os_version().ok())
            .unwrap_or_default(),
        architecture: sysinfo::System::cpu_arch(),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// `PRETTY_NAME` from /etc/os-release (what `hostnamectl` shows as the OS).
fn pretty_os_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim().trim_matches('"').to_string()).filter(|v| !v.is_empty())
}

/// `nodeN` directories under the NUMA sysfs dir, by node number.
pub(crate) fn numa_nodes(sys_node_dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(sys_node_dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("node")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, DetectError> {
    std::fs::read_to_string(path).map_err(|source| DetectError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Bytes as a quantity string (`Ki` when exact, else plain bytes).
pub fn bytes_quantity(bytes: u64) -> String {
    if bytes > 0 && bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

impl Inventory {
    /// One asset per device: CPU sockets, memory per NUMA node (or the whole system),
    /// block devices, non-loopback interfaces, GPUs, and the container slots.
    pub fn device_assets(&self) -> Vec<DeviceAsset> {
        let mut out = Vec::new();
        for s in &self.cpu.sockets {
            let mut attributes = BTreeMap::from([
                ("model".to_string(), s.model.clone()),
                ("socket".to_string(), s.id.to_string()),
                ("cores".to_string(), s.cores.to_string()),
                ("threads".to_string(), s.threads.to_string()),
            ]);
            if let Some(mhz) = s.mhz {
                attributes.insert("mhz".into(), format!("{mhz:.0}"));
            }
            if !s.flags.is_empty() {
                attributes.insert("flags".into(), s.flags.join(","));
            }
            if !s.numa_nodes.is_empty() {
                let nodes: Vec<String> = s.numa_nodes.iter().map(u32::to_string).collect();
                attributes.insert("numaNode".into(), nodes.join(","));
            }
            out.push(DeviceAsset {
                kind: AssetType::Cpu,
                device: format!("socket{}", s.id),
                location: format!("cpu/socket{}", s.id),
                committed_bytes: 0,
                capacity: BTreeMap::from([
                    ("cpu".to_string(), s.threads.to_string()),
                    ("cores".to_string(), s.cores.to_string()),
                ]),
                attributes,
            });
        }
        let hugepages = |attributes: &mut BTreeMap<String, String>| {
            attributes.insert(
                "hugepagesTotal".into(),
                self.memory.hugepages_total.to_string(),
            );
            if self.memory.hugepage_size_bytes > 0 {
                attributes.insert(
                    "hugepageSize".into(),
                    bytes_quantity(self.memory.hugepage_size_bytes),
                );
            }
        };
        if self.memory.numa_total_bytes.is_empty() {
            let mut attributes = BTreeMap::new();
            hugepages(&mut attributes);
            out.push(memory_asset(
                "system".into(),
                self.memory.total_bytes,
                attributes,
            ));
        } else {
            for (node, bytes) in &self.memory.numa_total_bytes {
                let mut attributes = BTreeMap::from([("numaNode".to_string(), node.to_string())]);
                hugepages(&mut attributes);
                out.push(memory_asset(format!("numa{node}"), *bytes, attributes));
            }
        }
        for d in &self.storage.devices {
            let mut attributes = BTreeMap::from([
                ("path".to_string(), d.path.clone()),
                ("size".to_string(), d.size_bytes.to_string()),
                ("rotational".to_string(), d.rotational.to_string()),
            ]);
            if let Some(m) = &d.model {
                attributes.insert("model".into(), m.clone());
            }
            if !d.mounts.is_empty() {
                attributes.insert("mounts".into(), d.mounts.join(","));
            }
            out.push(DeviceAsset {
                kind: AssetType::Storage,
                device: d.name.clone(),
                location: d.path.clone(),
                committed_bytes: d.size_bytes,
                capacity: BTreeMap::from([("storage".to_string(), bytes_quantity(d.size_bytes))]),
                attributes,
            });
        }
        for i in self.network.iter().filter(|i| !i.loopback) {
            let mut attributes = BTreeMap::from([
                ("interface".to_string(), i.name.clone()),
                ("mtu".to_string(), i.mtu.to_string()),
                ("state".to_string(), i.state.clone()),
                (
                    "linkSpeed".to_string(),
                    i.speed_mbps
                        .map_or_else(|| "unknown".to_string(), |s| format!("{s}Mb/s")),
                ),
            ]);
            if let Some(mac) = &i.mac {
                attributes.insert("mac".into(), mac.clone());
            }
            if !i.addresses.is_empty() {
                attributes.insert("addresses".into(), i.addresses.join(","));
            }
            let mut capacity = BTreeMap::new();
            if let Some(s) = i.speed_mbps {
                capacity.insert("bandwidth".to_string(), format!("{s}M"));
            }
            out.push(DeviceAsset {
                kind: AssetType::Network,
                device: i.name.clone(),
                location: format!("net/{}", i.name),
                committed_bytes: 0,
                capacity,
                attributes,
            });
        }
        if let gpu::GpuReport::Nvml {
            driver_version,
            gpus,
        } = &self.gpu
        {
            for g in gpus {
                let mut attributes = BTreeMap::from([
                    ("model".to_string(), g.model.clone()),
                    ("uuid".to_string(), g.uuid.clone()),
                    ("memory".to_string(), bytes_quantity(g.memory_bytes)),
                    ("driverVersion".to_string(), driver_version.clone()),
                    ("index".to_string(), g.index.to_string()),
                ]);
                if let Some(mig) = g.mig_enabled {
                    attributes.insert("migEnabled".into(), mig.to_string());
                }
                if let Some(bus) = &g.pci_bus_id {
                    attributes.insert("pciBusId".into(), bus.clone());
                }
                out.push(DeviceAsset {
                    kind: AssetType::Gpu,
                    device: format!("gpu{}", g.index),
                    location: g.uuid.clone(),
                    committed_bytes: g.memory_bytes,
                    capacity: BTreeMap::from([
                        ("gpu".to_string(), "1".to_string()),
                        ("memory".to_string(), bytes_quantity(g.memory_bytes)),
                    ]),
                    attributes,
                });
            }
        }
        out.push(DeviceAsset {
            kind: AssetType::Container,
            device: "instances".into(),
            location: "containers/instances".into(),
            committed_bytes: 0,
            capacity: BTreeMap::from([(
                "instances".to_string(),
                self.containers.max_instances.to_string(),
            )]),
            attributes: BTreeMap::from([(
                "source".to_string(),
                self.containers.source.to_string(),
            )]),
        });
        out
    }
}

fn memory_asset(device: String, bytes: u64, attributes: BTreeMap<String, String>) -> DeviceAsset {
    DeviceAsset {
        kind: AssetType::Memory,
        location: format!("memory/{device}"),
        device,
        committed_bytes: bytes,
        capacity: BTreeMap::from([("memory".to_string(), bytes_quantity(bytes))]),
        attributes,
    }
}
