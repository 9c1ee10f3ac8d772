//! Unit tests of [`super`]: volume directories, secret files and cleanup.

use super::*;
use hypermesh_api::Api;
use hypermesh_api::v1::ObjectMeta;
use std::collections::BTreeMap;

fn instance(uid: &str, volumes: Vec<v1::Volume>) -> Instance {
    Instance {
        metadata: Some(ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            uid: uid.into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            volumes,
            ..Default::default()
        }),
        status: None,
    }
}

fn volume(name: &str, source: Source) -> v1::Volume {
    v1::Volume {
        name: name.into(),
        source: Some(source),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> v1::VolumeMount {
    v1::VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only,
    }
}

/// Volumes over a secrets client that is never called (no secret volumes used).
fn volumes(root: &Path) -> InstanceVolumes {
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    let kem = std::sync::Arc::new(hypermesh_trust::sealing::NodeKem::generate());
    InstanceVolumes::new(
        SealedSecrets::new(Api::new(channel), "node", kem),
        root.join("volumes"),
        root.join("secrets"),
    )
}

#[tokio::test]
async fn empty_dirs_and_host_paths_become_bind_mounts() {
    let root = tempfile::tempdir().expect("temp dir");
    let v = volumes(root.path());
    let host = root.path().join("host.txt");
    std::fs::write(&host, "x").expect("host file");
    let i = instance(
        "u1",
        vec![
            volume("scratch", Source::EmptyDir(v1::EmptyDirVolume {})),
            volume(
                "conf",
                Source::HostPath(v1::HostPathVolume {
                    path: host.display().to_string(),
                }),
            ),
        ],
    );
    let c = v1::Container {
        volume_mounts: vec![
            mount("scratch", "/scratch", false),
            mount("conf", "/etc/conf", true),
        ],
        ..Default::default()
    };
    let mounts = v.mounts(&i, &c, (0, 0)).await.expect("mounts");
    let scratch = root.path().join("volumes/default_web_u1/scratch");
    assert_eq!(
        mounts,
        [
            BindMount {
                source: scratch.clone(),
                destination: "/scratch".into(),
                read_only: false
            },
            BindMount {
                source: host.clone(),
                destination: "/etc/conf".into(),
                read_only: true
            },
        ]
    );
    let mode = std::fs::metadata(&scratch)
        .expect("emptyDir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, EMPTY_DIR_MODE);
    std::fs::write(scratch.join("data"), "kept").expect("write");
    // A second container (or a restart) sees the same directory and its data.
    v.mounts(&i, &c, (0, 0)).await.expect("again");
    assert_eq!(
        std::fs::read_to_string(scratch.join("data"))
            .ok()
            .as_deref(),
        Some("kept")
    );

    v.remove(&i).await.expect("remove");
    assert!(!root.path().join("volumes/default_web_u1").exists());
    assert!(host.exists(), "a hostPath is never removed");
}

#[tokio::test]
async fn bad_host_paths_and_mounts_name_the_volume_and_path() {
    let root = tempfile::tempdir().expect("temp dir");
    let v = volumes(root.path());
    let i = instance(
        "u1",
        vec![volume(
            "data",
            Source::HostPath(v1::HostPathVolume {
                path: "/no/such/hypermesh/path".into(),
            }),
        )],
    );
    let with = |m| v1::Container {
        volume_mounts: vec![m],
        ..Default::default()
    };
    let err = v
        .mounts(&i, &with(mount("data", "/data", false)), (0, 0))
        .await
        .expect_err("missing");
    assert!(matches!(err, VolumeError::HostPathMissing { .. }));
    assert_eq!(
        err.to_string(),
        "volume \"data\": hostPath \"/no/such/hypermesh/path\" does not exist on this node"
    );
    assert!(!err.is_transient());
    let err = v
        .mounts(&i, &with(mount("other", "/x", false)), (0, 0))
        .await
        .expect_err("undefined");
    assert!(matches!(err, VolumeError::Undefined(n) if n == "other"));
    let err = v
        .mounts(&i, &with(mount("data", "/a/../etc", false)), (0, 0))
        .await
        .expect_err("climbs");
    assert!(matches!(err, VolumeError::MountPath { .. }));
    let dotted = instance(
        "u2",
        vec![volume(
            "data",
            Source::HostPath(v1::HostPathVolume {
                path: "/tmp/../etc".into(),
            }),
        )],
    );
    let err = v
        .mounts(&dotted, &with(mount("data", "/data", false)), (0, 0))
        .await
        .expect_err("..");
    assert!(matches!(err, VolumeError::HostPathInvalid { .. }));
}

#[test]
fn secret_files_are_written_0400_and_replaced_exactly() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("s");
    let data: BTreeMap<String, Vec<u8>> = [
        ("password".to_string(), b"hunter2".to_vec()),
        ("tls.crt".to_string(), b"---".to_vec()),
    ]
    .into();
    write_secret_files(&dir, &data, (0, 0)).expect("write");
    let read = |k: &str| std::fs::read(dir.join(k)).ok();
    assert_eq!(read("password").as_deref(), Some(&b"hunter2"[..]));
    let mode = std::fs::metadata(dir.join("password"))
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, SECRET_FILE_MODE);
    let data: BTreeMap<String, Vec<u8>> = [("password".to_string(), b"new".to_vec())].into();
    write_secret_files(&dir, &data, (0, 0)).expect("rewrite");
    assert_eq!(read("password").as_deref(), Some(&b"new"[..]));
    assert_eq!(read("tls.crt"), None, "a removed key's file goes");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["password"], "no temporary files left");
}

#[test]
fn keys_must_be_plain_file_names() {
    for ok in ["password", "tls.crt", ".hidden", "a-b_c"] {
        assert!(usable_key(ok), "{ok}");
    }
    for bad in ["", ".", "..", "..data", "a/b", "../x", "ä"] {
        assert!(!usable_key(bad), "{bad}");
    }
}

#[test]
fn only_memory_backed_dirs_hold_secrets() {
    assert!(memory_backed(Path::new("/dev/shm")).expect("statfs /dev/shm"));
    assert!(!memory_backed(Path::new("/proc")).expect("statfs /proc"));
}

#[tokio::test]
async fn stale_dirs_are_the_ones_of_instances_not_live() {
    let root = tempfile::tempdir().expect("temp dir");
    let v = volumes(root.path());
    let c = v1::Container {
        volume_mounts: vec![mount("scratch", "/scratch", false)],
        ..Default::default()
    };
    for uid in ["live-1", "gone-2"] {
        let i = instance(
            uid,
            vec![volume("scratch", Source::EmptyDir(v1::EmptyDirVolume {}))],
        );
        v.mounts(&i, &c, (0, 0)).await.expect("mounts");
    }
    std::fs::create_dir_all(root.path().join("volumes/unrelated")).expect("dir");
    let live: HashSet<String> = ["live-1".to_string()].into();
    let stale = v.stale(&live).await;
    assert_eq!(stale, [root.path().join("volumes/default_web_gone-2")]);
    remove_dirs(stale).await.expect("remove");
    assert!(root.path().join("volumes/default_web_live-1").exists());
    assert!(root.path().join("volumes/unrelated").exists());
    assert!(!root.path().join("volumes/default_web_gone-2").exists());
}

#[test]
fn directory_names_carry_the_uid() {
    assert_eq!(uid_of_dir("default_web_1f2e"), Some("1f2e"));
    assert_eq!(uid_of_dir("web_1f2e"), None);
    assert_eq!(uid_of_dir("unrelated"), None);
}
