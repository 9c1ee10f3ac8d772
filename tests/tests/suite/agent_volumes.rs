//! Volumes on a real containerd: one container writes an emptyDir and another of the same
//! Instance reads it; a hostPath is visible, and read-only where the mount says so; a
//! Secret's keys are files (mode 0400) on tmpfs, mounted read-only; a missing Secret or
//! hostPath is the container's `CreateContainerConfigError` (retried until the Secret
//! appears) while other Instances run; volume directories go with their Instance, also
//! when it was deleted while the agent was down. Tests with Secrets run with TLS and a
//! joined agent: the apiserver seals a Secret to the reading node's ML-KEM key.

use hypermesh_tests::agent;
use hypermesh_tests::containerd;
use hypermesh_tests::instance;
use hypermesh_tests::node_env;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use agent::Agent;
use hypermesh_api::Resource;
use hypermesh_api::v1::{self, InstancePhase, RestartPolicy, Secret};
use hypermesh_tests::wait_for;
use instance::{delete, finished_log_of, log_of, running, sh, waiting};
use node_env::{Env, TIMEOUT};

fn empty_dir(name: &str) -> v1::Volume {
    v1::Volume {
        name: name.into(),
        source: Some(v1::volume::Source::EmptyDir(v1::EmptyDirVolume {})),
    }
}

fn host_path(name: &str, path: &Path) -> v1::Volume {
    v1::Volume {
        name: name.into(),
        source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
            path: path.display().to_string(),
        })),
    }
}

fn secret_volume(name: &str, secret: &str) -> v1::Volume {
    v1::Volume {
        name: name.into(),
        source: Some(v1::volume::Source::Secret(v1::SecretVolume {
            secret_name: secret.into(),
        })),
    }
}

fn mounted(mut c: v1::Container, volume: &str, path: &str, read_only: bool) -> v1::Container {
    c.volume_mounts.push(v1::VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only,
    });
    c
}

fn spec(containers: Vec<v1::Container>, volumes: Vec<v1::Volume>) -> v1::InstanceSpec {
    v1::InstanceSpec {
        containers,
        volumes,
        restart_policy: RestartPolicy::Never as i32,
        termination_grace_period_seconds: 1,
        ..Default::default()
    }
}

async fn create_secret(env: &Env, name: &str, data: &[(&str, &[u8])]) {
    env.server
        .api::<Secret>()
        .create(&Secret {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::SecretSpec {
                data: data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_vec()))
                    .collect(),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("create secret");
}

/// The directory named after `instance` under `root`, i.e. its volumes there.
fn instance_dir(root: &Path, instance: &v1::Instance) -> std::path::PathBuf {
    let m = instance.meta();
    root.join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
}

#[tokio::test]
async fn containers_of_an_instance_share_an_empty_dir() {
    let env = Env::start().await;
    let writer = mounted(
        sh("writer", "echo made-by-writer > /shared/msg"),
        "shared",
        "/shared",
        false,
    );
    let reader = mounted(
        sh(
            "reader",
            "for i in $(seq 300); do [ -f /data/msg ] && break; sleep 0.1; done; cat /data/msg",
        ),
        "shared",
        "/data",
        true,
    );
    let instance = env
        .run_spec(
            "pair",
            spec(vec![writer, reader], vec![empty_dir("shared")]),
        )
        .await;
    let done = env
        .wait_status("pair", "SUCCEEDED", |s| {
            s.phase == InstancePhase::Succeeded as i32
        })
        .await;
    let log = finished_log_of(&env, &done, "reader");
    assert!(log.contains("made-by-writer"), "reader log: {log:?}");
    let on_host = instance_dir(&env.volumes_dir(), &instance).join("shared/msg");
    assert_eq!(
        std::fs::read_to_string(&on_host).ok().as_deref(),
        Some("made-by-writer\n"),
        "the emptyDir lives under the agent's state dir"
    );

    // Deleting the (finished) Instance removes its volumes.
    delete(&env, "pair").await;
    wait_for(TIMEOUT, || async {
        (!instance_dir(&env.volumes_dir(), &instance).exists()).then_some(())
    })
    .await
    .expect("emptyDir removed with the Instance");
    env.stop().await;
}

#[tokio::test]
async fn host_paths_are_visible_and_read_only_when_asked() {
    let env = Env::start().await;
    let host = tempfile::tempdir().expect("host dir");
    std::fs::write(host.path().join("greeting"), "hello from the host\n").expect("host file");
    let script = "cat /ro/greeting; \
                  if touch /ro/intruder 2>/dev/null; then echo RO-WRITABLE; exit 1; fi; \
                  echo written-through > /rw/out";
    let c = mounted(
        mounted(sh("main", script), "host", "/ro", true),
        "host",
        "/rw",
        false,
    );
    env.run_spec("hosty", spec(vec![c], vec![host_path("host", host.path())]))
        .await;
    let done = env
        .wait_status("hosty", "finished", |s| {
            s.phase == InstancePhase::Succeeded as i32 || s.phase == InstancePhase::Failed as i32
        })
        .await;
    let log = finished_log_of(&env, &done, "main");
    assert_eq!(
        done.status.as_ref().map(|s| s.phase),
        Some(InstancePhase::Succeeded as i32),
        "log: {log:?}"
    );
    assert!(log.contains("hello from the host"), "{log:?}");
    assert!(
        !host.path().join("intruder").exists(),
        "the read-only mount refused the write"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("out"))
            .ok()
            .as_deref(),
        Some("written-through\n")
    );
    delete(&env, "hosty").await;
    env.stop().await;
    assert!(
        host.path().join("greeting").exists(),
        "a hostPath is never removed"
    );
}

#[tokio::test]
async fn secret_keys_are_read_only_files_on_tmpfs() {
    let env = Env::start_tls().await;
    create_secret(
        &env,
        "creds",
        &[("password", b"hunter2"), ("user", b"admin")],
    )
    .await;
    let script = "cat /etc/creds/password; echo; ls -ln /etc/creds/password; \
                  if touch /etc/creds/x 2>/dev/null; then echo SECRET-WRITABLE; fi; sleep 300";
    let c = mounted(sh("main", script), "creds", "/etc/creds", false);
    let instance = env
        .run_spec(
            "reader",
            spec(vec![c], vec![secret_volume("creds", "creds")]),
        )
        .await;
    wait_for(TIMEOUT, || async {
        let log = log_of(&env, &instance, "main");
        log.contains("-r--------").then_some(log)
    })
    .await
    .expect("the container lists its secret file");
    let log = log_of(&env, &instance, "main");
    assert!(log.contains("hunter2"), "{log:?}");
    assert!(
        log.lines().any(|l| l.starts_with("-r--------")
            && l.contains(" 0 ")
            && l.ends_with("/etc/creds/password")),
        "mode 0400, owned by root: {log:?}"
    );
    assert!(
        !log.contains("SECRET-WRITABLE"),
        "secret volumes are read-only: {log:?}"
    );

    // On the host the files are under the tmpfs secrets dir, nowhere in the state dir.
    let dir = instance_dir(env.secrets_dir.path(), &instance).join("creds");
    let file = dir.join("password");
    assert_eq!(std::fs::read(&file).ok().as_deref(), Some(&b"hunter2"[..]));
    let mode = std::fs::metadata(&file)
        .expect("secret file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o400);
    assert!(
        !instance_dir(&env.volumes_dir(), &instance)
            .join("creds")
            .exists()
    );

    delete(&env, "reader").await;
    wait_for(TIMEOUT, || async {
        (!instance_dir(env.secrets_dir.path(), &instance).exists()).then_some(())
    })
    .await
    .expect("secret files removed with the Instance");
    env.stop().await;
}

#[tokio::test]
async fn a_missing_secret_waits_as_a_config_error_until_it_appears() {
    let env = Env::start_tls().await;
    let c = mounted(
        sh("main", "cat /s/token; echo; sleep 300"),
        "late",
        "/s",
        true,
    );
    let instance = env
        .run_spec(
            "patient",
            spec(vec![c], vec![secret_volume("late", "late")]),
        )
        .await;
    let waiting_now = env
        .wait_status("patient", "CreateContainerConfigError", |s| {
            waiting(s, "main").is_some_and(|w| w.reason == "CreateContainerConfigError")
        })
        .await;
    let status = waiting_now.status.as_ref().expect("status");
    let w = waiting(status, "main").expect("waiting");
    assert_eq!(w.message, "secret \"late\" not found");
    assert_ne!(status.phase, InstancePhase::Failed as i32);
    assert!(
        env.ctr(&["containers", "ls", "-q"]).trim().is_empty(),
        "nothing created"
    );

    create_secret(&env, "late", &[("token", b"finally")]).await;
    env.wait_status("patient", "RUNNING once the Secret exists", |s| {
        running(s, "main")
    })
    .await;
    wait_for(TIMEOUT, || async {
        log_of(&env, &instance, "main")
            .contains("finally")
            .then_some(())
    })
    .await
    .expect("the container reads the Secret");
    env.stop().await;
}

#[tokio::test]
async fn a_missing_host_path_is_a_config_error_and_other_instances_run() {
    let env = Env::start().await;
    let missing = Path::new("/nonexistent/hypermesh-test/data");
    let c = mounted(sh("main", "sleep 300"), "data", "/data", false);
    env.run_spec("broken", spec(vec![c], vec![host_path("data", missing)]))
        .await;
    env.run(
        "healthy",
        containerd::TEST_IMAGE,
        &["sleep", "300"],
        RestartPolicy::Always,
    )
    .await;
    let broken = env
        .wait_status("broken", "CreateContainerConfigError", |s| {
            waiting(s, "main").is_some_and(|w| w.reason == "CreateContainerConfigError")
        })
        .await;
    let w = waiting(broken.status.as_ref().expect("status"), "main").expect("waiting");
    assert!(
        w.message.contains("\"data\"") && w.message.contains("/nonexistent/hypermesh-test/data"),
        "names the volume and the path: {:?}",
        w.message
    );
    env.wait_status("healthy", "RUNNING", |s| {
        s.phase == InstancePhase::Running as i32 && running(s, "main")
    })
    .await;
    let broken = env
        .instances()
        .get("default", "broken")
        .await
        .expect("broken");
    let status = broken.status.expect("status");
    assert_ne!(status.phase, InstancePhase::Failed as i32);
    assert_eq!(status.container_statuses[0].restart_count, 0);
    env.stop().await;
}

#[tokio::test]
async fn volumes_of_an_instance_deleted_while_the_agent_was_down_are_removed() {
    let mut env = Env::start_tls().await;
    create_secret(&env, "creds", &[("k", b"v")]).await;
    let c = mounted(
        mounted(sh("main", "sleep 300"), "scratch", "/scratch", false),
        "creds",
        "/creds",
        true,
    );
    let volumes = vec![empty_dir("scratch"), secret_volume("creds", "creds")];
    let kept = env
        .run_spec("kept", spec(vec![c.clone()], volumes.clone()))
        .await;
    let gone = env.run_spec("gone", spec(vec![c], volumes)).await;
    for name in ["kept", "gone"] {
        env.wait_status(name, "RUNNING", |s| running(s, "main"))
            .await;
    }
    for i in [&kept, &gone] {
        assert!(instance_dir(&env.volumes_dir(), i).join("scratch").is_dir());
        assert!(
            instance_dir(env.secrets_dir.path(), i)
                .join("creds/k")
                .is_file()
        );
    }

    let config = env.stop_agent().await;
    delete(&env, "gone").await;
    env.agent = Some(Agent::start(config));
    wait_for(TIMEOUT, || async {
        let removed = !instance_dir(&env.volumes_dir(), &gone).exists()
            && !instance_dir(env.secrets_dir.path(), &gone).exists();
        removed.then_some(())
    })
    .await
    .expect("the deleted Instance's volumes are removed after the restart");
    assert!(
        instance_dir(&env.volumes_dir(), &kept)
            .join("scratch")
            .is_dir()
    );
    assert!(
        instance_dir(env.secrets_dir.path(), &kept)
            .join("creds/k")
            .is_file()
    );
    env.stop().await;
}
