//! Admission rejects Instances (and Workload templates) whose volumes cannot be mounted
//! safely: a mount naming no volume, a relative or `..` mount path, a path mounted twice,
//! a relative or `..` hostPath, a liveness probe with successThreshold > 1; and Secrets
//! whose keys cannot be file names. Each answer is INVALID_ARGUMENT with the field path,
//! and nothing is stored.

use hypermesh_tests::fixtures;

use fixtures::{assert_status, instance, list_request, meta, workload};
use hypermesh_api::reason::Reason;
use hypermesh_api::v1::{self, Instance, Secret, Workload};
use hypermesh_tests::InProcessApiServer;
use tonic::Code;

fn scratch() -> v1::Volume {
    v1::Volume {
        name: "scratch".into(),
        source: Some(v1::volume::Source::EmptyDir(v1::EmptyDirVolume {})),
    }
}

fn host(path: &str) -> v1::Volume {
    v1::Volume {
        name: "host".into(),
        source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
            path: path.into(),
        })),
    }
}

fn mount(name: &str, path: &str) -> v1::VolumeMount {
    v1::VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: false,
    }
}

/// `default/web` with `volumes` and one container mounting `mounts`.
fn with_volumes(volumes: Vec<v1::Volume>, mounts: Vec<v1::VolumeMount>) -> Instance {
    let mut i = instance("default", "web");
    let spec = i.spec.as_mut().expect("spec");
    spec.volumes = volumes;
    spec.containers[0].volume_mounts = mounts;
    i
}

#[tokio::test]
async fn unsafe_volumes_and_mounts_are_rejected_with_field_paths() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Instance>();
    let cases: Vec<(&str, Instance, &str)> = vec![
        (
            "a mount of an undefined volume",
            with_volumes(vec![scratch()], vec![mount("cache", "/cache")]),
            "spec.containers[0].volumeMounts[0].name: no volume named \"cache\"",
        ),
        (
            "a relative mount path",
            with_volumes(vec![scratch()], vec![mount("scratch", "scratch")]),
            "spec.containers[0].volumeMounts[0].mountPath: \"scratch\" must be an absolute path",
        ),
        (
            "a mount path climbing out with ..",
            with_volumes(vec![scratch()], vec![mount("scratch", "/data/../../etc")]),
            "spec.containers[0].volumeMounts[0].mountPath: \"/data/../../etc\" must not contain",
        ),
        (
            "one path mounted twice",
            with_volumes(
                vec![scratch(), host("/srv")],
                vec![mount("scratch", "/data"), mount("host", "/data")],
            ),
            "spec.containers[0].volumeMounts[1].mountPath: \"/data\" is mounted more than once",
        ),
        (
            "a relative hostPath",
            with_volumes(vec![host("srv/data")], vec![]),
            "spec.volumes[0].hostPath.path: \"srv/data\" must be an absolute path",
        ),
        (
            "a hostPath with ..",
            with_volumes(vec![host("/srv/../etc")], vec![]),
            "spec.volumes[0].hostPath.path: \"/srv/../etc\" must not contain",
        ),
        (
            "a liveness probe that must succeed twice",
            {
                let mut i = instance("default", "web");
                i.spec.as_mut().expect("spec").containers[0].liveness_probe = Some(v1::Probe {
                    tcp_socket: Some(v1::TcpSocketAction { port: 8080 }),
                    success_threshold: 2,
                    ..Default::default()
                });
                i
            },
            "spec.containers[0].livenessProbe.successThreshold",
        ),
    ];
    for (what, bad, mentions) in cases {
        let err = api.create(&bad).await.expect_err(what);
        assert_status(&err, Code::InvalidArgument, Reason::FieldInvalid);
        assert!(
            err.message().contains(mentions),
            "{what}: {:?} should mention {mentions:?}",
            err.message()
        );
    }
    let (stored, _, _) = api.list(list_request("")).await.expect("list");
    assert!(stored.is_empty(), "nothing stored: {stored:?}");

    // The same checks hold for a Workload's template, with its path.
    let mut w = workload("default", "web", 1);
    let template = w
        .spec
        .as_mut()
        .and_then(|s| s.template.as_mut())
        .expect("template");
    template.volumes = vec![scratch()];
    template.containers[0].volume_mounts = vec![mount("scratch", "/x/..")];
    let err = server
        .api::<Workload>()
        .create(&w)
        .await
        .expect_err("template with ..");
    assert_status(&err, Code::InvalidArgument, Reason::FieldInvalid);
    assert!(
        err.message()
            .contains("spec.template.containers[0].volumeMounts[0].mountPath"),
        "{}",
        err.message()
    );

    // Valid volumes are accepted; a hostPath only where the workload policy allows host
    // access (`trust_attacks.rs` has the policy's own story).
    let valid = with_volumes(
        vec![scratch(), host("/srv/data")],
        vec![mount("scratch", "/scratch"), mount("host", "/data")],
    );
    let err = api
        .create(&valid)
        .await
        .expect_err("hostPath in a baseline namespace");
    assert_status(&err, Code::PermissionDenied, Reason::PolicyDenied);
    let namespaces = server.api::<v1::Namespace>();
    let mut default = namespaces.get("", "default").await.expect("default");
    default
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert("hypermesh.io/policy".into(), "privileged".into());
    namespaces.update(&default).await.expect("label default");
    api.create(&valid).await.expect("valid volumes");
}

#[tokio::test]
async fn secret_keys_that_cannot_be_file_names_are_rejected() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Secret>();
    for key in ["..data", ".", "a/b"] {
        let secret = Secret {
            metadata: Some(meta("default", "creds")),
            spec: Some(v1::SecretSpec {
                data: [(key.to_string(), b"x".to_vec())].into(),
                ..Default::default()
            }),
            status: None,
        };
        let err = api.create(&secret).await.expect_err(key);
        assert_status(&err, Code::InvalidArgument, Reason::FieldInvalid);
        assert!(
            err.message().contains(&format!("spec.data[{key}]")),
            "{}",
            err.message()
        );
    }
    let (stored, _, _) = api.list(list_request("")).await.expect("list");
    assert!(stored.is_empty());
}
