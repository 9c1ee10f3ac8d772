//! Story: `hmctl dashboard` in a real headless Chromium, against a real cluster (an
//! `hm-apiserver` over mTLS, the scheduler, an agent joined with a token running the
//! Instances on a private containerd). The admin's page lists exactly the nodes and
//! Instances the API lists, draws the usage chart, and follows an Instance's log live:
//! a line the container writes after the page opened appears in it, and once the page
//! leaves, the agent's log session ends. A scale done by typing in the page and
//! clicking reaches the API (and the new Instances appear live); picking "all
//! namespaces" lists the Instances of every namespace, with a NAMESPACE column. A
//! viewer's page shows the same cluster but offers no write action, and the server
//! refuses the viewer's write anyway. Requests without the launch token, or naming
//! another host, are refused. Screenshots land in `target/test-artifacts/`.

use std::collections::BTreeSet;
use std::time::Duration;

use hypermesh_api::v1::{Instance, InstancePhase, ListRequest, Node, Workload};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::agent::{self, Agent};
use hypermesh_tests::containerd::PrivateContainerd;
use hypermesh_tests::hmctl::{self, Hmctl};
use hypermesh_tests::webdriver::{Browser, http};
use hypermesh_tests::{ApiServerProcess, wait_for};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Two Instances that say hello on their log, say more once `/tmp/go` exists (the test
/// creates it with `hmctl exec` while the page follows the log), and keep running.
const WEB: &str = "apiVersion: hypermesh.io/v1
kind: Workload
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {app: web}
  template:
    labels: {app: web}
    containers:
      - name: main
        image: hypermesh.local/busybox:latest
        command: [sh, -c, 'echo hello from the dashboard test; while [ ! -f /tmp/go ]; do sleep 0.2; done; echo written after the page opened; exec sleep 3600']
        resources: {cpu: 50m, memory: 16Mi}
";

/// The second namespace, and one Instance in it.
const TEAM_B: &str = "team-b";
const API_IN_TEAM_B: &str = "apiVersion: hypermesh.io/v1
kind: Workload
metadata: {name: api, namespace: team-b, labels: {app: api}}
spec:
  replicas: 1
  selector: {app: api}
  template:
    labels: {app: api}
    containers:
      - name: main
        image: hypermesh.local/busybox:latest
        command: [sh, -c, 'exec sleep 3600']
        resources: {cpu: 50m, memory: 16Mi}
";

/// The line the container writes only after the page is following its log.
const LATER_LINE: &str = "written after the page opened";

/// The page's node and Instance names (and each Instance's node), read from its DOM.
const PAGE_ROWS: &str = r##"
const names = (id) => [...document.querySelectorAll(`#${id} tbody tr`)].map((r) => r.dataset.name);
return {
  ready: document.body.dataset.ready === "true",
  live: document.getElementById("live").textContent,
  nodes: names("nodes"),
  instances: [...document.querySelectorAll("#instances tbody tr")]
    .map((r) => [r.dataset.namespace, r.dataset.name, r.querySelector("td.node").textContent]),
  namespaceColumn: getComputedStyle(document.querySelector("#instances th.ns-col")).display !== "none",
  logState: document.getElementById("logs-state").textContent,
  actions: document.querySelectorAll("button.action, input.replicas").length,
  who: document.getElementById("who").textContent,
  chart: Math.max(0, ...[...document.querySelectorAll('#memory-chart path[data-series^="node/"]')]
    .map((p) => Number(p.dataset.points))),
  logs: document.getElementById("logs").textContent,
};"##;

/// Starts `hmctl dashboard` and returns it with its URL and port.
async fn dashboard(hmctl: &Hmctl) -> (tokio::process::Child, String, u16) {
    let (child, mut lines) = hmctl.spawn(&["dashboard", "--no-open", "--sample-every", "300ms"]);
    let read = hmctl::read_until(&mut lines, TIMEOUT, |l| l.contains("?token="))
        .await
        .expect("the dashboard prints its URL");
    let line = read.last().expect("a line").clone();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .expect("URL in the line")
        .to_string();
    let port: u16 = url["http://127.0.0.1:".len()..]
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in the URL");
    (child, url, port)
}

/// Waits until the page at its current state satisfies `want`; returns what it read.
async fn page_until(browser: &Browser, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    let seen = wait_for(TIMEOUT, || {
        let (last, want) = (&last, &want);
        async move {
            let rows = browser.eval(PAGE_ROWS, json!([])).await.ok()?;
            *last.borrow_mut() = rows.clone();
            want(&rows).then_some(rows)
        }
    })
    .await;
    seen.unwrap_or_else(|e| panic!("{what}: {e}; the page showed {:#}", last.borrow()))
}

fn sorted(values: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    values.into_iter().collect()
}

/// The agent's open log sessions, from its `/metrics` (0 when none was ever opened).
async fn agent_log_sessions(metrics: std::net::SocketAddr) -> Option<f64> {
    let (status, body) = http(metrics.port(), "GET", "/metrics", &[], None)
        .await
        .ok()?;
    (status == 200).then_some(())?;
    Some(
        body.lines()
            .find_map(|l| l.strip_prefix("hypermesh_agent_sessions{kind=\"logs\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0),
    )
}

/// Waits until the agent has `want` log sessions open.
async fn wait_log_sessions(metrics: std::net::SocketAddr, want: f64, what: &str) {
    let waited = wait_for(TIMEOUT, || async {
        (agent_log_sessions(metrics).await? == want).then_some(())
    })
    .await;
    if let Err(e) = waited {
        let now = agent_log_sessions(metrics).await;
        panic!("{what}: {e}; the agent has {now:?} log sessions open, not {want}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_cluster_and_acts_as_the_user() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let server = ApiServerProcess::start_tls_with_args(&["--controllers", "all"])
        .await
        .expect("hm-apiserver");
    let admin = server.channel().await.expect("admin channel");
    let scheduler_channel = server.scheduler_channel().await.expect("scheduler channel");
    let _stop_scheduler = hypermesh_tests::scheduler::spawn_default(scheduler_channel);
    let token = hypermesh_tests::identities::make_join_token(
        &Api::new(admin.clone()),
        1,
        Duration::from_secs(600),
    )
    .await
    .expect("join token");
    let containerd = PrivateContainerd::start();
    let images = containerd.image_dir();
    let state = tempfile::tempdir().expect("state dir");
    let mut config = agent::config(
        server.url(),
        "host-1",
        state.path(),
        containerd.socket().to_path_buf(),
    );
    config.image_dir = Some(images.path().to_path_buf());
    config.join_token = Some(token);
    config.ca_cert_hash = Some(server.ca_pin().expect("CA pin"));
    config.usage_interval = Duration::from_millis(300);
    let agent_metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    config.metrics_addr = Some(agent_metrics);
    let _agent = Agent::start(config);

    let admin_config = server
        .data_dir()
        .join(hypermesh_apiserver::server::ADMIN_CONFIG);
    let hmctl = Hmctl::with_config(server.url(), &admin_config);
    let manifest = hmctl.write("web.yaml", WEB);
    hmctl
        .run(&["apply", "-f", &manifest.to_string_lossy()])
        .await
        .ok();
    // A second namespace with an Instance of its own.
    let namespace = hmctl.write("team-b.yaml", &hmctl::namespace(TEAM_B));
    hmctl
        .run(&["apply", "-f", &namespace.to_string_lossy()])
        .await
        .ok();
    let api = hmctl.write("api.yaml", API_IN_TEAM_B);
    hmctl
        .run(&["apply", "-f", &api.to_string_lossy()])
        .await
        .ok();
    let instances: Api<Instance> = Api::new(admin.clone());
    // The Instances of `namespace` (all when empty), once `want` of them run.
    let running_in = |namespace: &'static str, want: usize| {
        let instances = instances.clone();
        async move {
            let (items, _) = instances
                .list_all(ListRequest {
                    namespace: namespace.into(),
                    ..Default::default()
                })
                .await
                .ok()?;
            let ok = items.len() == want
                && items.iter().all(|i| {
                    i.status
                        .as_ref()
                        .is_some_and(|s| s.phase == InstancePhase::Running as i32)
                });
            ok.then_some(items)
        }
    };
    let running = |want: usize| running_in("default", want);
    wait_for(TIMEOUT, || running(2))
        .await
        .unwrap_or_else(|e| panic!("2 web Instances running: {e}\n{}", containerd.log()));

    // The guard: no token, a wrong token, or another Host name get nothing.
    let (mut admin_dash, url, port) = dashboard(&hmctl).await;
    let token = url.split("token=").nth(1).expect("token").to_string();
    let (status, _) = http(port, "GET", "/", &[], None).await.expect("GET /");
    assert_eq!(status, 403, "the page without the token");
    let (status, _) = http(port, "GET", "/api/access", &[], None)
        .await
        .expect("GET");
    assert_eq!(status, 403, "the API without the token");
    // The live streams too: the watch events and an Instance's followed log.
    for path in [
        "/api/events?namespace=",
        "/api/logs?namespace=default&name=web&follow=true",
    ] {
        let (status, _) = http(port, "GET", path, &[], None).await.expect("GET");
        assert_eq!(status, 403, "{path} without the token");
    }
    let (status, _) = http(port, "GET", "/?token=0123", &[], None)
        .await
        .expect("GET");
    assert_eq!(status, 403, "a wrong token");
    let rebound = format!("evil.example:{port}");
    let path = format!("/?token={token}");
    let (status, _) = http(port, "GET", &path, &[("Host", &rebound)], None)
        .await
        .expect("GET");
    assert_eq!(status, 421, "a DNS-rebound Host");

    // The admin's page: the nodes and Instances the API lists, with their nodes.
    browser.open(&url).await.expect("open the dashboard");
    assert!(
        !browser.url().await.expect("url").contains("token="),
        "the token is dropped from the address bar"
    );
    let listed = |items: Vec<Instance>| {
        sorted(items.iter().map(|i| {
            let node = i
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default();
            format!("{}/{} on {node}", i.meta().namespace, i.meta().name)
        }))
    };
    let (nodes, _) = Api::<Node>::new(admin.clone())
        .list_all(ListRequest::default())
        .await
        .expect("nodes");
    let api_nodes = sorted(nodes.iter().map(|n| n.meta().name.clone()));
    let api_instances = listed(wait_for(TIMEOUT, || running(2)).await.expect("running"));
    let shown_instances = |rows: &Value| {
        sorted(rows["instances"].as_array().into_iter().flatten().map(|r| {
            format!(
                "{}/{} on {}",
                r[0].as_str().unwrap_or(""),
                r[1].as_str().unwrap_or(""),
                r[2].as_str().unwrap_or("")
            )
        }))
    };
    let shown_nodes = |rows: &Value| {
        sorted(
            rows["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| n.as_str().unwrap_or("").to_string()),
        )
    };
    let rows = page_until(&browser, "the admin's page shows the cluster", |rows| {
        rows["ready"] == true
            && rows["live"] == "live"
            && shown_nodes(rows) == api_nodes
            && shown_instances(rows) == api_instances
            && rows["chart"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    assert!(
        rows["actions"].as_u64().unwrap_or(0) > 0,
        "an admin is offered actions: {rows:#}"
    );
    assert!(
        !rows["namespaceColumn"].as_bool().unwrap_or(true),
        "one namespace: no NAMESPACE column"
    );
    // An Instance's log, followed in the page: what it wrote so far, then a line it
    // writes only now, while the page is open.
    let first = api_instances.iter().next().expect("an instance");
    let first = first
        .split(' ')
        .next()
        .and_then(|k| k.split('/').nth(1))
        .expect("name");
    let logs = browser
        .find(&format!(
            r#"button[data-action="logs"][data-name="{first}"]"#
        ))
        .await
        .expect("logs button");
    browser.click(&logs).await.expect("click logs");
    let rows = page_until(&browser, "the page follows the log", |rows| {
        rows["logState"] == "following"
            && rows["logs"]
                .as_str()
                .is_some_and(|l| l.contains("hello from the dashboard test"))
    })
    .await;
    assert!(
        !rows["logs"].as_str().unwrap_or("").contains(LATER_LINE),
        "not written yet: {rows:#}"
    );
    wait_log_sessions(agent_metrics, 1.0, "the agent follows the log for the page").await;
    hmctl
        .run(&["exec", first, "--", "touch", "/tmp/go"])
        .await
        .ok();
    page_until(
        &browser,
        "the line written after the page opened appears",
        |rows| {
            rows["logs"]
                .as_str()
                .is_some_and(|l| l.contains(LATER_LINE))
        },
    )
    .await;
    let shot = browser
        .screenshot("dashboard-admin.png")
        .await
        .expect("screenshot");
    eprintln!("screenshot: {}", shot.display());
    // The page leaves (here: it is loaded again): the agent stops following.
    browser.open(&url).await.expect("reload the dashboard");
    wait_log_sessions(agent_metrics, 0.0, "the follow ends when the page leaves").await;
    page_until(&browser, "the reloaded page shows the cluster", |rows| {
        rows["ready"] == true && rows["live"] == "live" && shown_instances(rows) == api_instances
    })
    .await;

    // Scale in the page: type 3, click Scale; the API has 3 replicas, the page 3 rows.
    let input = browser
        .find(r#"input.replicas[data-name="web"]"#)
        .await
        .expect("replicas input");
    browser.type_into(&input, "3").await.expect("type 3");
    let button = browser
        .find(r#"button[data-action="scale"][data-name="web"]"#)
        .await
        .expect("scale button");
    browser.click(&button).await.expect("click scale");
    let workloads: Api<Workload> = Api::new(admin.clone());
    wait_for(TIMEOUT, || async {
        let w = workloads.get("default", "web").await.ok()?;
        (w.spec?.replicas == 3).then_some(())
    })
    .await
    .expect("the scale reached the API");
    let api_instances = listed(wait_for(TIMEOUT, || running(3)).await.expect("3 running"));
    page_until(&browser, "the page shows the third Instance live", |rows| {
        shown_instances(rows) == api_instances
    })
    .await;
    browser
        .screenshot("dashboard-admin-scaled.png")
        .await
        .expect("screenshot");

    // All namespaces: team-b's Instance shows too, with a NAMESPACE column.
    let everywhere = listed(
        wait_for(TIMEOUT, || running_in("", 4))
            .await
            .expect("3 web and 1 api Instances running"),
    );
    assert!(
        everywhere.iter().any(|i| i.starts_with("team-b/api-")),
        "{everywhere:?}"
    );
    let all = browser
        .find(r#"#namespace option[value=""]"#)
        .await
        .expect("the all-namespaces choice");
    browser.click(&all).await.expect("pick all namespaces");
    page_until(
        &browser,
        "the page lists every namespace's Instances",
        |rows| {
            rows["live"] == "live"
                && rows["namespaceColumn"] == true
                && shown_instances(rows) == everywhere
        },
    )
    .await;
    browser
        .screenshot("dashboard-all-namespaces.png")
        .await
        .expect("screenshot");
    admin_dash.kill().await.expect("stop the admin's dashboard");

    // A viewer: same cluster on the page, no write action offered, and refused anyway.
    let created = hmctl
        .run(&["user", "create", "vera", "--role", "viewer"])
        .await
        .ok();
    let vera_config = hmctl.write("vera.config", &created.stdout);
    let vera = Hmctl::with_config(server.url(), &vera_config);
    let (mut vera_dash, url, port) = dashboard(&vera).await;
    browser
        .open(&url)
        .await
        .expect("open the viewer's dashboard");
    let rows = page_until(&browser, "the viewer's page shows the cluster", |rows| {
        rows["ready"] == true
            && rows["live"] == "live"
            && shown_nodes(rows) == api_nodes
            && shown_instances(rows) == api_instances
    })
    .await;
    assert_eq!(
        rows["actions"], 0,
        "a viewer is offered no write action: {rows:#}"
    );
    assert!(
        rows["who"].as_str().unwrap_or("").contains("vera"),
        "{rows:#}"
    );
    browser
        .screenshot("dashboard-viewer.png")
        .await
        .expect("screenshot");
    let token = url.split("token=").nth(1).expect("token").to_string();
    let cookie = format!("hm_dashboard_{port}={token}");
    let origin = format!("http://127.0.0.1:{port}");
    let (status, body) = http(
        port,
        "POST",
        "/api/scale",
        &[
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("Content-Type", "application/json"),
        ],
        Some(r#"{"name":"web","replicas":1}"#),
    )
    .await
    .expect("POST as the viewer");
    assert_eq!(
        status, 403,
        "the apiserver refuses the viewer's scale: {body}"
    );
    let w = workloads.get("default", "web").await.expect("web");
    assert_eq!(w.spec.expect("spec").replicas, 3, "still 3 replicas");
    vera_dash.kill().await.expect("stop the viewer's dashboard");
    browser.quit().await;
}
