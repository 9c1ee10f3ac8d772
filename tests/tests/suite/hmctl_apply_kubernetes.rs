//! `hmctl apply -f` of a plain Kubernetes Deployment + Service runs real containers:
//! the manifest (apps/v1, v1) is converted to a Workload and a Route, the warning for
//! what HyperMesh does differently (an HTTP readiness probe checked as a TCP connect)
//! is printed, the Workload controller, a real scheduler and an agent on a private
//! containerd run the replicas, the server answers inside them, and `hmctl delete -f`
//! of the same Kubernetes file removes everything.

use hypermesh_tests::agent;
use hypermesh_tests::containerd;
use hypermesh_tests::hmctl;

use std::time::Duration;

use agent::Agent;
use containerd::{PrivateContainerd, TEST_IMAGE};
use hmctl::Hmctl;
use hypermesh_api::v1::{Protocol, Route, Workload};
use hypermesh_tests::{ApiServerProcess, wait_for};

const TIMEOUT: Duration = Duration::from_secs(90);

/// A Deployment and a Service as `kubectl apply -f` would take them.
fn kubernetes_manifest() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  labels: {{app: shop}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: shop}}
  template:
    metadata:
      labels: {{app: shop}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: web
          image: {TEST_IMAGE}
          imagePullPolicy: IfNotPresent
          command: [/bin/sh, -c]
          args:
            - mkdir -p /www && echo "shop $FLAVOUR" > /www/index.html && exec httpd -f -p 8080 -h /www
          env:
            - {{name: FLAVOUR, value: k8s}}
          ports:
            - {{name: http, containerPort: 8080}}
          resources:
            requests: {{cpu: 50m, memory: 16Mi}}
            limits: {{cpu: 50m, memory: 32Mi}}
          readinessProbe:
            httpGet: {{path: /, port: http}}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: shop
spec:
  selector: {{app: shop}}
  ports:
    - {{name: http, port: 80, targetPort: 8080}}
"#
    )
}

#[tokio::test]
async fn kubernetes_deployment_and_service_run_real_containers() {
    let server = ApiServerProcess::start_with_args(&["--controllers", "all"])
        .await
        .expect("hm-apiserver");
    let channel = server.channel().await.expect("channel");
    let _stop_scheduler = hypermesh_tests::scheduler::spawn_default(channel.clone());
    let containerd = PrivateContainerd::start();
    let images = containerd.image_dir();
    let state = tempfile::tempdir().expect("state dir");
    let mut config = agent::config(
        server.url(),
        "k8s-host",
        state.path(),
        containerd.socket().to_path_buf(),
    );
    config.image_dir = Some(images.path().to_path_buf());
    let agent = Agent::start(config);

    let hmctl = Hmctl::new(server.url());
    let file = hmctl.write("shop.yaml", &kubernetes_manifest());
    let file = file.to_str().expect("utf-8 path");
    let out = hmctl.run(&["apply", "-f", file]).await.ok();
    let mut lines = out.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "route.hypermesh.io/shop created",
            "workload.hypermesh.io/shop created"
        ],
        "{out:#?}"
    );
    assert!(
        out.stderr.contains(
            "(workload.hypermesh.io/shop): spec.template.spec.containers[0].readinessProbe.httpGet: \
             HTTP probes are not supported: checked as a TCP connect to port 8080"
        ),
        "{out:#?}"
    );
    assert!(
        out.stderr
            .contains("resources.limits.memory: HyperMesh has one value per resource"),
        "{out:#?}"
    );

    // The Route keeps the Service's selector and ports.
    let route = hypermesh_api::Api::<Route>::new(channel.clone())
        .get("default", "shop")
        .await
        .expect("route");
    let spec = route.spec.expect("route spec");
    assert_eq!(spec.selector.get("app").map(String::as_str), Some("shop"));
    assert_eq!(
        (
            spec.ports[0].port,
            spec.ports[0].target_port,
            spec.ports[0].protocol
        ),
        (80, 8080, Protocol::Tcp as i32)
    );

    // Both replicas run and pass the (TCP) readiness probe.
    let workloads = hypermesh_api::Api::<Workload>::new(channel.clone());
    let available = wait_for(TIMEOUT, || {
        let workloads = workloads.clone();
        async move {
            let w = workloads.get("default", "shop").await.ok()?;
            (w.status.as_ref()?.available_replicas == 2).then_some(w)
        }
    })
    .await;
    assert!(
        available.is_ok(),
        "shop never had 2 available replicas: {:#?}\ncontainerd log:\n{}",
        workloads
            .get("default", "shop")
            .await
            .ok()
            .and_then(|w| w.status),
        containerd.log()
    );
    let page = hmctl
        .run(&[
            "exec",
            "workload/shop",
            "--",
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/",
        ])
        .await
        .ok();
    assert_eq!(
        page.stdout, "shop k8s\n",
        "env from the Deployment reached the container"
    );

    // delete -f takes the Kubernetes file too.
    let out = hmctl.run(&["delete", "-f", file, "--wait"]).await.ok();
    let mut lines = out.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "route.hypermesh.io/shop deleted",
            "workload.hypermesh.io/shop deleted"
        ],
        "{out:#?}"
    );
    let ctr = |args: &[&str]| containerd.ctr(args);
    wait_for(TIMEOUT, || {
        let left = ctr(&["containers", "ls", "-q"]);
        async move { left.trim().is_empty().then_some(()) }
    })
    .await
    .unwrap_or_else(|_| panic!("containers left: {}", ctr(&["containers", "ls"])));
    agent.stop().await;
}
