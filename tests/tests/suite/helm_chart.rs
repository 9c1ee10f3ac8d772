//! The Helm chart (`charts/hypermesh`): `helm lint --strict` passes with the default and
//! the etcd/HA values, `helm template` renders objects that parse with the Kubernetes
//! API types field for field, the defaults are the safe ones the chart promises (TLS on
//! the pod IP, secrets from Secrets, probes on ports that exist, agents rolled one node
//! at a time, only the documented capabilities), and values.schema.json refuses bad
//! values naming the field. Fails without helm under CI=true (`.ci/run` installs it).

use std::collections::BTreeSet;

use hypermesh_tests::helm::{self, Object};
use k8s_openapi::api::core::v1::{Container, PodSpec};

const HA_VALUES: &str = "ci/etcd-ha-values.yaml";

fn render(helm: &std::path::Path, extra: &[&str]) -> Vec<Object> {
    let out = helm::template(helm, extra);
    assert!(
        out.success,
        "helm template {extra:?} failed:\n{}",
        out.stderr
    );
    helm::parse_rendered(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
}

fn ha_values() -> String {
    helm::chart_dir().join(HA_VALUES).display().to_string()
}

/// The pod spec of the workload named `…-suffix`.
fn pod<'a>(objects: &'a [Object], suffix: &str) -> &'a PodSpec {
    objects
        .iter()
        .find_map(|o| {
            let (meta, spec) = match o {
                Object::StatefulSet(s) => (&s.metadata, s.spec.as_ref()?.template.spec.as_ref()),
                Object::Deployment(d) => (&d.metadata, d.spec.as_ref()?.template.spec.as_ref()),
                Object::DaemonSet(d) => (&d.metadata, d.spec.as_ref()?.template.spec.as_ref()),
                _ => return None,
            };
            meta.name.as_deref()?.ends_with(suffix).then_some(spec?)
        })
        .unwrap_or_else(|| panic!("no workload named *{suffix}"))
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args(c: &Container) -> Vec<String> {
    c.args.clone().unwrap_or_default()
}

fn added_caps(c: &Container) -> BTreeSet<String> {
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref());
    assert_eq!(
        caps.and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()]),
        "{} drops every capability",
        c.name
    );
    caps.and_then(|c| c.add.clone())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Every httpGet probe names a port the container declares, on `/healthz`.
fn assert_probes_on_declared_ports(c: &Container) {
    let ports: BTreeSet<String> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    let probes = [&c.startup_probe, &c.readiness_probe, &c.liveness_probe];
    let mut seen = 0;
    for probe in probes.into_iter().flatten() {
        let get = probe.http_get.as_ref().expect("an httpGet probe");
        assert_eq!(get.path.as_deref(), Some("/healthz"), "{}", c.name);
        let k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(port) = &get.port
        else {
            panic!("{}: probe port by name", c.name)
        };
        assert!(
            ports.contains(port),
            "{}: probe on undeclared port {port}",
            c.name
        );
        seen += 1;
    }
    assert!(
        seen >= 2,
        "{}: startup and liveness probes at least",
        c.name
    );
}

#[test]
fn lint_strict_passes_with_default_and_ha_values() {
    let Some(helm) = helm::helm() else { return };
    let chart = helm::chart_dir().display().to_string();
    for extra in [vec![], vec!["-f".to_string(), ha_values()]] {
        let mut cmd = vec!["lint", "--strict", chart.as_str()];
        cmd.extend(extra.iter().map(String::as_str));
        let out = helm::run(&helm, &cmd);
        assert!(
            out.success && out.stdout.contains("0 chart(s) failed"),
            "helm lint --strict {extra:?}:\n{}{}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn default_render_is_the_safe_single_apiserver_cluster() {
    let Some(helm) = helm::helm() else { return };
    let objects = render(&helm, &[]);

    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| match o {
            Object::StatefulSet(_) => "StatefulSet",
            Object::Deployment(_) => "Deployment",
            Object::DaemonSet(_) => "DaemonSet",
            Object::Service(_) => "Service",
            Object::Secret(_) => "Secret",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::NetworkPolicy(_) => "NetworkPolicy",
        })
        .collect();
    for kind in [
        "StatefulSet",
        "Deployment",
        "DaemonSet",
        "Service",
        "Secret",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(kind), "no {kind} rendered: {kinds:?}");
    }

    // apiserver: one replica on a volume, TLS (no --insecure-dev) on the pod IP only.
    let sts = objects
        .iter()
        .find_map(|o| match o {
            Object::StatefulSet(s) => Some(s),
            _ => None,
        })
        .expect("the apiserver StatefulSet");
    let spec = sts.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1));
    let claims = spec
        .volume_claim_templates
        .as_ref()
        .expect("a PVC for redb");
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let api = container(pod(&objects, "-apiserver"), "apiserver");
    let a = args(api);
    assert!(a.contains(&"--listen=$(POD_IP):7443".to_string()), "{a:?}");
    assert!(a.contains(&"--store=redb".to_string()), "{a:?}");
    assert!(
        !a.iter()
            .any(|x| x.contains("insecure") || x.contains("0.0.0.0")),
        "{a:?}"
    );
    let sans = a
        .iter()
        .find(|x| x.starts_with("--tls-san="))
        .expect("--tls-san");
    assert!(
        sans.contains("hm-hypermesh-apiserver.hypermesh.svc"),
        "{sans}"
    );
    assert!(
        a.iter()
            .any(|x| x == "--encryption-key-file=/etc/hypermesh/encryption/encryption.key")
    );
    assert_probes_on_declared_ports(api);
    assert!(added_caps(api).is_empty());
    let sc = api.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));

    // the encryption key Secret holds 32 bytes.
    let key = objects
        .iter()
        .find_map(|o| match o {
            Object::Secret(s) => s.data.as_ref()?.get("encryption.key").cloned(),
            _ => None,
        })
        .expect("the encryption key Secret");
    assert_eq!(key.0.len(), 32);

    // scheduler: 2 replicas, leader election on, identity from a Secret.
    let sched = objects
        .iter()
        .find_map(|o| match o {
            Object::Deployment(d) => Some(d),
            _ => None,
        })
        .expect("the scheduler Deployment");
    assert_eq!(sched.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let s = args(container(pod(&objects, "-scheduler"), "scheduler"));
    assert!(!s.iter().any(|x| x.contains("no-leader-elect")), "{s:?}");
    assert!(s.contains(&"--server=https://hm-hypermesh-apiserver.hypermesh.svc:7443".to_string()));
    let sched_pod = pod(&objects, "-scheduler");
    let secret = sched_pod.volumes.as_ref().expect("volumes")[0]
        .secret
        .as_ref()
        .expect("a secret volume");
    assert_eq!(
        secret.secret_name.as_deref(),
        Some("hm-hypermesh-scheduler-config")
    );

    // node DaemonSet: one node at a time; join token from a Secret; the documented
    // capabilities and no more.
    let ds = objects
        .iter()
        .find_map(|o| match o {
            Object::DaemonSet(d) => Some(d),
            _ => None,
        })
        .expect("the node DaemonSet");
    let update = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .expect("strategy");
    assert_eq!(update.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        update
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let node = pod(&objects, "-node");
    assert_eq!(node.host_network, Some(true));
    assert_eq!(node.host_pid, Some(true));
    let agent = container(node, "agent");
    let env = agent.env.as_ref().expect("env");
    for (var, key) in [
        ("HM_JOIN_TOKEN", "token"),
        ("HM_CA_CERT_HASH", "ca-cert-hash"),
    ] {
        let from = env
            .iter()
            .find(|e| e.name == var)
            .and_then(|e| e.value_from.as_ref()?.secret_key_ref.clone())
            .unwrap_or_else(|| panic!("{var} from a Secret"));
        assert_eq!(
            (from.name.as_str(), from.key.as_str()),
            ("hm-hypermesh-join", key)
        );
    }
    assert_eq!(
        added_caps(agent),
        ["CHOWN", "FOWNER"].map(String::from).into()
    );
    assert_probes_on_declared_ports(agent);
    let proxy = container(node, "proxy");
    assert_eq!(
        added_caps(proxy),
        ["SYS_ADMIN", "SYS_PTRACE"].map(String::from).into()
    );
    assert_probes_on_declared_ports(proxy);
    for c in [agent, proxy] {
        let sc = c.security_context.as_ref().expect("securityContext");
        assert_eq!(sc.privileged, None, "{} is not privileged", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }
    // Every host path the agent hands containerd is mounted at the same path.
    let mounts: BTreeSet<&str> = agent
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for volume in node.volumes.iter().flatten() {
        if let Some(host) = &volume.host_path {
            assert!(
                mounts.contains(host.path.as_str()) || host.path == "/dev/net/tun",
                "host path {} mounted elsewhere",
                host.path
            );
        }
    }
}

#[test]
fn ha_render_runs_several_apiservers_on_etcd() {
    let Some(helm) = helm::helm() else { return };
    let values = ha_values();
    let objects = render(&helm, &["-f", &values]);
    let sts = objects
        .iter()
        .find_map(|o| match o {
            Object::StatefulSet(s) => Some(s),
            _ => None,
        })
        .expect("the apiserver StatefulSet");
    let spec = sts.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert!(
        spec.volume_claim_templates.is_none(),
        "etcd holds the data: no PVC"
    );
    let a = args(container(pod(&objects, "-apiserver"), "apiserver"));
    assert!(a.contains(
        &"--store=etcd://etcd-0.etcd:2379,etcd-1.etcd:2379,etcd-2.etcd:2379".to_string()
    ));
    assert!(a.contains(&"--etcd-cafile=/etc/hypermesh/etcd/ca.crt".to_string()));
    assert!(
        a.iter()
            .any(|x| x.starts_with("--tls-san=") && x.ends_with(",hypermesh.example.org"))
    );
    // A given key Secret: the chart makes none.
    assert!(!objects.iter().any(|o| matches!(o, Object::Secret(_))));
    let api_pod = pod(&objects, "-apiserver");
    let key = api_pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "encryption-key")
        .and_then(|v| v.secret.as_ref()?.secret_name.clone());
    assert_eq!(key.as_deref(), Some("hypermesh-encryption-key"));

    let node = pod(&objects, "-node");
    let proxy = container(node, "proxy");
    assert!(
        added_caps(proxy).contains("NET_ADMIN"),
        "the transparent path"
    );
    assert!(args(proxy).contains(&"--socks=127.0.0.1:1080".to_string()));
    let agent = args(container(node, "agent"));
    assert!(
        agent.contains(&"--label=hypermesh.io/pool=gpu".to_string()),
        "{agent:?}"
    );
    assert!(agent.contains(&"--reserve=cpu=500m,memory=512Mi".to_string()));
    let tolerations = node.tolerations.as_ref().expect("tolerations");
    assert_eq!(tolerations[0].key.as_deref(), Some("nvidia.com/gpu"));
    assert_eq!(
        node.node_selector
            .as_ref()
            .and_then(|s| s.get("hypermesh.io/enabled"))
            .map(String::as_str),
        Some("true")
    );
}

#[test]
fn schema_rejects_bad_values_naming_the_field() {
    let Some(helm) = helm::helm() else { return };
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "apiserver.replicas=3"],
            "apiserver.replicas: Must be less than or equal to 1",
        ),
        (
            &["--set", "store.type=etcd"],
            "store.etcd.endpoints: Array must have at least 1 items",
        ),
        (
            &["--set", "store.type=sqlite"],
            "store.type: store.type must be one of the following",
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "image.pullPolicy: image.pullPolicy must be one of",
        ),
        (
            &["--set", "agent.stateDir=relative/dir"],
            "agent.stateDir: Does not match pattern",
        ),
        (
            &["--set", "scheduler.replicas=two"],
            "scheduler.replicas: Invalid type. Expected: integer",
        ),
        (
            &["--set", "apiserver.port=70000"],
            "apiserver.port: Must be less than or equal to 65535",
        ),
        (
            &["--set", "apiserver.colour=blue"],
            "apiserver: Additional property colour is not allowed",
        ),
        (
            &["--set", "store.etcd.endpoints={http://etcd:2379}"],
            "store.etcd.endpoints.0: Does not match pattern",
        ),
        (
            &["--set", "apiserver.resources.requests.memory=lots"],
            "apiserver.resources.requests.memory: Does not match pattern",
        ),
    ];
    for (set, expected) in cases {
        let out = helm::template(&helm, set);
        assert!(!out.success, "{set:?} was accepted");
        assert!(
            out.stderr.contains(expected),
            "{set:?}: expected {expected:?} in:\n{}",
            out.stderr
        );
    }
    // Sane edits still render: etcd with endpoints and 3 apiservers.
    let objects = render(
        &helm,
        &[
            "--set",
            "store.type=etcd",
            "--set",
            "store.etcd.endpoints={etcd:2379}",
            "--set",
            "apiserver.replicas=3",
        ],
    );
    assert!(objects.iter().any(|o| matches!(o, Object::StatefulSet(_))));
}
