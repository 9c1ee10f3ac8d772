//! Containers are safe by default, on a real agent and containerd: a root container runs
//! in a user namespace (root inside is an unprivileged host uid), with containerd's
//! default capability set and seccomp profile (`unshare` and `mount` are refused); a
//! hostPath volume is bound without the host directory's submounts; a non-root container
//! reads its Secret's files (with TLS and a joined agent, so the Secret is sealed to the
//! node); and only a container whose securityContext asks for it runs
//! with the host's users.

use hypermesh_tests::instance;
use hypermesh_tests::node_env;

use hypermesh_api::v1::{self, InstancePhase, RestartPolicy, Secret};
use instance::{finished_log_of, sh};
use node_env::Env;

/// containerd's default capability set as a CapEff mask.
const DEFAULT_CAP_EFF: &str = "00000000a80425fb";

fn finished(s: &v1::InstanceStatus) -> bool {
    s.phase == InstancePhase::Succeeded as i32 || s.phase == InstancePhase::Failed as i32
}

fn spec(containers: Vec<v1::Container>, volumes: Vec<v1::Volume>) -> v1::InstanceSpec {
    v1::InstanceSpec {
        containers,
        volumes,
        restart_policy: RestartPolicy::Never as i32,
        ..Default::default()
    }
}

/// Runs `spec` as Instance `name` to its end; its phase and the log of container `main`.
async fn run_to_end(env: &Env, name: &str, spec: v1::InstanceSpec) -> (i32, String) {
    env.run_spec(name, spec).await;
    let done = env.wait_status(name, "finished", finished).await;
    let log = finished_log_of(env, &done, "main");
    (done.status.map(|s| s.phase).unwrap_or_default(), log)
}

fn mounted(mut c: v1::Container, volume: &str, path: &str) -> v1::Container {
    c.volume_mounts.push(v1::VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: true,
    });
    c
}

#[tokio::test]
async fn root_runs_in_a_user_namespace_with_default_caps_and_seccomp() {
    let env = Env::start().await;
    let script = "grep CapEff /proc/self/status; \
                  echo uid_map $(cat /proc/self/uid_map); \
                  if unshare -n true 2>/dev/null; then echo UNSHARED; else echo unshare-refused; fi; \
                  if mount -t tmpfs none /mnt 2>/dev/null; then echo MOUNTED; else echo mount-refused; fi; \
                  echo id $(id -u):$(id -g); touch /bin/written && echo rootfs-writable";
    let (phase, log) = run_to_end(&env, "confined", spec(vec![sh("main", script)], vec![])).await;
    assert_eq!(phase, InstancePhase::Succeeded as i32, "{log}");
    assert!(
        log.contains(&format!("CapEff:\t{DEFAULT_CAP_EFF}")),
        "{log}"
    );
    assert!(log.contains("uid_map 0 1073741824 65536"), "{log}");
    assert!(log.contains("unshare-refused"), "{log}");
    assert!(log.contains("mount-refused"), "{log}");
    // Root inside, owning its root file system (chowned into the mapped range).
    assert!(log.contains("id 0:0"), "{log}");
    assert!(log.contains("rootfs-writable"), "{log}");

    // Asking for the host's users: uid 0 is the host's root again.
    let mut c = sh(
        "main",
        "echo uid_map $(cat /proc/self/uid_map); grep CapEff /proc/self/status",
    );
    c.security_context = Some(v1::SecurityContext {
        host_users: true,
        ..Default::default()
    });
    let (phase, log) = run_to_end(&env, "host-users", spec(vec![c], vec![])).await;
    assert_eq!(phase, InstancePhase::Succeeded as i32, "{log}");
    assert!(log.contains("uid_map 0 0 4294967295"), "{log}");
    assert!(
        log.contains(&format!("CapEff:\t{DEFAULT_CAP_EFF}")),
        "{log}"
    );
    env.stop().await;
}

/// A tmpfs mounted on `dir` for the test's life.
struct Submount(std::path::PathBuf);

impl Submount {
    fn new(dir: &std::path::Path) -> Submount {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "hm-submount"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        Submount(dir.to_path_buf())
    }
}

impl Drop for Submount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_host_path_is_bound_without_its_submounts() {
    let env = Env::start().await;
    let host = tempfile::tempdir().expect("host dir");
    std::fs::write(host.path().join("top"), "on the host dir\n").expect("file");
    let sub = Submount::new(&host.path().join("sub"));
    std::fs::write(sub.0.join("hidden"), "in the submount\n").expect("file in submount");
    let script =
        "cat /h/top; ls -A /h/sub; cat /h/sub/hidden 2>/dev/null || echo submount-not-visible";
    let volume = v1::Volume {
        name: "host".into(),
        source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
            path: host.path().display().to_string(),
        })),
    };
    let c = mounted(sh("main", script), "host", "/h");
    let (phase, log) = run_to_end(&env, "binder", spec(vec![c], vec![volume])).await;
    assert_eq!(phase, InstancePhase::Succeeded as i32, "{log}");
    assert!(log.contains("on the host dir"), "{log}");
    assert!(!log.contains("in the submount"), "{log}");
    assert!(log.contains("submount-not-visible"), "{log}");
    drop(sub);
    env.stop().await;
}

#[tokio::test]
async fn a_non_root_container_reads_its_secret() {
    let env = Env::start_tls().await;
    let secret = Secret {
        metadata: Some(v1::ObjectMeta {
            name: "creds".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::SecretSpec {
            data: [("token".to_string(), b"s3cret-token".to_vec())].into(),
            ..Default::default()
        }),
        status: None,
    };
    env.server
        .api::<Secret>()
        .create(&secret)
        .await
        .expect("secret");
    let volume = v1::Volume {
        name: "creds".into(),
        source: Some(v1::volume::Source::Secret(v1::SecretVolume {
            secret_name: "creds".into(),
        })),
    };
    let mut c = mounted(
        sh(
            "main",
            "echo id $(id -u):$(id -g); ls -ln /s/token; cat /s/token",
        ),
        "creds",
        "/s",
    );
    c.user = "1000:1000".into();
    let (phase, log) = run_to_end(&env, "reader", spec(vec![c], vec![volume])).await;
    assert_eq!(phase, InstancePhase::Succeeded as i32, "{log}");
    assert!(log.contains("id 1000:1000"), "{log}");
    assert!(log.contains("s3cret-token"), "{log}");
    assert!(
        log.lines().any(|l| l.starts_with("-r--------")
            && l.contains(" 1000 ")
            && l.ends_with("/s/token")),
        "mode 0400, owned by the container's user: {log}"
    );
    env.stop().await;
}
