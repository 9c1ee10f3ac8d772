//! How `hmctl` finds the apiserver — `--server`, then `HYPERMESH_SERVER`, then
//! `$HOME/.hypermesh/config.yaml` — plus `config set-server`, `version` and
//! `api-resources`, against a real `hm-apiserver` process.

use hypermesh_tests::hmctl;

use hmctl::Hmctl;
use hypermesh_tests::ApiServerProcess;

/// An address where nothing listens (port 9 on loopback is closed here).
const NOWHERE: &str = "http://127.0.0.1:9";

#[tokio::test]
async fn hmctl_server_comes_from_flag_env_or_config_file() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());

    // Nothing configured: the default address, where nothing listens in tests.
    let mut cmd = hmctl.bare_command();
    cmd.args(["config", "view"]);
    let out = hmctl.run_command(cmd).await.ok();
    assert!(
        out.stdout
            .contains("effective server: https://127.0.0.1:7443 (from built-in default)"),
        "{out:#?}"
    );

    // The config file.
    let mut cmd = hmctl.bare_command();
    cmd.args(["config", "set-server", server.url()]);
    hmctl.run_command(cmd).await.ok();
    let written = std::fs::read_to_string(hmctl.home().join(".hypermesh/config.yaml"))
        .expect("config written");
    assert_eq!(written.trim(), format!("server: {}", server.url()));
    let mut cmd = hmctl.bare_command();
    cmd.args(["get", "ns", "-o", "name"]);
    let out = hmctl.run_command(cmd).await.ok();
    assert!(
        out.stdout.contains("namespace.hypermesh.io/default"),
        "{out:#?}"
    );

    // The environment beats the file.
    let mut cmd = hmctl.bare_command();
    cmd.env("HYPERMESH_SERVER", NOWHERE).args(["get", "ns"]);
    let out = hmctl.run_command(cmd).await.failed();
    assert!(
        out.stderr
            .starts_with("error: cannot reach the apiserver at http://127.0.0.1:9"),
        "{out:#?}"
    );

    // The flag beats the environment.
    let mut cmd = hmctl.bare_command();
    cmd.env("HYPERMESH_SERVER", NOWHERE).args([
        "--server",
        server.url(),
        "get",
        "ns",
        "-o",
        "name",
    ]);
    hmctl.run_command(cmd).await.ok();

    let mut cmd = hmctl.bare_command();
    cmd.args(["config", "set-server", "not-a-url"]);
    let out = hmctl.run_command(cmd).await.failed();
    assert!(
        out.stderr.contains("invalid server URL \"not-a-url\""),
        "{out:#?}"
    );
}

#[tokio::test]
async fn hmctl_version_reports_server_health_and_api_resources_lists_kinds() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());

    let out = hmctl.run(&["version"]).await.ok();
    assert_eq!(
        out.lines(),
        [
            &format!("Client Version: {}", env!("CARGO_PKG_VERSION")),
            &format!("Server: {}", server.url()),
            "Server Health: SERVING",
        ]
    );
    let out = Hmctl::new(NOWHERE).run(&["version"]).await.failed();
    assert!(
        out.stderr.contains("cannot reach the apiserver"),
        "{out:#?}"
    );
    Hmctl::new(NOWHERE).run(&["version", "--client"]).await.ok();

    let out = hmctl.run(&["api-resources"]).await.ok();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "SHORTNAMES", "NAMESPACED", "KIND"]);
    assert!(
        rows.contains(&vec!["workloads", "wl", "true", "Workload"]),
        "{out:#?}"
    );
    assert!(
        rows.contains(&vec!["nodes", "no", "false", "Node"]),
        "{out:#?}"
    );

    let out = hmctl.run(&["--help"]).await.ok();
    assert!(out.stdout.contains("HYPERMESH_SERVER"), "{out:#?}");
    let out = hmctl.run(&["frobnicate"]).await.failed();
    assert!(out.stderr.contains("unrecognized subcommand"), "{out:#?}");
}
