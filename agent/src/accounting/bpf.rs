//! The eBPF side of accounting: loads the programs built from `agent/bpf/accounting.bpf.c`
//! (compiled by `build.rs` and embedded), attaches the exec tracepoint once (raw: no
//! tracefs needed) and the
//! cgroup_skb ingress/egress pair to each container's cgroup v2 directory, and reads the
//! per-cgroup counters back.

use std::collections::HashMap as StdHashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::{HashMap, MapData, MapError, PerCpuHashMap};
use aya::programs::cgroup_skb::CgroupSkbLinkId;
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, RawTracePoint,
};

/// The object clang built from `agent/bpf/accounting.bpf.c`.
const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/accounting.bpf.o"));
const INGRESS: &str = "hm_count_ingress";
const EGRESS: &str = "hm_count_egress";
const EXEC: &str = "hm_count_exec";

/// Why the eBPF programs could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The object could not be loaded (no CAP_BPF/CAP_SYS_ADMIN: `Operation not
    /// permitted`; a kernel without BTF or a verifier refusal).
    #[error("loading the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    /// A program is missing from the object or of another type.
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    /// A program named in the C source is not in the object.
    #[error("program {0} is not in the eBPF object")]
    MissingProgram(&'static str),
    /// A map named in the C source is not in the object.
    #[error("map {0} is not in the eBPF object")]
    MissingMap(&'static str),
    /// A map could not be opened, read or written.
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// A container's cgroup directory could not be opened.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Traffic of one cgroup's sockets, as the programs count it (whole IP packets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// The two links of one container's cgroup.
struct Attached {
    cgroup_id: u64,
    ingress: CgroupSkbLinkId,
    egress: CgroupSkbLinkId,
}

/// The loaded programs and their maps.
pub struct BpfAccounting {
    ebpf: Ebpf,
    watched: HashMap<MapData, u64, u8>,
    /// `struct net_counters` of the C side: rx_bytes, rx_packets, tx_bytes, tx_packets.
    net: PerCpuHashMap<MapData, u64, [u64; 4]>,
    execs: PerCpuHashMap<MapData, u64, u64>,
    /// Container id → its attachment.
    attached: StdHashMap<String, Attached>,
}

fn map_error(name: &'static str) -> impl FnOnce(MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}

fn program_error(name: &'static str) -> impl FnOnce(ProgramError) -> BpfError {
    move |source| BpfError::Program { name, source }
}

fn skb<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut CgroupSkb, BpfError> {
    ebpf.program_mut(name)
        .ok_or(BpfError::MissingProgram(name))?
        .try_into()
        .map_err(program_error(name))
}

/// The id the kernel gives cgroup `dir` (its inode in the cgroup v2 file system), which
/// `bpf_skb_cgroup_id` and `bpf_get_current_cgroup_id` return for its members.
pub fn cgroup_id(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

impl BpfAccounting {
    /// Loads the programs and attaches the exec tracepoint (host-wide; it counts only
    /// watched cgroups).
    pub fn load() -> Result<Self, BpfError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(BpfError::Load)?;
        for name in [INGRESS, EGRESS] {
            skb(&mut ebpf, name)?.load().map_err(program_error(name))?;
        }
        let exec: &mut RawTracePoint = ebpf
            .program_mut(EXEC)
            .ok_or(BpfError::MissingProgram(EXEC))?
            .try_into()
            .map_err(program_error(EXEC))?;
        exec.load().map_err(program_error(EXEC))?;
        exec.attach("sched_process_exec")
            .map_err(program_error(EXEC))?;
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(BpfError::MissingMap(name));
        let watched = HashMap::try_from(take("watched")?).map_err(map_error("watched"))?;
        let net = PerCpuHashMap::try_from(take("net_by_cgroup")?).map_err(map_error("net"))?;
        let execs =
            PerCpuHashMap::try_from(take("execs_by_cgroup")?).map_err(map_error("execs"))?;
        Ok(BpfAccounting {
            ebpf,
            watched,
            net,
            execs,
            attached: StdHashMap::new(),
        })
    }

    /// Attaches the counting programs to container `id`'s cgroup `dir` and starts
    /// counting it; the cgroup id. Attaching the same cgroup again changes nothing; a
    /// new cgroup of the same container (a restart) replaces the old attachment.
    pub fn attach(&mut self, id: &str, dir: &Path) -> Result<u64, BpfError> {
        let file = std::fs::File::open(dir).map_err(|source| BpfError::Cgroup {
            path: dir.to_path_buf(),
            source,
        })?;
        let cgroup_id = file
            .metadata()
            .map_err(|source| BpfError::Cgroup {
                path: dir.to_path_buf(),
                source,
            })?
            .ino();
        if self
            .attached
            .get(id)
            .is_some_and(|a| a.cgroup_id == cgroup_id)
        {
            return Ok(cgroup_id);
        }
        self.forget(id);
        // Counting starts before the first packet can flow through the programs.
        self.watched
            .insert(cgroup_id, 1, 0)
            .map_err(map_error("watched"))?;
        let attach = |ebpf: &mut Ebpf, name, kind| {
            skb(ebpf, name)?
                // On this kernel aya attaches through a bpf_link, which always allows other
                // programs beside it and takes no flags (ALLOW_MULTI there is EINVAL).
                .attach(&file, kind, CgroupAttachMode::Single)
                .map_err(program_error(name))
        };
        let ingress = match attach(&mut self.ebpf, INGRESS, CgroupSkbAttachType::Ingress) {
            Ok(link) => link,
            Err(e) => {
                let _ = self.watched.remove(&cgroup_id);
                return Err(e);
            }
        };
        let egress = match attach(&mut self.ebpf, EGRESS, CgroupSkbAttachType::Egress) {
            Ok(link) => link,
            Err(e) => {
                let _ = skb(&mut self.ebpf, INGRESS).map(|p| p.detach(ingress));
                let _ = self.watched.remove(&cgroup_id);
                return Err(e);
            }
        };
        self.attached.insert(
            id.to_string(),
            Attached {
                cgroup_id,
                ingress,
                egress,
            },
        );
        Ok(cgroup_id)
    }

    /// Detaches container `id`'s programs and drops its counters.
    pub fn forget(&mut self, id: &str) {
        let Some(a) = self.attached.remove(id) else {
            return;
        };
        // The kernel detaches the links itself when the cgroup is removed; then these
        // only close them.
        let _ = skb(&mut self.ebpf, INGRESS).map(|p| p.detach(a.ingress));
        let _ = skb(&mut self.ebpf, EGRESS).map(|p| p.detach(a.egress));
        let _ = self.watched.remove(&a.cgroup_id);
        let _ = self.net.remove(&a.cgroup_id);
        let _ = self.execs.remove(&a.cgroup_id);
    }

    /// The containers attached now.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.attached.keys().map(String::as_str)
    }

    /// The cgroup container `id` is attached to, if any.
    pub fn cgroup_of(&self, id: &str) -> Option<u64> {
        self.attached.get(id).map(|a| a.cgroup_id)
    }

    /// The traffic counted for cgroup `cgroup_id` (zero when no packet was seen yet).
    pub fn network(&self, cgroup_id: u64) -> Result<NetCounters, BpfError> {
        let per_cpu = match self.net.get(&cgroup_id, 0) {
            Ok(values) => values,
            Err(MapError::KeyNotFound) => return Ok(NetCounters::default()),
            Err(source) => {
                return Err(BpfError::Map {
                    name: "net",
                    source,
                });
            }
        };
        Ok(per_cpu
            .iter()
            .fold(NetCounters::default(), |sum, v| NetCounters {
                rx_bytes: sum.rx_bytes.wrapping_add(v[0]),
                rx_packets: sum.rx_packets.wrapping_add(v[1]),
                tx_bytes: sum.tx_bytes.wrapping_add(v[2]),
                tx_packets: sum.tx_packets.wrapping_add(v[3]),
            }))
    }

    /// Programs started (execve) in cgroup `cgroup_id` since it was attached.
    pub fn execs(&self, cgroup_id: u64) -> Result<u64, BpfError> {
        match self.execs.get(&cgroup_id, 0) {
            Ok(values) => Ok(values.iter().fold(0u64, |sum, v| sum.wrapping_add(*v))),
            Err(MapError::KeyNotFound) => Ok(0),
            Err(source) => Err(BpfError::Map {
                name: "execs",
                source,
            }),
        }
    }
}
