//! The manifests in `examples/` apply cleanly with `hmctl apply -f examples/` against a
//! real `hm-apiserver`, and applying them again changes nothing.

use hypermesh_tests::hmctl;

use std::path::PathBuf;

use hmctl::Hmctl;
use hypermesh_api::manifest::parse_yaml;
use hypermesh_tests::ApiServerProcess;

/// `examples/` at the workspace root.
fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
}

#[tokio::test]
async fn hmctl_examples_apply_and_reapply_unchanged() {
    let dir = examples_dir();
    let dir_arg = dir.to_str().expect("utf-8 path");
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());

    let mut expected = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.expect("entry").path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            let text = std::fs::read_to_string(&path).expect("read example");
            expected += parse_yaml(&text).expect("example parses").len();
        }
    }
    assert!(expected > 0, "examples/ holds manifests");

    let out = hmctl.run(&["apply", "-f", dir_arg]).await.ok();
    let lines = out.lines();
    assert_eq!(lines.len(), expected, "{out:#?}");
    assert!(lines.iter().all(|l| l.ends_with(" created")), "{out:#?}");
    // Namespaces are applied before what may live in them.
    let first_other = lines
        .iter()
        .position(|l| !l.starts_with("namespace."))
        .unwrap_or(lines.len());
    assert!(
        lines[first_other..]
            .iter()
            .all(|l| !l.starts_with("namespace.")),
        "{out:#?}"
    );

    let out = hmctl.run(&["apply", "-f", dir_arg]).await.ok();
    assert!(
        out.lines().iter().all(|l| l.ends_with(" unchanged")),
        "{out:#?}"
    );
    assert_eq!(out.lines().len(), expected);

    // Everything applied is listed back.
    for line in lines {
        let name = line.trim_end_matches(" created");
        let (kind, _) = name
            .split_once(".hypermesh.io/")
            .expect("kind.hypermesh.io/name");
        let listed = hmctl
            .run(&["get", kind, "-A", "-o", "name"])
            .await
            .ok()
            .stdout;
        assert!(
            listed.lines().any(|l| l == name),
            "{name} not listed: {listed}"
        );
    }
}
