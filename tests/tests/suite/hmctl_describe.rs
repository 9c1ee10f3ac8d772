//! `hmctl describe` against a real `hm-apiserver` process, as kubectl's: metadata, a
//! summary line, spec and status as labelled sections (not YAML: numbers bare, phases
//! as `get` shows them), conditions, what runs on a node with its allocated resources,
//! and the Events recorded about the object (and only those).

use hypermesh_tests::hmctl;

use hmctl::{Hmctl, web_workload};
use hypermesh_api::Api;
use hypermesh_api::time::now;
use hypermesh_api::v1::{self, Event, ObjectMeta, ObjectReference, Workload};
use hypermesh_tests::ApiServerProcess;

fn event(name: &str, about: &str, reason: &str, message: &str) -> Event {
    Event {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::EventSpec {
            involved_object: Some(ObjectReference {
                kind: "Workload".into(),
                namespace: "default".into(),
                name: about.into(),
                uid: String::new(),
            }),
            reason: reason.into(),
            message: message.into(),
            r#type: "Normal".into(),
            source: "hmctl-test".into(),
            count: 1,
            first_timestamp: Some(now()),
            last_timestamp: Some(now()),
        }),
        status: None,
    }
}

#[tokio::test]
async fn hmctl_describe_shows_metadata_spec_status_conditions_and_events() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let channel = server.channel().await.expect("channel");
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 3))
        .await
        .ok();
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("other", 1))
        .await
        .ok();

    // Before any events or status.
    let out = hmctl.run(&["describe", "workload", "web"]).await.ok();
    assert!(
        out.stdout
            .starts_with("Name:             web\nNamespace:        default\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Labels:           app=web\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "\nReplicas:         3 desired | 0 updated | 0 total | 0 available | 0 unavailable\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("\nSpec:\n  Replicas:  3\n  Selector:  app=web\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("        Resources:\n          CPU:     100m\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\nStatus:           <none>\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("Events:           <none>\n"),
        "{}",
        out.stdout
    );

    // A status with a condition, and events about web and about another workload.
    let workloads = Api::<Workload>::new(channel.clone());
    let mut web = workloads.get("default", "web").await.expect("web");
    web.status = Some(v1::WorkloadStatus {
        replicas: 3,
        ready_replicas: 1,
        conditions: vec![v1::Condition {
            r#type: "Available".into(),
            status: "False".into(),
            reason: "MinimumReplicasUnavailable".into(),
            message: "1 of 3 ready".into(),
            last_transition_time: Some(now()),
        }],
        ..Default::default()
    });
    workloads.update_status(&web).await.expect("status");
    let events = Api::<Event>::new(channel);
    events
        .create(&event(
            "web.1",
            "web",
            "ScalingUp",
            "created instance web-x1",
        ))
        .await
        .expect("event about web");
    events
        .create(&event(
            "other.1",
            "other",
            "ScalingUp",
            "created instance other-y",
        ))
        .await
        .expect("event about other");

    let out = hmctl.run(&["describe", "wl", "web"]).await.ok();
    let text = &out.stdout;
    assert!(
        text.contains("\nStatus:\n  Replicas:        3\n  Ready Replicas:  1\n"),
        "{text}"
    );
    assert!(text.contains("\nConditions:\n  TYPE        STATUS   REASON                       MESSAGE        LAST TRANSITION\n"), "{text}");
    assert!(
        text.contains("  Available   False    MinimumReplicasUnavailable   1 of 3 ready   "),
        "{text}"
    );
    assert!(
        text.contains("\nEvents:\n  TYPE     REASON      AGE   FROM         MESSAGE\n"),
        "{text}"
    );
    assert!(text.contains("created instance web-x1"), "{text}");
    assert!(!text.contains("other-y"), "only events about web: {text}");

    let out = hmctl.run(&["describe", "wl", "missing"]).await.failed();
    assert_eq!(
        out.stderr,
        "Error from server (NotFound): workloads \"missing\" not found\n"
    );
}

#[tokio::test]
async fn hmctl_describe_node_shows_a_key_fingerprint_and_yaml_the_key() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let identity = hypermesh_trust::identity::NodeIdentity::generate();
    let key = identity.public_key().to_vec();
    let node = v1::Node {
        metadata: Some(ObjectMeta {
            name: "host-1".into(),
            ..Default::default()
        }),
        spec: Some(v1::NodeSpec {
            identity: Some(v1::NodeIdentity {
                node_id: hypermesh_trust::node_id_of(&key),
                public_key: key.clone(),
                algorithm: "falcon-1024".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    };
    Api::<v1::Node>::new(server.channel().await.expect("channel"))
        .create(&node)
        .await
        .expect("create node");
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let out = hmctl.run(&["describe", "node", "host-1"]).await.ok();
    assert!(
        out.stdout
            .contains(&format!("Public Key:  sha256:{}…", &digest[..16])),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.len() < 2000,
        "the key is not printed: {}",
        out.stdout
    );
    let yaml = hmctl
        .run(&["get", "node", "host-1", "-o", "yaml"])
        .await
        .ok();
    assert!(yaml.stdout.len() > 2000, "-o yaml keeps the whole key");
}

#[tokio::test]
async fn hmctl_describe_instance_and_node_read_like_kubectl() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let channel = server.channel().await.expect("channel");
    let nodes = Api::<v1::Node>::new(channel.clone());
    let node = nodes
        .create(&v1::Node {
            metadata: Some(ObjectMeta {
                name: "host-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("node");
    let mut node = node;
    node.status = Some(v1::NodeStatus {
        capacity: [("cpu".into(), "4".into()), ("memory".into(), "1Gi".into())].into(),
        allocatable: [("cpu".into(), "4".into()), ("memory".into(), "1Gi".into())].into(),
        ..Default::default()
    });
    nodes.update_status(&node).await.expect("node status");

    let instances = Api::<v1::Instance>::new(channel);
    for (name, cpu) in [("web-a", "500m"), ("web-b", "1")] {
        instances
            .create(&v1::Instance {
                metadata: Some(ObjectMeta {
                    name: name.into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                spec: Some(v1::InstanceSpec {
                    containers: vec![v1::Container {
                        name: "main".into(),
                        image: "hypermesh.local/busybox:latest".into(),
                        resources: Some(v1::ResourceRequirements {
                            cpu: cpu.into(),
                            memory: "256Mi".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: None,
            })
            .await
            .expect("instance");
        instances
            .bind(v1::BindRequest {
                namespace: "default".into(),
                name: name.into(),
                node_name: "host-1".into(),
                ..Default::default()
            })
            .await
            .expect("bind");
    }

    let out = hmctl.run(&["describe", "inst", "web-a"]).await.ok();
    let text = &out.stdout;
    assert!(text.contains("\nNode:             host-1\n"), "{text}");
    assert!(text.contains("\nPhase:            Scheduled\n"), "{text}");
    assert!(
        text.contains("\n  Phase:  Scheduled\n"),
        "phase as get shows it: {text}"
    );
    assert!(!text.contains("SCHEDULED"), "{text}");
    assert!(text.contains("\n  Node Name:   host-1\n"), "{text}");

    let out = hmctl.run(&["describe", "node", "host-1"]).await.ok();
    let text = &out.stdout;
    assert!(
        text.contains("\nNon-terminated Instances:  (2 in total)\n  NAMESPACE   NAME    CPU          MEMORY        GPU   AGE\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  default     web-a   500m (12%)   256Mi (25%)   0 "),
        "{text}"
    );
    assert!(
        text.contains("\nAllocated resources:\n  RESOURCE   REQUESTS      ALLOCATABLE\n  cpu        1500m (37%)   4\n  memory     512Mi (50%)   1Gi\n"),
        "{text}"
    );
    assert!(text.ends_with("Events:           <none>\n"), "{text}");
}
