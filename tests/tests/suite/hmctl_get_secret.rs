//! `hmctl get secret` through the real binary: `-o yaml` shows a Secret's keys and
//! their sizes, never the values; the table counts the keys; `--reveal` shows the
//! values to an admin and is refused to an editor with the permission it lacks
//! (`get secrets/data`); `--reveal` on another kind is a clear usage error.

use base64::Engine;
use hypermesh_api::v1::Secret;
use hypermesh_tests::InProcessApiServer;
use hypermesh_tests::hmctl::Hmctl;
use hypermesh_tests::secrets::{canary, secret};

#[tokio::test]
async fn get_secret_shows_sizes_and_reveals_only_to_the_permitted() {
    let server = InProcessApiServer::start_tls().await.expect("server");
    let password = canary("hmctl-password");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&password);
    let plain = String::from_utf8(password.clone()).expect("ascii");
    server
        .api::<Secret>()
        .create(&secret(
            "default",
            "db",
            &[("password", &password), ("user", b"admin")],
        ))
        .await
        .expect("create");
    let admin = Hmctl::with_config(server.url(), &server.admin_config());

    let yaml = admin
        .run(&["get", "secret", "db", "-o", "yaml"])
        .await
        .ok()
        .stdout;
    assert!(yaml.contains("dataSizes:"), "{yaml}");
    // Sizes are uint64, which the canonical JSON mapping (and so the YAML) quotes.
    assert!(
        yaml.contains(&format!("password: \"{}\"", password.len())),
        "{yaml}"
    );
    assert!(yaml.contains("user: \"5\""), "{yaml}");
    assert!(
        !yaml.contains(&plain) && !yaml.contains(&encoded),
        "a value leaked: {yaml}"
    );
    let json = admin
        .run(&["get", "secret", "db", "-o", "json"])
        .await
        .ok()
        .stdout;
    assert!(
        !json.contains(&plain) && !json.contains(&encoded),
        "a value leaked: {json}"
    );

    let table = admin.run(&["get", "secrets"]).await.ok();
    let row = table
        .lines()
        .into_iter()
        .find(|l| l.starts_with("db "))
        .map(str::to_string);
    let row = row.unwrap_or_else(|| panic!("no row for db: {table:#?}"));
    assert_eq!(
        row.split_whitespace().nth(2),
        Some("2"),
        "DATA counts both keys: {row}"
    );

    let revealed = admin
        .run(&["get", "secret", "db", "-o", "yaml", "--reveal"])
        .await
        .ok()
        .stdout;
    assert!(
        revealed.contains(&encoded) || revealed.contains(&plain),
        "{revealed}"
    );
    let listed = admin
        .run(&["get", "secrets", "-o", "yaml", "--reveal"])
        .await
        .ok()
        .stdout;
    assert!(
        listed.contains(&encoded) || listed.contains(&plain),
        "{listed}"
    );

    // An editor of default reads Secrets, withheld, but may not reveal them.
    let config = admin
        .run(&[
            "user", "create", "eddie", "--role", "editor", "-n", "default",
        ])
        .await
        .ok()
        .stdout;
    let eddie = Hmctl::with_config(server.url(), &admin.write("eddie.config", &config));
    let withheld = eddie
        .run(&["get", "secret", "db", "-o", "yaml"])
        .await
        .ok()
        .stdout;
    assert!(
        withheld.contains("dataSizes:") && !withheld.contains(&encoded),
        "{withheld}"
    );
    let refused = eddie
        .run(&["get", "secret", "db", "-o", "yaml", "--reveal"])
        .await
        .failed();
    assert!(refused.stdout.is_empty(), "{refused:#?}");
    assert!(
        refused.stderr.contains("cannot get secrets/data"),
        "names the permission: {refused:#?}"
    );

    let misuse = admin.run(&["get", "workloads", "--reveal"]).await.failed();
    assert!(
        misuse.stderr.contains("--reveal: only applies to secrets"),
        "{misuse:#?}"
    );
}
