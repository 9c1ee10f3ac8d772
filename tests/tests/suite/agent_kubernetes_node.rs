//! In a Kubernetes pod (the Helm chart's DaemonSet) the agent mirrors its Kubernetes
//! Node's labels and taints onto its HyperMesh Node, read with the `kube` client over
//! HTTPS with the service account's token and CA, here from a fake Kubernetes API on
//! loopback serving recorded responses (tests/fixtures/kubernetes). The kubelet's own
//! `node.kubernetes.io/` taints are left out, `--label` wins over a Kubernetes label,
//! and when Kubernetes drops a label or taint the agent drops it too, while an admin's
//! taint on the HyperMesh Node stays.

use std::time::Duration;

use hypermesh_api::Resource;
use hypermesh_api::v1::{Node, Taint, TaintEffect};
use hypermesh_tests::agent::{Agent, TIMEOUT, config};
use hypermesh_tests::identities::join_token;
use hypermesh_tests::kube_api::{FakeKubeApi, recorded};
use hypermesh_tests::{InProcessApiServer, wait_for};

const NODE: &str = "pool-gpu-1";

fn taints(node: &Node) -> Vec<(String, String, i32)> {
    let mut t: Vec<_> = node
        .spec
        .as_ref()
        .map(|s| s.taints.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|t| (t.key.clone(), t.value.clone(), t.effect))
        .collect();
    t.sort();
    t
}

fn label<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.meta().labels.get(key).map(String::as_str)
}

#[tokio::test]
async fn agent_mirrors_its_kubernetes_nodes_labels_and_taints() {
    let server = InProcessApiServer::start_tls().await.expect("apiserver");
    let token = join_token(&server, 1, Duration::from_secs(600))
        .await
        .expect("join token");
    let kube = FakeKubeApi::start(NODE, recorded("node-pool-gpu-1.json")).await;
    let state = tempfile::tempdir().expect("state dir");
    let mut cfg = config(
        server.url(),
        NODE,
        state.path(),
        state.path().join("no-containerd.sock"),
    );
    cfg.join_token = Some(token);
    cfg.ca_cert_hash = Some(server.ca_pin().expect("CA pin"));
    cfg.labels.insert("pool".into(), "hypermesh-own".into());
    cfg.kubernetes = Some(kube.kubernetes_api());
    cfg.kubernetes_sync_interval = Duration::from_millis(200);
    let agent = Agent::start(cfg);

    let nodes = server.api::<Node>();
    let node = wait_for(TIMEOUT, || async {
        let n = nodes.get("", NODE).await.ok()?;
        (label(&n, "topology.kubernetes.io/zone") == Some("eu-west-1b")).then_some(n)
    })
    .await
    .expect("the Kubernetes labels reach the HyperMesh Node");
    assert!(kube.gets() >= 1, "read with the service account's token");
    assert_eq!(
        label(&node, "node.kubernetes.io/instance-type"),
        Some("g5.2xlarge")
    );
    assert_eq!(label(&node, "kubernetes.io/hostname"), Some(NODE));
    assert_eq!(label(&node, "pool"), Some("hypermesh-own"), "--label wins");
    let ns = TaintEffect::NoSchedule as i32;
    let prefer = TaintEffect::PreferNoSchedule as i32;
    assert_eq!(
        taints(&node),
        [
            ("nvidia.com/gpu".into(), "present".into(), ns),
            ("pool".into(), "gpu".into(), prefer),
        ],
        "mirrored without the kubelet's node.kubernetes.io/disk-pressure"
    );
    assert!(
        node.spec.as_ref().expect("spec").taints[0]
            .time_added
            .is_some()
    );

    // An admin taints the HyperMesh Node meanwhile (retrying a write that races the
    // agent's).
    wait_for(TIMEOUT, || async {
        let mut n = nodes.get("", NODE).await.ok()?;
        n.spec
            .get_or_insert_with(Default::default)
            .taints
            .push(Taint {
                key: "maintenance".into(),
                value: "disk".into(),
                effect: ns,
                time_added: None,
            });
        nodes.update(&n).await.ok()
    })
    .await
    .expect("admin taint");

    // In Kubernetes: `kubectl label node pool-gpu-1 pool- team=vision` and
    // `kubectl taint node pool-gpu-1 nvidia.com/gpu-`.
    kube.serve(recorded("node-pool-gpu-1-relabelled.json"));
    let node = wait_for(TIMEOUT, || async {
        let n = nodes.get("", NODE).await.ok()?;
        (label(&n, "team") == Some("vision") && !taints(&n).iter().any(|t| t.0 == "nvidia.com/gpu"))
            .then_some(n)
    })
    .await
    .expect("the change in Kubernetes reaches the HyperMesh Node");
    assert_eq!(label(&node, "pool"), Some("hypermesh-own"), "--label kept");
    assert_eq!(
        taints(&node),
        [
            ("maintenance".into(), "disk".into(), ns),
            ("pool".into(), "gpu".into(), prefer),
        ],
        "the admin's taint stays"
    );
    agent.stop().await;
}
