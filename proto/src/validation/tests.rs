//! Whole-object checks: the field paths and reasons a client sees.

use super::*;
use crate::v1;
use std::collections::BTreeMap;

fn workload() -> v1::Workload {
    let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    v1::Workload {
        metadata: Some(v1::ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::WorkloadSpec {
            replicas: 2,
            selector: labels.clone(),
            template: Some(v1::InstanceTemplate {
                labels,
                containers: vec![v1::Container {
                    name: "web".into(),
                    image: "registry.local/web:1".into(),
                    resources: Some(v1::ResourceRequirements {
                        cpu: "500m".into(),
                        memory: "128Mi".into(),
                        ..Default::default()
                    }),
                    ports: vec![v1::ContainerPort {
                        container_port: 8080,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn fields(result: Result<(), FieldErrors>) -> Vec<String> {
    result
        .err()
        .map(|e| e.0.into_iter().map(|f| f.field).collect())
        .unwrap_or_default()
}

#[test]
fn a_good_workload_passes() {
    assert_eq!(validate(&workload()), Ok(()));
}

#[test]
fn bad_quantity_names_the_path() {
    let mut w = workload();
    w.spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap()
        .containers[0]
        .resources
        .as_mut()
        .unwrap()
        .cpu = "lots".into();
    let err = validate(&w).unwrap_err();
    assert_eq!(err.0[0].field, "spec.template.containers[0].resources.cpu");
    assert_eq!(err.0[0].reason, Reason::QuantityInvalid);
    assert!(err.to_string().contains("\"lots\""), "{err}");
}

#[test]
fn bad_names_ports_and_replicas_are_reported() {
    let mut w = workload();
    w.metadata.as_mut().unwrap().name = "Web_1".into();
    let spec = w.spec.as_mut().unwrap();
    spec.replicas = -1;
    spec.template.as_mut().unwrap().containers[0].ports[0].container_port = 70_000;
    assert_eq!(
        fields(validate(&w)),
        [
            "metadata.name",
            "spec.replicas",
            "spec.template.containers[0].ports[0].containerPort"
        ]
    );
}

#[test]
fn unknown_enum_numbers_are_rejected() {
    let mut w = workload();
    w.spec.as_mut().unwrap().template.as_mut().unwrap().privacy = 42;
    assert_eq!(fields(validate(&w)), ["spec.template.privacy"]);
}

#[test]
fn cluster_scoped_kinds_refuse_a_namespace() {
    let ns = v1::Namespace {
        metadata: Some(v1::ObjectMeta {
            name: "team-a".into(),
            namespace: "x".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(fields(validate(&ns)), ["metadata.namespace"]);
}

fn instance(volumes: Vec<v1::Volume>, mounts: Vec<v1::VolumeMount>) -> v1::Instance {
    v1::Instance {
        metadata: Some(v1::ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::InstanceSpec {
            containers: vec![v1::Container {
                name: "web".into(),
                image: "registry.local/web:1".into(),
                volume_mounts: mounts,
                ..Default::default()
            }],
            volumes,
            ..Default::default()
        }),
        status: None,
    }
}

fn mount(name: &str, path: &str) -> v1::VolumeMount {
    v1::VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: false,
    }
}

#[test]
fn volume_mounts_need_a_defined_volume_and_a_clean_absolute_path() {
    let scratch = v1::Volume {
        name: "scratch".into(),
        source: Some(v1::volume::Source::EmptyDir(v1::EmptyDirVolume {})),
    };
    let host = |path: &str| v1::Volume {
        name: "host".into(),
        source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
            path: path.into(),
        })),
    };
    let good = instance(
        vec![scratch.clone(), host("/var/data")],
        vec![mount("scratch", "/scratch"), mount("host", "/data")],
    );
    assert_eq!(validate(&good), Ok(()));
    let bad = instance(
        vec![scratch.clone(), host("/var/../etc")],
        vec![
            mount("nothing", "/a"),
            mount("scratch", "relative"),
            mount("scratch", "/x/../../etc"),
            mount("scratch", ""),
            mount("host", "/b"),
            mount("scratch", "/b/"),
        ],
    );
    let err = validate(&bad).expect_err("invalid");
    assert_eq!(
        err.0.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(),
        [
            "spec.volumes[1].hostPath.path",
            "spec.containers[0].volumeMounts[0].name",
            "spec.containers[0].volumeMounts[1].mountPath",
            "spec.containers[0].volumeMounts[2].mountPath",
            "spec.containers[0].volumeMounts[3].mountPath",
            "spec.containers[0].volumeMounts[5].mountPath",
        ]
    );
    assert!(
        err.to_string()
            .contains("\"/x/../../etc\" must not contain"),
        "{err}"
    );
    assert!(err.to_string().contains("mounted more than once"), "{err}");
}

#[test]
fn liveness_probes_succeed_once() {
    let mut i = instance(vec![], vec![]);
    let c = &mut i.spec.as_mut().unwrap().containers[0];
    let probe = v1::Probe {
        tcp_socket: Some(v1::TcpSocketAction { port: 8080 }),
        success_threshold: 2,
        ..Default::default()
    };
    c.readiness_probe = Some(probe.clone());
    assert_eq!(validate(&i), Ok(()));
    i.spec.as_mut().unwrap().containers[0].liveness_probe = Some(probe);
    assert_eq!(
        fields(validate(&i)),
        ["spec.containers[0].livenessProbe.successThreshold"]
    );
}

#[test]
fn secret_keys_are_file_names() {
    let secret = |key: &str| v1::Secret {
        metadata: Some(v1::ObjectMeta {
            name: "creds".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::SecretSpec {
            data: [(key.to_string(), b"x".to_vec())].into(),
            ..Default::default()
        }),
        status: None,
    };
    assert_eq!(validate(&secret("tls.crt")), Ok(()));
    assert_eq!(validate(&secret(".hidden")), Ok(()));
    for bad in [".", "..", "..data", "a/b"] {
        assert_eq!(
            fields(validate(&secret(bad))),
            [format!("spec.data[{bad}]")]
        );
    }
}

#[test]
fn toleration_seconds_and_grace_periods_are_bounded() {
    let mut i = instance(vec![], vec![]);
    let spec = i.spec.as_mut().unwrap();
    spec.tolerations = vec![
        v1::Toleration {
            key: "hypermesh.io/unreachable".into(),
            operator: "Exists".into(),
            toleration_seconds: 3600,
            ..Default::default()
        },
        v1::Toleration {
            key: "hypermesh.io/unreachable".into(),
            operator: "Exists".into(),
            toleration_seconds: i64::MAX - 1,
            ..Default::default()
        },
        v1::Toleration {
            operator: "Exists".into(),
            toleration_seconds: i64::MIN,
            ..Default::default()
        },
    ];
    spec.termination_grace_period_seconds = i64::MAX;
    assert_eq!(
        fields(validate(&i)),
        [
            "spec.tolerations[1].tolerationSeconds",
            "spec.tolerations[2].tolerationSeconds",
            "spec.terminationGracePeriodSeconds",
        ]
    );
    let err = validate(&i).unwrap_err();
    assert!(
        err.to_string()
            .contains("must be -31536000 to 31536000 seconds"),
        "{err}"
    );
}

#[test]
fn status_times_from_the_future_are_refused() {
    let mut i = instance(vec![], vec![]);
    let far = pbjson_types::Timestamp {
        seconds: crate::time::now().seconds + 3600,
        nanos: 0,
    };
    i.status = Some(v1::InstanceStatus {
        start_time: Some(far),
        conditions: vec![v1::Condition {
            r#type: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(far),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(
        fields(validate(&i)),
        [
            "status.conditions[0].lastTransitionTime",
            "status.startTime"
        ]
    );
    // Judged against the clock given: an hour later they are fine.
    let later = Context {
        now: std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    };
    assert_eq!(validate_at(&i, &later), Ok(()));
}
