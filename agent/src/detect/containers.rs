//! Container capacity: how many Instances this host accepts. It is a configured limit
//! (`--max-instances`, default 110 like Kubernetes' pods per node), not a hardware read.

/// The container slots this node offers.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerCapacity {
    pub max_instances: u32,
    /// Where the limit came from, for the asset's attributes.
    pub source: &'static str,
}

/// The capacity from configuration.
pub fn detect(max_instances: u32) -> ContainerCapacity {
    ContainerCapacity {
        max_instances,
        source: "config",
    }
}
