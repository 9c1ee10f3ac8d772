//! Mirroring the Kubernetes Node this agent runs on (the Helm chart's DaemonSet): its
//! labels and taints are copied onto the HyperMesh Node of the same name, so node pools
//! keep their scheduling labels (`topology.kubernetes.io/zone`, `node.kubernetes.io/
//! instance-type`, a pool's own) and taints in HyperMesh.
//!
//! The Kubernetes Node is read with the `kube` client as the pod's service account (the
//! chart's ClusterRole grants `get` on nodes), every `--kubernetes-sync-interval`: one
//! GET per node per interval. What the agent mirrored is remembered in two annotations
//! ([`LABELS_ANNOTATION`], [`TAINTS_ANNOTATION`]), so a label or taint removed in
//! Kubernetes is removed here too, while labels and taints of other origins (`--label`,
//! the node-lifecycle controller, an admin) are never touched. `--label` wins over a
//! Kubernetes label of the same key. Taints under `node.kubernetes.io/` are not mirrored:
//! they report the kubelet's own state (not-ready, unreachable, pressure), which the
//! HyperMesh node-lifecycle controller judges for itself from the agent's Lease.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use hypermesh_api::v1::{Node, Taint, TaintEffect};
use hypermesh_api::{Api, Resource};
use k8s_openapi::api::core::v1::Node as KubeNode;
use tokio_util::sync::CancellationToken;

/// The keys of the labels last mirrored from Kubernetes, comma-separated.
pub const LABELS_ANNOTATION: &str = "hypermesh.io/kubernetes-labels";
/// The taints last mirrored from Kubernetes, `key:Effect`, comma-separated.
pub const TAINTS_ANNOTATION: &str = "hypermesh.io/kubernetes-taints";
/// Taints with this key prefix are Kubernetes' node lifecycle, not mirrored.
pub const KUBERNETES_LIFECYCLE_PREFIX: &str = "node.kubernetes.io/";

/// Where the service account's credentials are mounted in a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach the Kubernetes API from inside a pod: what `kube`'s in-cluster config
/// reads, kept as paths so the token is re-read when the kubelet rotates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesApi {
    /// `https://HOST:PORT` of the API server.
    pub url: String,
    /// The service account token (re-read on every request batch by `kube`).
    pub token_file: PathBuf,
    /// The cluster CA bundle (PEM) the API server's certificate chains to.
    pub ca_file: PathBuf,
}

impl KubernetesApi {
    /// The in-cluster API when this process runs in a pod with a service-account token
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT` set and the token mounted); `None` elsewhere.
    pub fn in_cluster() -> Option<KubernetesApi> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok()?;
        let dir = PathBuf::from(SERVICE_ACCOUNT_DIR);
        let token_file = dir.join("token");
        if host.is_empty() || !token_file.is_file() {
            return None;
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(KubernetesApi {
            url: format!("https://{host}:{port}"),
            token_file,
            ca_file: dir.join("ca.crt"),
        })
    }

    /// A `kube` client for this API (TLS with the CA bundle, the token as bearer).
    pub fn client(&self) -> Result<kube::Client, KubeNodeError> {
        let url = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| KubeNodeError::Config(e.to_string()))?;
        let pem = std::fs::read(&self.ca_file).map_err(|e| {
            KubeNodeError::Config(format!("CA bundle {}: {e}", self.ca_file.display()))
        })?;
        let roots = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
            .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                KubeNodeError::Config(format!("CA bundle {}: {e}", self.ca_file.display()))
            })?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(roots);
        config.auth_info.token_file = Some(self.token_file.display().to_string());
        kube::Client::try_from(config).map_err(|e| KubeNodeError::Config(e.to_string()))
    }
}

/// Why mirroring failed (logged; retried on the next interval).
#[derive(Debug, thiserror::Error)]
pub enum KubeNodeError {
    /// The Kubernetes client could not be built.
    #[error("kubernetes client: {0}")]
    Config(String),
    /// Reading the Kubernetes Node failed.
    #[error("reading kubernetes node {name}: {source}")]
    Kubernetes {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading or writing the HyperMesh Node failed.
    #[error("{action} node {name}: {status}")]
    HyperMesh {
        action: &'static str,
        name: String,
        #[source]
        status: tonic::Status,
    },
}

/// What of a Kubernetes Node is mirrored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirroredNode {
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

impl MirroredNode {
    /// The labels and the mirrorable taints of `node` (see the module doc); taints of an
    /// effect HyperMesh does not know are skipped.
    pub fn of(node: &KubeNode) -> MirroredNode {
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| !t.key.starts_with(KUBERNETES_LIFECYCLE_PREFIX))
            .filter_map(|t| {
                let effect = match t.effect.as_str() {
                    "NoSchedule" => TaintEffect::NoSchedule,
                    "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
                    "NoExecute" => TaintEffect::NoExecute,
                    _ => return None,
                };
                Some(Taint {
                    key: t.key.clone(),
                    value: t.value.clone().unwrap_or_default(),
                    effect: effect as i32,
                    time_added: None,
                })
            })
            .collect();
        MirroredNode {
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
        }
    }
}

fn taint_id(t: &Taint) -> String {
    let effect = match TaintEffect::try_from(t.effect) {
        Ok(TaintEffect::NoSchedule) => "NoSchedule",
        Ok(TaintEffect::PreferNoSchedule) => "PreferNoSchedule",
        Ok(TaintEffect::NoExecute) => "NoExecute",
        _ => "",
    };
    format!("{}:{effect}", t.key)
}

fn split(text: Option<&String>) -> BTreeSet<String> {
    text.map(|t| {
        t.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Makes `node` carry `kube`'s labels and taints, removing those mirrored before and
/// gone since, leaving every other label and taint (and the keys of `own_labels`, the
/// agent's `--label`s) alone. Returns whether `node` changed.
pub fn mirror(
    node: &mut Node,
    kube: &MirroredNode,
    own_labels: &BTreeMap<String, String>,
    now: pbjson_types::Timestamp,
) -> bool {
    let before = node.clone();
    let meta = node.meta_mut();
    let old_labels = split(meta.annotations.get(LABELS_ANNOTATION));
    let old_taints = split(meta.annotations.get(TAINTS_ANNOTATION));

    let labels: BTreeMap<&String, &String> = kube
        .labels
        .iter()
        .filter(|(k, _)| !own_labels.contains_key(*k))
        .collect();
    for gone in old_labels.iter().filter(|k| !labels.contains_key(k)) {
        if !own_labels.contains_key(gone) {
            meta.labels.remove(gone);
        }
    }
    for (k, v) in &labels {
        meta.labels.insert((*k).clone(), (*v).clone());
    }
    let label_keys: Vec<&str> = labels.keys().map(|k| k.as_str()).collect();
    let taint_ids: BTreeSet<String> = kube.taints.iter().map(taint_id).collect();
    for (key, value) in [
        (LABELS_ANNOTATION, label_keys.join(",")),
        (
            TAINTS_ANNOTATION,
            taint_ids.iter().cloned().collect::<Vec<_>>().join(","),
        ),
    ] {
        if value.is_empty() {
            meta.annotations.remove(key);
        } else {
            meta.annotations.insert(key.to_string(), value);
        }
    }

    let spec = node.spec.get_or_insert_with(Default::default);
    spec.taints.retain(|t| {
        let id = taint_id(t);
        !old_taints.contains(&id) || taint_ids.contains(&id)
    });
    for wanted in &kube.taints {
        match spec
            .taints
            .iter_mut()
            .find(|t| t.key == wanted.key && t.effect == wanted.effect)
        {
            Some(t) => t.value.clone_from(&wanted.value),
            None => spec.taints.push(Taint {
                time_added: Some(now),
                ..wanted.clone()
            }),
        }
    }
    *node != before
}

/// Reads the Kubernetes Node `name` and mirrors it onto the HyperMesh Node of the same
/// name; returns whether the HyperMesh Node was updated. A Node not registered yet is
/// left for the next round.
pub async fn sync_once(
    kube: &kube::Api<KubeNode>,
    nodes: &Api<Node>,
    name: &str,
    own_labels: &BTreeMap<String, String>,
) -> Result<bool, KubeNodeError> {
    let source = kube
        .get(name)
        .await
        .map_err(|source| KubeNodeError::Kubernetes {
            name: name.to_string(),
            source,
        })?;
    let wanted = MirroredNode::of(&source);
    let hm = |action| {
        move |status| KubeNodeError::HyperMesh {
            action,
            name: name.to_string(),
            status,
        }
    };
    let mut node = match nodes.get("", name).await {
        Ok(node) => node,
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(false),
        Err(s) => return Err(hm("reading")(s)),
    };
    let now = hypermesh_api::time::from_system_time(std::time::SystemTime::now());
    if !mirror(&mut node, &wanted, own_labels, now) {
        return Ok(false);
    }
    nodes.update(&node).await.map_err(hm("updating"))?;
    Ok(true)
}

/// Mirrors the Kubernetes Node every `interval` until `shutdown`; failures are logged
/// and retried on the next round (a conflicting write, a Kubernetes API outage).
pub async fn run(
    api: KubernetesApi,
    nodes: Api<Node>,
    name: String,
    own_labels: BTreeMap<String, String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let client = match api.client() {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(error = %e, "not mirroring the Kubernetes node");
            return;
        }
    };
    tracing::info!(url = %api.url, node = %name, "mirroring the Kubernetes node's labels and taints");
    let kube: kube::Api<KubeNode> = kube::Api::all(client);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sync_once(&kube, &nodes, &name, &own_labels).await {
            Ok(true) => tracing::info!(node = %name, "labels and taints mirrored from Kubernetes"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "mirroring the Kubernetes node failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::{NodeSpec, ObjectMeta};

    fn kube_node(json: serde_json::Value) -> KubeNode {
        serde_json::from_value(json).expect("node json")
    }

    fn hm_node(labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: Some(ObjectMeta {
                name: "n1".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                taints,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: String::new(),
            effect: effect as i32,
            time_added: None,
        }
    }

    fn keys(node: &Node) -> Vec<String> {
        node.spec
            .as_ref()
            .map(|s| s.taints.iter().map(taint_id).collect())
            .unwrap_or_default()
    }

    #[test]
    fn lifecycle_taints_and_unknown_effects_are_not_mirrored() {
        let k = kube_node(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"pool": "gpu"}},
            "spec": {"taints": [
                {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
                {"key": "odd", "effect": "Sometimes"}
            ]}
        }));
        let m = MirroredNode::of(&k);
        assert_eq!(m.labels["pool"], "gpu");
        assert_eq!(m.taints.len(), 1);
        assert_eq!(m.taints[0].value, "ml");
        assert_eq!(taint_id(&m.taints[0]), "dedicated:NoSchedule");
    }

    #[test]
    fn removals_touch_only_what_was_mirrored() {
        let own = BTreeMap::from([("role".to_string(), "edge".to_string())]);
        let mut node = hm_node(
            &[("role", "edge"), ("set-by-admin", "x")],
            vec![taint("hypermesh.io/suspect", TaintEffect::NoSchedule)],
        );
        let first = MirroredNode {
            labels: BTreeMap::from([
                ("zone".into(), "a".into()),
                ("role".into(), "kube-says".into()),
            ]),
            taints: vec![taint("dedicated", TaintEffect::NoSchedule)],
        };
        let now = pbjson_types::Timestamp {
            seconds: 1,
            nanos: 0,
        };
        assert!(mirror(&mut node, &first, &own, now));
        let meta = node.meta();
        assert_eq!(meta.labels["zone"], "a");
        assert_eq!(meta.labels["role"], "edge", "--label wins");
        assert_eq!(meta.annotations[LABELS_ANNOTATION], "zone");
        assert_eq!(
            keys(&node),
            ["hypermesh.io/suspect:NoSchedule", "dedicated:NoSchedule"]
        );
        // The same again changes nothing.
        assert!(!mirror(&mut node, &first, &own, now));

        // Kubernetes drops its label and taint: they go, nothing else does.
        assert!(mirror(&mut node, &MirroredNode::default(), &own, now));
        let meta = node.meta();
        assert!(!meta.labels.contains_key("zone"));
        assert_eq!(meta.labels["set-by-admin"], "x");
        assert_eq!(meta.labels["role"], "edge");
        assert!(!meta.annotations.contains_key(LABELS_ANNOTATION));
        assert!(!meta.annotations.contains_key(TAINTS_ANNOTATION));
        assert_eq!(keys(&node), ["hypermesh.io/suspect:NoSchedule"]);
    }
}
