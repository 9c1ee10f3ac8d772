//! How `hmctl` finds the apiserver — `--server`, then `HYPERMESH_SERVER`, then
//! `$HOME/.hypermesh/config.yaml` — plus `config set-server`, `version` (the server's
//! version too, for any authenticated user, never for a client without a certificate)
//! and `api-resources`, against a real `hm-apiserver` process.

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
            &format!(
                "Server Version: {} (API hypermesh.io/v1, store redb)",
                hypermesh_apiserver::version::SERVER_VERSION
            ),
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

#[tokio::test]
async fn hmctl_version_shows_the_server_version_to_any_user_but_not_to_strangers() {
    let server = ApiServerProcess::start_tls_with_args(&[])
        .await
        .expect("apiserver");
    let admin = Hmctl::with_config(
        server.url(),
        &server
            .data_dir()
            .join(hypermesh_apiserver::server::ADMIN_CONFIG),
    );
    // A viewer with no other rights (not even to list namespaces here).
    let out = admin
        .run(&[
            "user", "create", "carol", "--role", "viewer", "-n", "team-z",
        ])
        .await
        .ok();
    let carol_config = admin.write("carol.config", &out.stdout);
    let carol = Hmctl::with_config(server.url(), &carol_config);
    let out = carol.run(&["version"]).await.ok();
    assert!(
        out.lines().contains(
            &format!(
                "Server Version: {} (API hypermesh.io/v1, store redb)",
                hypermesh_apiserver::version::SERVER_VERSION
            )
            .as_str()
        ),
        "{out:#?}"
    );
    let out = carol.run(&["get", "nodes"]).await.failed();
    assert!(out.stderr.contains("Forbidden"), "{out:#?}");

    // TLS without a client certificate: UNAUTHENTICATED, as for every call but Join.
    let ca_pem =
        std::fs::read_to_string(server.data_dir().join("pki").join("ca.crt")).expect("pki/ca.crt");
    let config =
        hypermesh_trust::tls::client_config(&ca_pem, None, hypermesh_trust::tls::provider())
            .expect("client config");
    let anonymous = hypermesh_tests::connect_target(&hypermesh_api::client::Target::tls(
        server.url(),
        std::sync::Arc::new(config),
    ))
    .await
    .expect("anonymous channel");
    let err = hypermesh_api::v1::version_service_client::VersionServiceClient::new(anonymous)
        .get(hypermesh_api::v1::VersionRequest {})
        .await
        .expect_err("anonymous callers get no version");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
}
