//! Conversion of Kubernetes manifests: each kind, the pod spec's fields (resources, env,
//! ports, selectors, tolerations, probes, volumes), the warnings and the errors.

use hypermesh_api::DynObject;
use hypermesh_api::v1;
use serde_json::Value;

use super::{convert, is_kubernetes};

fn doc(yaml: &str) -> Value {
    serde_saphyr::from_str(yaml).unwrap()
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: "25%"}
  revisionHistoryLimit: 4
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      nodeSelector: {zone: eu-1}
      tolerations:
        - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}
        - {operator: Exists, effect: NoExecute, tolerationSeconds: 30}
      securityContext: {runAsUser: 1000}
      terminationGracePeriodSeconds: 20
      containers:
        - name: web
          image: registry.local/web:1.2
          command: [/bin/httpd]
          args: [-f, -p, "8080"]
          workingDir: /www
          env:
            - {name: MODE, value: prod}
            - name: TOKEN
              valueFrom: {secretKeyRef: {name: creds, key: token}}
          ports:
            - {name: http, containerPort: 8080}
            - {name: dns, containerPort: 5353, protocol: UDP}
          resources:
            requests: {cpu: 250m, memory: 64Mi, nvidia.com/gpu: "1"}
            limits: {cpu: 500m, memory: 64Mi}
          readinessProbe:
            httpGet: {path: /, port: http}
            periodSeconds: 5
          livenessProbe:
            tcpSocket: {port: 8080}
            initialDelaySeconds: 3
"#;

fn workload(yaml: &str) -> (v1::Workload, Vec<String>) {
    let c = convert(doc(yaml)).unwrap();
    let DynObject::Workload(w) = c.object else {
        panic!("not a Workload: {:?}", c.object)
    };
    (w, c.warnings)
}

#[test]
fn a_deployment_becomes_a_workload() {
    let (w, warnings) = workload(DEPLOYMENT);
    let meta = w.metadata.as_ref().unwrap();
    assert_eq!(
        (meta.name.as_str(), meta.namespace.as_str()),
        ("web", "shop")
    );
    let spec = w.spec.unwrap();
    assert_eq!(spec.replicas, 3);
    assert_eq!(spec.selector.get("app").map(String::as_str), Some("web"));
    assert_eq!(spec.revision_history_limit, 4);
    let strategy = spec.strategy.unwrap();
    assert_eq!(
        strategy.r#type,
        v1::UpdateStrategyType::RollingUpdate as i32
    );
    assert_eq!(
        (
            strategy.max_surge.as_str(),
            strategy.max_unavailable.as_str()
        ),
        ("1", "25%")
    );

    let t = spec.template.unwrap();
    assert_eq!(t.labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(
        t.node_selector.get("zone").map(String::as_str),
        Some("eu-1")
    );
    assert_eq!(t.termination_grace_period_seconds, 20);
    assert_eq!(t.restart_policy, v1::RestartPolicy::Always as i32);
    // tolerations
    assert_eq!(t.tolerations.len(), 2);
    assert_eq!(t.tolerations[0].effect, v1::TaintEffect::NoSchedule as i32);
    assert_eq!(
        (
            t.tolerations[0].key.as_str(),
            t.tolerations[0].value.as_str()
        ),
        ("dedicated", "web")
    );
    assert_eq!(t.tolerations[1].operator, "Exists");
    assert_eq!(t.tolerations[1].effect, v1::TaintEffect::NoExecute as i32);
    assert_eq!(t.tolerations[1].toleration_seconds, 30);

    let c = &t.containers[0];
    assert_eq!(c.image, "registry.local/web:1.2");
    assert_eq!(c.command, ["/bin/httpd"]);
    assert_eq!(c.args, ["-f", "-p", "8080"]);
    assert_eq!(c.working_dir, "/www");
    assert_eq!(c.user, "1000", "the pod's runAsUser");
    // env: a value and a secret reference
    assert_eq!(
        (c.env[0].name.as_str(), c.env[0].value.as_str()),
        ("MODE", "prod")
    );
    let r = c.env[1].secret_key_ref.as_ref().unwrap();
    assert_eq!((r.name.as_str(), r.key.as_str()), ("creds", "token"));
    // ports
    assert_eq!(c.ports[0].container_port, 8080);
    assert_eq!(c.ports[0].protocol, v1::Protocol::Tcp as i32);
    assert_eq!(c.ports[1].protocol, v1::Protocol::Udp as i32);
    // resources: the request, the GPU; the differing cpu limit is warned about
    let res = c.resources.as_ref().unwrap();
    assert_eq!(
        (res.cpu.as_str(), res.memory.as_str(), res.gpu.as_str()),
        ("250m", "64Mi", "1")
    );
    // probes: httpGet by port name becomes a TCP check of that port
    let ready = c.readiness_probe.as_ref().unwrap();
    assert_eq!(ready.tcp_socket.as_ref().unwrap().port, 8080);
    assert_eq!(ready.period_seconds, 5);
    assert_eq!(c.liveness_probe.as_ref().unwrap().initial_delay_seconds, 3);
    assert!(c.security_context.is_none());

    let joined = warnings.join("\n");
    assert!(
        joined.contains("spec.template.spec.containers[0].resources.limits.cpu: HyperMesh has one value per resource: using the request 250m, not the limit 500m"),
        "{joined}"
    );
    assert!(
        joined.contains("spec.template.spec.containers[0].readinessProbe.httpGet: HTTP probes are not supported: checked as a TCP connect to port 8080"),
        "{joined}"
    );
    assert_eq!(warnings.len(), 2, "{joined}");
}

#[test]
fn fields_without_a_counterpart_are_named_in_warnings() {
    let yaml = DEPLOYMENT
        .replace("  revisionHistoryLimit: 4", "  revisionHistoryLimit: 4\n  minReadySeconds: 5\n  paused: true")
        .replace("      nodeSelector:", "      serviceAccountName: web\n      initContainers: [{name: init, image: busybox}]\n      nodeSelector:")
        .replace(
            "    matchLabels: {app: web}",
            "    matchLabels: {app: web}\n    matchExpressions: [{key: tier, operator: In, values: [front]}]",
        )
        .replace("          workingDir: /www", "          workingDir: /www\n          imagePullPolicy: Always\n          envFrom: [{configMapRef: {name: cfg}}]");
    let (w, warnings) = workload(&yaml);
    let joined = warnings.join("\n");
    for expected in [
        "spec.minReadySeconds: not supported by HyperMesh; ignored",
        "spec.paused: not supported by HyperMesh; ignored",
        "spec.template.spec.serviceAccountName: not supported by HyperMesh; ignored",
        "spec.template.spec.initContainers: not supported by HyperMesh; ignored",
        "spec.selector.matchExpressions: not supported (HyperMesh selectors are label equalities); ignored",
        "spec.template.spec.containers[0].envFrom: not supported by HyperMesh; ignored",
        "spec.template.spec.containers[0].imagePullPolicy: Always is not supported",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
    // What can be honoured still is.
    assert_eq!(w.spec.unwrap().replicas, 3);
}

#[test]
fn volumes_and_mounts_map_or_are_left_out_with_a_warning() {
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: one, labels: {app: one}}
spec:
  restartPolicy: OnFailure
  hostNetwork: true
  volumes:
    - {name: scratch, emptyDir: {}}
    - {name: creds, secret: {secretName: creds}}
    - {name: cfg, configMap: {name: cfg}}
  containers:
    - name: main
      image: busybox
      securityContext: {privileged: true, runAsUser: 5, runAsGroup: 6}
      volumeMounts:
        - {name: scratch, mountPath: /tmp/s}
        - {name: creds, mountPath: /etc/creds, readOnly: true}
        - {name: cfg, mountPath: /etc/cfg}
"#;
    let c = convert(doc(pod)).unwrap();
    let DynObject::Instance(i) = c.object else {
        panic!("not an Instance")
    };
    assert_eq!(
        i.metadata
            .as_ref()
            .unwrap()
            .labels
            .get("app")
            .map(String::as_str),
        Some("one")
    );
    let spec = i.spec.unwrap();
    assert_eq!(spec.restart_policy, v1::RestartPolicy::OnFailure as i32);
    assert_eq!(
        spec.volumes
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["scratch", "creds"]
    );
    let main = &spec.containers[0];
    assert_eq!(main.volume_mounts.len(), 2);
    assert!(main.volume_mounts[1].read_only);
    assert_eq!(main.user, "5:6");
    let sc = main.security_context.as_ref().unwrap();
    assert!(sc.privileged && sc.host_network && !sc.host_pid);
    let joined = c.warnings.join("\n");
    assert!(
        joined.contains("spec.volumes[2]: volume \"cfg\": only emptyDir, hostPath and secret volumes are supported; it and its mounts are left out"),
        "{joined}"
    );
}

#[test]
fn affinity_maps_required_terms() {
    let yaml = DEPLOYMENT.replace(
        "      nodeSelector: {zone: eu-1}",
        r#"      nodeSelector: {zone: eu-1}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions: [{key: disk, operator: In, values: [ssd]}]
          preferredDuringSchedulingIgnoredDuringExecution:
            - {weight: 1, preference: {matchExpressions: [{key: a, operator: Exists}]}}
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}"#,
    );
    let (w, warnings) = workload(&yaml);
    let a = w.spec.unwrap().template.unwrap().affinity.unwrap();
    let req = &a.node_affinity.unwrap().required[0];
    assert_eq!(
        (
            req.key.as_str(),
            req.operator.as_str(),
            req.values.as_slice()
        ),
        ("disk", "In", &["ssd".to_string()][..])
    );
    let anti = &a.instance_anti_affinity[0];
    assert_eq!(anti.topology_key, "kubernetes.io/hostname");
    assert_eq!(
        anti.label_selector.get("app").map(String::as_str),
        Some("web")
    );
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "spec.template.spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution:"
        )),
        "{warnings:?}"
    );
}

#[test]
fn a_service_becomes_a_route() {
    let svc = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 8080}
    - {name: dns, port: 53, protocol: UDP}
    - {name: named, port: 81, targetPort: http}
"#;
    let c = convert(doc(svc)).unwrap();
    let DynObject::Route(r) = c.object else {
        panic!("not a Route")
    };
    let spec = r.spec.unwrap();
    assert_eq!(spec.selector.get("app").map(String::as_str), Some("web"));
    assert_eq!((spec.ports[0].port, spec.ports[0].target_port), (80, 8080));
    assert_eq!(spec.ports[1].protocol, v1::Protocol::Udp as i32);
    assert_eq!(spec.ports[2].target_port, 0);
    let joined = c.warnings.join("\n");
    assert!(
        joined.contains("spec.type: LoadBalancer is not supported"),
        "{joined}"
    );
    assert!(
        joined.contains(
            "spec.ports[2].targetPort: named port \"http\" is not supported; using port 81"
        ),
        "{joined}"
    );
}

#[test]
fn a_secret_and_a_namespace_convert() {
    let secret = r#"
apiVersion: v1
kind: Secret
metadata: {name: creds}
type: Opaque
data: {token: aGVsbG8=}
stringData: {user: bob}
"#;
    let c = convert(doc(secret)).unwrap();
    let DynObject::Secret(s) = c.object else {
        panic!("not a Secret")
    };
    let spec = s.spec.unwrap();
    assert_eq!(spec.r#type, "Opaque");
    assert_eq!(
        spec.data.get("token").map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    assert_eq!(spec.data.get("user").map(Vec::as_slice), Some(&b"bob"[..]));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = convert(doc(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n",
    ))
    .unwrap();
    let DynObject::Namespace(n) = c.object else {
        panic!("not a Namespace")
    };
    assert_eq!(
        n.metadata.unwrap().labels.get("team").map(String::as_str),
        Some("a")
    );
}

#[test]
fn unsupported_kinds_and_bad_fields_are_errors() {
    assert!(is_kubernetes(&doc("apiVersion: v1\nkind: ConfigMap\n")));
    assert!(is_kubernetes(&doc(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\n"
    )));
    assert!(!is_kubernetes(&doc(
        "apiVersion: hypermesh.io/v1\nkind: Workload\n"
    )));

    let (path, message) = convert(doc(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    ))
    .unwrap_err();
    assert_eq!(path, "kind");
    assert_eq!(
        message,
        "Kubernetes kind \"ConfigMap\" of apiVersion \"v1\" is not supported: hmctl converts \
         apps/v1 Deployment, v1 Pod, v1 Service, v1 Secret, v1 Namespace"
    );
    let (_, message) = convert(doc(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\n",
    ))
    .unwrap_err();
    assert!(
        message.starts_with("Kubernetes kind \"Job\" of apiVersion \"batch/v1\""),
        "{message}"
    );
    // apps/v1 Pod is not a thing
    assert!(convert(doc("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: p}\n")).is_err());

    let bad = DEPLOYMENT.replace("replicas: 3", "replicas: three");
    let (path, _) = convert(doc(&bad)).unwrap_err();
    assert_eq!(path, "spec.replicas");
    let bad = DEPLOYMENT.replace("effect: NoSchedule", "effect: Sometimes");
    let (path, message) = convert(doc(&bad)).unwrap_err();
    assert_eq!(path, "spec.template.spec.tolerations[0].effect");
    assert!(message.contains("\"Sometimes\""), "{message}");
    let bad = DEPLOYMENT.replace(
        "httpGet: {path: /, port: http}",
        "httpGet: {path: /, port: web}",
    );
    let (path, message) = convert(doc(&bad)).unwrap_err();
    assert_eq!(
        path,
        "spec.template.spec.containers[0].readinessProbe.httpGet.port"
    );
    assert_eq!(message, "no container port is named \"web\"");
    let (path, _) = convert(doc(
        "apiVersion: v1\nkind: Namespace\nmetadata: {generateName: x-}\n",
    ))
    .unwrap_err();
    assert_eq!(path, "metadata.name");
}
