//! Resource amounts the scheduler adds and compares: what a node offers
//! (`status.allocatable`) and what an Instance requests (the sum of its containers).

use std::collections::BTreeMap;
use std::ops::{Add, AddAssign, Sub};

use hypermesh_api::quantity::Quantity;
use hypermesh_api::v1;

/// cpu in millicores, memory and storage in bytes, gpu in thousandths of a GPU,
/// instances as a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu_milli: u64,
    /// Bytes.
    pub memory: u64,
    /// Bytes.
    pub storage: u64,
    /// Thousandths of a GPU.
    pub gpu_milli: u64,
    /// Instances.
    pub instances: u64,
}

pub(crate) fn millis(q: &str) -> u64 {
    q.parse::<Quantity>()
        .map(|q| u64::try_from(q.millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn units(q: &str) -> u64 {
    q.parse::<Quantity>()
        .map(|q| u64::try_from(q.units_ceil()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Resources {
    /// From a node's `allocatable` (or `capacity`) map. A node that reports no
    /// `instances` limit gets 110, Kubernetes' default pod limit.
    pub fn from_quantities(map: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).map(String::as_str).unwrap_or("");
        Resources {
            cpu_milli: millis(get("cpu")),
            memory: units(get("memory")),
            storage: units(get("storage")),
            gpu_milli: millis(get("gpu")),
            instances: map.get("instances").map_or(110, |q| units(q)),
        }
    }

    /// What an Instance requests: the sum over its containers, plus one instance slot.
    pub fn requested_by(spec: &v1::InstanceSpec) -> Self {
        let mut total = Resources {
            instances: 1,
            ..Default::default()
        };
        for c in &spec.containers {
            if let Some(r) = &c.resources {
                // Saturating: a hostile request (u64::MAX twice) must not overflow.
                total += Resources {
                    cpu_milli: millis(&r.cpu),
                    memory: units(&r.memory),
                    storage: units(&r.storage),
                    gpu_milli: millis(&r.gpu),
                    instances: 0,
                };
            }
        }
        total
    }

    /// The smaller of each amount.
    pub fn min(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.min(other.cpu_milli),
            memory: self.memory.min(other.memory),
            storage: self.storage.min(other.storage),
            gpu_milli: self.gpu_milli.min(other.gpu_milli),
            instances: self.instances.min(other.instances),
        }
    }

    /// True when every amount of `self` fits in `available`.
    pub fn fits_in(&self, available: &Resources) -> bool {
        self.cpu_milli <= available.cpu_milli
            && self.memory <= available.memory
            && self.storage <= available.storage
            && self.gpu_milli <= available.gpu_milli
            && self.instances <= available.instances
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_add(o.cpu_milli),
            memory: self.memory.saturating_add(o.memory),
            storage: self.storage.saturating_add(o.storage),
            gpu_milli: self.gpu_milli.saturating_add(o.gpu_milli),
            instances: self.instances.saturating_add(o.instances),
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

impl Sub for Resources {
    type Output = Resources;
    fn sub(self, o: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_sub(o.cpu_milli),
            memory: self.memory.saturating_sub(o.memory),
            storage: self.storage.saturating_sub(o.storage),
            gpu_milli: self.gpu_milli.saturating_sub(o.gpu_milli),
            instances: self.instances.saturating_sub(o.instances),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_container_requests() {
        let spec = v1::InstanceSpec {
            containers: vec![
                v1::Container {
                    resources: Some(v1::ResourceRequirements {
                        cpu: "500m".into(),
                        memory: "128Mi".into(),
                        gpu: "1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                v1::Container {
                    resources: Some(v1::ResourceRequirements {
                        cpu: "1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = Resources::requested_by(&spec);
        assert_eq!(
            (r.cpu_milli, r.memory, r.gpu_milli, r.instances),
            (1500, 128 << 20, 1000, 1)
        );
    }

    #[test]
    fn fits_compares_every_dimension() {
        let node = Resources::from_quantities(
            &[
                ("cpu".to_string(), "4".to_string()),
                ("memory".to_string(), "8Gi".to_string()),
            ]
            .into(),
        );
        assert_eq!(node.instances, 110);
        let small = Resources {
            cpu_milli: 1000,
            memory: 1 << 30,
            instances: 1,
            ..Default::default()
        };
        assert!(small.fits_in(&node));
        let gpu = Resources {
            gpu_milli: 1000,
            ..small
        };
        assert!(!gpu.fits_in(&node));
    }
}
