//! GPU detection through NVML (`nvml-wrapper`). Without an NVIDIA driver NVML fails
//! to load; that is reported as it is (a Node condition), never as an invented GPU.

/// One NVIDIA GPU as NVML describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub index: u32,
    /// `GPU-xxxxxxxx-...`.
    pub uuid: String,
    pub model: String,
    pub memory_bytes: u64,
    /// MIG mode currently enabled, when the device supports MIG.
    pub mig_enabled: Option<bool>,
    pub pci_bus_id: Option<String>,
}

/// What GPU detection found.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuReport {
    /// NVML answered: the driver version and every device (possibly none).
    Nvml {
        driver_version: String,
        gpus: Vec<Gpu>,
    },
    /// NVML could not be used; `reason` is a CamelCase condition reason and
    /// `message` the library's error.
    Unavailable { reason: String, message: String },
}

impl GpuReport {
    /// The GPUs found (none when NVML is unavailable).
    pub fn gpus(&self) -> &[Gpu] {
        match self {
            GpuReport::Nvml { gpus, .. } => gpus,
            GpuReport::Unavailable { .. } => &[],
        }
    }
}

/// Asks NVML for every GPU.
pub fn detect() -> GpuReport {
    use nvml_wrapper::Nvml;
    let nvml = match Nvml::init() {
        Ok(nvml) => nvml,
        Err(e) => {
            return GpuReport::Unavailable {
                reason: "NvmlUnavailable".into(),
                message: format!("NVML could not be initialised (no NVIDIA driver?): {e}"),
            };
        }
    };
    let unavailable = |what: &str, e: nvml_wrapper::error::NvmlError| GpuReport::Unavailable {
        reason: "NvmlQueryFailed".into(),
        message: format!("{what}: {e}"),
    };
    let driver_version = match nvml.sys_driver_version() {
        Ok(v) => v,
        Err(e) => return unavailable("reading the driver version", e),
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return unavailable("counting devices", e),
    };
    let mut gpus = Vec::new();
    for index in 0..count {
        let device = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => return unavailable(&format!("opening device {index}"), e),
        };
        let (uuid, model, memory) = match (device.uuid(), device.name(), device.memory_info()) {
            (Ok(u), Ok(n), Ok(m)) => (u, n, m.total),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return unavailable(&format!("reading device {index}"), e);
            }
        };
        gpus.push(Gpu {
            index,
            uuid,
            model,
            memory_bytes: memory,
            mig_enabled: device.mig_mode().ok().map(|m| m.current == 1),
            pci_bus_id: device.pci_info().ok().map(|p| p.bus_id),
        });
    }
    GpuReport::Nvml {
        driver_version,
        gpus,
    }
}
