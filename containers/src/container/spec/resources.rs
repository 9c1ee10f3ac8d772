//! A container's cgroup limits: CPU quota and shares from a CPU quantity, a memory limit,
//! a pids limit, and the device rules (none allowed unless privileged).

use serde_json::{Value, json};

use crate::Error;
use crate::container::ContainerConfig;

/// CFS period used to turn a CPU quantity into a quota.
const CPU_PERIOD_US: u64 = 100_000;

/// The `linux.resources` of `config`.
pub fn resources(config: &ContainerConfig) -> Result<Value, Error> {
    let invalid = |detail: String| Error::InvalidConfig(format!("{}: {detail}", config.id));
    let devices = if config.security.privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        json!([{"allow": false, "access": "rwm"}])
    };
    let mut resources = json!({ "devices": devices });
    if let Some(memory) = config.memory {
        let bytes = i64::try_from(memory.units_ceil())
            .map_err(|_| invalid(format!("memory {memory} too large")))?;
        if bytes <= 0 {
            return Err(invalid("memory limit must be positive".into()));
        }
        resources["memory"] = json!({"limit": bytes});
    }
    if let Some(cpu) = config.cpu {
        let millis = u64::try_from(cpu.millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Err(invalid("cpu limit must be positive".into()));
        }
        let quota = millis.saturating_mul(CPU_PERIOD_US) / 1000;
        // Kubernetes' mapping: 1 CPU = 1024 shares, at least 2.
        let shares = (millis.saturating_mul(1024) / 1000).max(2);
        resources["cpu"] = json!({
            "shares": shares,
            "quota": i64::try_from(quota.max(1000)).unwrap_or(i64::MAX),
            "period": CPU_PERIOD_US,
        });
    }
    if let Some(pids) = config.pids_limit {
        resources["pids"] = json!({"limit": pids});
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::spec::runtime_spec;
    use crate::container::spec::tests::{busybox, config};

    #[test]
    fn limits_become_cgroup_resources() {
        let mut c = config();
        c.cpu = Some("250m".parse().expect("quantity"));
        c.memory = Some("128Mi".parse().expect("quantity"));
        c.pids_limit = Some(100);
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        let resources = &spec["linux"]["resources"];
        assert_eq!(resources["memory"]["limit"], json!(128 * 1024 * 1024));
        assert_eq!(resources["cpu"]["quota"], json!(25_000));
        assert_eq!(resources["cpu"]["period"], json!(100_000));
        assert_eq!(resources["cpu"]["shares"], json!(256));
        assert_eq!(resources["pids"]["limit"], json!(100));
        assert_eq!(
            resources["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
        assert_eq!(spec["linux"]["cgroupsPath"], json!("/hypermesh/c1"));
    }
}
