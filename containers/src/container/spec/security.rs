//! How much of the host a container gets: its capabilities (containerd's default set,
//! all of them only when privileged), its namespaces (the host's network and PID
//! namespaces only on request; a user and a cgroup namespace when it runs with id
//! mappings), and the kernel paths it must not see or change.

use serde_json::{Value, json};

use crate::container::Security;

/// containerd's (and Docker's) default capability set for containers.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows (for privileged containers).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Kernel paths hidden from unprivileged containers (as containerd's defaults).
const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Kernel paths unprivileged containers see read-only.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capability set (bounding, effective and permitted alike).
pub fn capabilities(security: &Security) -> Vec<&'static str> {
    if security.privileged {
        ALL_CAPABILITIES.to_vec()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    }
}

/// The namespaces the container gets of its own.
pub fn namespaces(security: &Security) -> Value {
    let mut namespaces = vec![
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !security.host_pid {
        namespaces.push(json!({"type": "pid"}));
    }
    if !security.host_network {
        namespaces.push(json!({"type": "network"}));
    }
    if security.user_namespace.is_some() {
        // A cgroup namespace too: the cgroup file system can only be mounted inside a
        // user namespace from a cgroup namespace it owns.
        namespaces.push(json!({"type": "user"}));
        namespaces.push(json!({"type": "cgroup"}));
    }
    Value::from(namespaces)
}

/// Masks and write-protects kernel paths unless the container is privileged.
pub fn restrict_kernel_paths(security: &Security, linux: &mut Value) {
    if !security.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }
}

/// The uid and gid mappings of the container's user namespace, if it has one.
pub fn id_mappings(security: &Security, linux: &mut Value) {
    if let Some(m) = &security.user_namespace {
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": m.uid_base, "size": m.size}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": m.gid_base, "size": m.size}]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::IdMapping;
    use crate::container::spec::runtime_spec;
    use crate::container::spec::tests::{busybox, config};

    fn types(spec: &Value) -> Vec<String> {
        spec["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter_map(|n| n["type"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn containers_get_the_default_set_seccomp_and_their_own_namespaces() {
        let spec = runtime_spec(&config(), &busybox()).expect("spec");
        let caps = &spec["process"]["capabilities"];
        assert_eq!(caps["effective"], json!(DEFAULT_CAPABILITIES));
        assert_eq!(caps["bounding"], json!(DEFAULT_CAPABILITIES));
        assert_eq!(spec["process"]["noNewPrivileges"], json!(true));
        assert_eq!(
            spec["linux"]["seccomp"]["defaultAction"],
            json!("SCMP_ACT_ERRNO")
        );
        assert_eq!(types(&spec), ["ipc", "uts", "mount", "pid", "network"]);
        assert!(spec["linux"]["maskedPaths"].is_array());
        assert!(spec["linux"].get("uidMappings").is_none());
    }

    #[test]
    fn host_namespaces_and_privileges_only_when_asked() {
        let mut c = config();
        c.security.host_network = true;
        c.security.host_pid = true;
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(types(&spec), ["ipc", "uts", "mount"]);
        assert_eq!(
            spec["process"]["capabilities"]["effective"],
            json!(DEFAULT_CAPABILITIES)
        );
        c.security.privileged = true;
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(
            spec["process"]["capabilities"]["effective"],
            json!(ALL_CAPABILITIES.to_vec())
        );
        assert!(spec["linux"].get("seccomp").is_none());
        assert!(spec["linux"].get("maskedPaths").is_none());
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
    }

    #[test]
    fn a_user_namespace_maps_ids_and_refuses_users_outside_it() {
        let mut c = config();
        c.security.user_namespace = Some(IdMapping::DEFAULT);
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(
            types(&spec),
            ["ipc", "uts", "mount", "pid", "network", "user", "cgroup"]
        );
        let base = IdMapping::DEFAULT.uid_base;
        assert_eq!(
            spec["linux"]["uidMappings"],
            json!([{"containerID": 0, "hostID": base, "size": 65536}])
        );
        c.user = Some(crate::container::ProcessUser { uid: 70000, gid: 0 });
        assert!(runtime_spec(&c, &busybox()).is_err());
    }
}
