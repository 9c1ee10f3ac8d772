//! The OCI runtime spec of a container, built from its [`ContainerConfig`] and its image:
//! the process (argv, environment, working directory, user) here, and by concern in the
//! submodules.
//!
//! # Layout
//! - [`mounts`]: the kernel file systems every container gets and its volumes, bound
//!   non-recursively.
//! - [`resources`]: cgroup cpu, memory, pids and device limits.
//! - [`security`]: capabilities, namespaces (host network and PID on request, the user
//!   namespace with its id mappings), masked kernel paths, privileged containers.
//! - [`seccomp`]: the default seccomp profile.

pub mod mounts;
pub mod resources;
pub mod seccomp;
pub mod security;

use serde_json::{Value, json};

use super::{ContainerConfig, ProcessUser, cgroup_path};
use crate::Error;
use crate::image::ImportedImage;

/// Default PATH when neither the image nor the config sets one.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the OCI runtime spec for `config` on top of `image`.
pub fn runtime_spec(config: &ContainerConfig, image: &ImportedImage) -> Result<Value, Error> {
    let invalid = |detail: String| Error::InvalidConfig(format!("{}: {detail}", config.id));
    let defaults = &image.config;
    let mut argv: Vec<String> = if config.command.is_empty() {
        defaults.entrypoint.clone()
    } else {
        config.command.clone()
    };
    if !config.args.is_empty() {
        argv.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        argv.extend(defaults.cmd.iter().cloned());
    }
    if argv.is_empty() {
        return Err(invalid(
            "no command: the image has no entrypoint or cmd and none was given".into(),
        ));
    }
    let mut env: Vec<String> = defaults.env.clone();
    for (name, value) in &config.env {
        if name.is_empty() || name.contains('=') {
            return Err(invalid(format!(
                "invalid environment variable name {name:?}"
            )));
        }
        env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(name.as_str()));
        env.push(format!("{name}={value}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = config
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| Some(defaults.working_dir.clone()).filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }
    let user = match config.user {
        Some(user) => user,
        None if defaults.user.is_empty() => ProcessUser::default(),
        None => ProcessUser::parse(&defaults.user).ok_or_else(|| {
            invalid(format!(
                "the image's user {:?} is not a numeric uid[:gid]",
                defaults.user
            ))
        })?,
    };
    let security = &config.security;
    if let Some(mapping) = &security.user_namespace
        && (mapping.host_uid(user.uid).is_none() || mapping.host_gid(user.gid).is_none())
    {
        return Err(invalid(format!(
            "user {}:{} is outside the user namespace's {} mapped ids",
            user.uid, user.gid, mapping.size
        )));
    }
    let capabilities = security::capabilities(security);
    let mut linux = json!({
        "resources": resources::resources(config)?,
        "cgroupsPath": cgroup_path(&config.id),
        "namespaces": security::namespaces(security),
    });
    security::restrict_kernel_paths(security, &mut linux);
    security::id_mappings(security, &mut linux);
    if !security.privileged {
        linux["seccomp"] = seccomp::default_profile(&capabilities);
    }
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": user.uid, "gid": user.gid},
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": !security.privileged,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "",
        "mounts": mounts::mounts(config)?,
        "linux": linux,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::container::LogSink;
    use crate::image::ImageDefaults;

    pub(crate) fn busybox() -> ImportedImage {
        ImportedImage {
            name: "hypermesh.local/busybox:latest".into(),
            manifest: "sha256:00".into(),
            config_digest: "sha256:22".into(),
            chain_id: "sha256:11".into(),
            config: ImageDefaults {
                entrypoint: vec![],
                cmd: vec!["/bin/sh".into()],
                env: vec!["PATH=/bin".into(), "MODE=image".into()],
                working_dir: "/".into(),
                user: String::new(),
            },
        }
    }

    pub(crate) fn config() -> ContainerConfig {
        ContainerConfig {
            id: "c1".into(),
            image: "hypermesh.local/busybox:latest".into(),
            log: LogSink {
                logger: "/usr/bin/hm-logger".into(),
                file: "/tmp/hm-test/0.log".into(),
                max_bytes: 1024,
                max_files: 2,
            },
            ..Default::default()
        }
    }

    #[test]
    fn image_cmd_is_the_default_and_command_replaces_it() {
        let spec = runtime_spec(&config(), &busybox()).expect("spec");
        assert_eq!(spec["process"]["args"], json!(["/bin/sh"]));
        let mut c = config();
        c.command = vec!["/bin/echo".into()];
        c.args = vec!["hi".into()];
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(spec["process"]["args"], json!(["/bin/echo", "hi"]));
        let mut c = config();
        c.args = vec!["-c".into(), "true".into()];
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(spec["process"]["args"], json!(["-c", "true"]));
    }

    #[test]
    fn env_overrides_the_image_and_path_is_kept() {
        let mut c = config();
        c.env = vec![("MODE".into(), "prod".into()), ("X".into(), "1".into())];
        let spec = runtime_spec(&c, &busybox()).expect("spec");
        assert_eq!(
            spec["process"]["env"],
            json!(["PATH=/bin", "MODE=prod", "X=1"])
        );
        c.env = vec![("A=B".into(), "1".into())];
        assert!(matches!(
            runtime_spec(&c, &busybox()),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn relative_working_dir_and_no_command_are_rejected() {
        let mut c = config();
        c.working_dir = Some("tmp".into());
        assert!(runtime_spec(&c, &busybox()).is_err());
        let mut image = busybox();
        image.config.cmd.clear();
        assert!(runtime_spec(&config(), &image).is_err());
    }

    #[test]
    fn the_user_comes_from_the_config_then_the_image() {
        let spec = runtime_spec(&config(), &busybox()).expect("spec");
        assert_eq!(spec["process"]["user"], json!({"uid": 0, "gid": 0}));
        let mut image = busybox();
        image.config.user = "65534:65534".into();
        let spec = runtime_spec(&config(), &image).expect("spec");
        assert_eq!(spec["process"]["user"], json!({"uid": 65534, "gid": 65534}));
        let mut c = config();
        c.user = Some(ProcessUser { uid: 1000, gid: 7 });
        let spec = runtime_spec(&c, &image).expect("spec");
        assert_eq!(spec["process"]["user"], json!({"uid": 1000, "gid": 7}));
        image.config.user = "www-data".into();
        assert!(matches!(
            runtime_spec(&config(), &image),
            Err(Error::InvalidConfig(m)) if m.contains("www-data")
        ));
    }
}
