//! Admission rejects invalid objects with the exact code, stable reason and field
//! path, on Create and on Update, and stores nothing: a bad quantity, an invalid DNS
//! name, negative replicas, a bad port, an unknown enum number, oversized objects and
//! a missing namespace.

use hypermesh_tests::fixtures;

use fixtures::{assert_status, list_request, names, workload};
use hypermesh_api::Api;
use hypermesh_api::reason::Reason;
use hypermesh_api::v1::{self, Workload};
use hypermesh_tests::InProcessApiServer;
use tonic::Code;

/// One way to make a Workload invalid, and how the server must answer.
struct Case {
    what: &'static str,
    spoil: fn(&mut Workload),
    code: Code,
    reason: Reason,
    /// Text the error message must contain (the field path, usually).
    mentions: &'static str,
    /// False when the defect makes Update look for another object (name, namespace).
    check_update: bool,
}

fn first_container(w: &mut Workload) -> &mut v1::Container {
    &mut w
        .spec
        .as_mut()
        .expect("spec")
        .template
        .as_mut()
        .expect("template")
        .containers[0]
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "cpu quantity \"lots\"",
            spoil: |w| {
                first_container(w).resources = Some(v1::ResourceRequirements {
                    cpu: "lots".into(),
                    ..Default::default()
                });
            },
            code: Code::InvalidArgument,
            reason: Reason::QuantityInvalid,
            mentions: "spec.template.containers[0].resources.cpu",
            check_update: true,
        },
        Case {
            what: "name that is not DNS-1123",
            spoil: |w| w.metadata.as_mut().expect("meta").name = "Web_1".into(),
            code: Code::InvalidArgument,
            reason: Reason::NameInvalid,
            mentions: "metadata.name",
            check_update: false,
        },
        Case {
            what: "negative replicas",
            spoil: |w| w.spec.as_mut().expect("spec").replicas = -1,
            code: Code::InvalidArgument,
            reason: Reason::FieldInvalid,
            mentions: "spec.replicas",
            check_update: true,
        },
        Case {
            what: "port 70000",
            spoil: |w| {
                first_container(w).ports = vec![v1::ContainerPort {
                    container_port: 70_000,
                    ..Default::default()
                }];
            },
            code: Code::InvalidArgument,
            reason: Reason::FieldInvalid,
            mentions: "spec.template.containers[0].ports[0].containerPort",
            check_update: true,
        },
        Case {
            what: "unknown privacy enum number",
            spoil: |w| {
                w.spec
                    .as_mut()
                    .expect("spec")
                    .template
                    .as_mut()
                    .expect("template")
                    .privacy = 42;
            },
            code: Code::InvalidArgument,
            reason: Reason::FieldInvalid,
            mentions: "spec.template.privacy",
            check_update: true,
        },
        Case {
            what: "a 10 MB environment value",
            spoil: |w| {
                first_container(w).env = vec![v1::EnvVar {
                    name: "BLOB".into(),
                    value: "x".repeat(10 * 1024 * 1024),
                    ..Default::default()
                }];
            },
            code: Code::ResourceExhausted,
            reason: Reason::TooLarge,
            mentions: "bytes",
            check_update: true,
        },
        Case {
            what: "300 KiB of annotations",
            spoil: |w| {
                w.metadata
                    .as_mut()
                    .expect("meta")
                    .annotations
                    .insert("note".into(), "y".repeat(300 * 1024));
            },
            code: Code::ResourceExhausted,
            reason: Reason::TooLarge,
            mentions: "metadata.annotations",
            check_update: true,
        },
        Case {
            what: "a namespace that does not exist",
            spoil: |w| w.metadata.as_mut().expect("meta").namespace = "nowhere".into(),
            code: Code::NotFound,
            reason: Reason::NamespaceNotFound,
            mentions: "nowhere",
            check_update: false,
        },
    ]
}

async fn everything(api: &Api<Workload>) -> Vec<Workload> {
    api.list(list_request(""))
        .await
        .expect("list every namespace")
        .0
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_field_paths_and_nothing_is_stored() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let good = api
        .create(&workload("default", "good", 1))
        .await
        .expect("a valid workload is accepted");

    for case in cases() {
        let mut bad = workload("default", "bad", 1);
        (case.spoil)(&mut bad);
        let err = api.create(&bad).await.expect_err(case.what);
        assert_status(&err, case.code, case.reason);
        assert!(
            err.message().contains(case.mentions),
            "{}: message {:?} should mention {:?}",
            case.what,
            err.message(),
            case.mentions
        );

        if case.check_update {
            let mut spoiled = good.clone();
            (case.spoil)(&mut spoiled);
            let err = api.update(&spoiled).await.expect_err(case.what);
            assert_status(&err, case.code, case.reason);
            assert!(
                err.message().contains(case.mentions),
                "{} (update): {:?}",
                case.what,
                err.message()
            );
        }

        let stored = everything(&api).await;
        assert_eq!(
            stored,
            vec![good.clone()],
            "{}: the store changed ({:?})",
            case.what,
            names(&stored)
        );
    }
}

#[tokio::test]
async fn quantity_error_quotes_the_value() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Workload>();
    let mut bad = workload("default", "web", 1);
    first_container(&mut bad).resources = Some(v1::ResourceRequirements {
        cpu: "lots".into(),
        memory: "128Mi".into(),
        ..Default::default()
    });
    let err = api.create(&bad).await.expect_err("bad quantity");
    assert_status(&err, Code::InvalidArgument, Reason::QuantityInvalid);
    assert!(
        err.message()
            .starts_with("spec.template.containers[0].resources.cpu: ")
            && err.message().contains("\"lots\""),
        "{}",
        err.message()
    );
    assert!(everything(&api).await.is_empty());
}

/// Half a GPU is refused with a field error until some GPU asset allows sharing.
#[tokio::test]
async fn fractional_gpus_need_a_shareable_gpu_asset() {
    use hypermesh_api::v1::{
        Asset, AssetSharing, AssetSpec, AssetType, Instance, InstanceSpec, ObjectMeta,
        ResourceRequirements,
    };
    let server = hypermesh_tests::InProcessApiServer::start()
        .await
        .expect("server");
    let instances = server.api::<Instance>();
    let half = |name: &str, gpu: &str| Instance {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(InstanceSpec {
            containers: vec![hypermesh_api::v1::Container {
                name: "main".into(),
                image: "hypermesh.local/busybox:latest".into(),
                resources: Some(ResourceRequirements {
                    gpu: gpu.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let err = instances
        .create(&half("half", "500m"))
        .await
        .expect_err("no shareable GPU");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("spec.containers[0].resources.gpu: fractional GPU \"500m\""),
        "{}",
        err.message()
    );
    let err = instances
        .create(&half("one-and-a-half", "1500m"))
        .await
        .expect_err("over one GPU");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    instances
        .create(&half("whole", "1"))
        .await
        .expect("whole GPUs need no sharing");

    // No proof, no Asset: the GPU belongs to a node with an identity and is proved.
    let identity = hypermesh_trust::NodeIdentity::generate();
    server
        .api::<hypermesh_api::v1::Node>()
        .create(&hypermesh_api::v1::Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            }),
            spec: Some(hypermesh_api::v1::NodeSpec {
                identity: Some(identity.to_node_identity()),
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("node");
    let mut gpu = Asset {
        metadata: Some(ObjectMeta {
            name: "n1-gpu0".into(),
            ..Default::default()
        }),
        spec: Some(AssetSpec {
            node_name: "n1".into(),
            r#type: AssetType::Gpu as i32,
            capacity: [("gpu".to_string(), "1".to_string())].into(),
            sharing: Some(AssetSharing {
                allowed: true,
                max_shares: 4,
            }),
            privacy: hypermesh_api::v1::PrivacyLevel::Untrusted as i32,
            ..Default::default()
        }),
        status: None,
    };
    hypermesh_tests::proofs::prove(&server.api::<Asset>(), &identity, "", &mut gpu)
        .await
        .expect("proof");
    server.api::<Asset>().create(&gpu).await.expect("asset");
    instances
        .create(&half("half", "500m"))
        .await
        .expect("a shareable GPU exists now");
}
