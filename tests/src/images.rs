//! The component images `make images` builds (scripts/build-images.sh), built here from
//! the debug binaries next to the test executable (the release ones `make images`
//! uses by default would need a second, slow build), and the image names the Helm
//! chart's values.yaml and Chart.yaml give them, so a test runs exactly what the chart
//! would pull. Plus what running them as the chart does needs: free loopback ports and
//! a container's output so far for failure messages.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::containerd::workspace_root;

/// Builds the images of `components` (`apiserver`, `scheduler`, `agent`, `proxy`,
/// `hmctl`) into `dir` from the workspace's debug binaries; the archive of each, in
/// order (`DIR/hm-COMPONENT.oci.tar`).
pub fn build(dir: &Path, components: &[&str]) -> Vec<PathBuf> {
    let bin = crate::bin_path("hm-apiserver")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/build-images.sh"))
        .arg(dir)
        .args(components)
        .env("BIN", &bin)
        .output()
        .expect("running scripts/build-images.sh");
    assert!(
        output.status.success(),
        "scripts/build-images.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    components
        .iter()
        .map(|c| match *c {
            "hmctl" => dir.join("hmctl.oci.tar"),
            c => dir.join(format!("hm-{c}.oci.tar")),
        })
        .collect()
}

/// The image reference the chart runs for `component` by default: `image.COMPONENT`
/// from values.yaml, tagged with Chart.yaml's appVersion (the chart's default tag).
pub fn chart_image(component: &str) -> String {
    let chart = crate::helm::chart_dir();
    let values = yaml(&chart.join("values.yaml"));
    let repository = values["image"][component]
        .as_str()
        .unwrap_or_else(|| panic!("values.yaml has no image.{component}"));
    let default_tag = values["image"]["tag"].as_str().unwrap_or_default();
    assert!(
        default_tag.is_empty(),
        "values.yaml image.tag is {default_tag:?}: the chart's default tag is appVersion"
    );
    let app_version = yaml(&chart.join("Chart.yaml"))["appVersion"]
        .as_str()
        .expect("Chart.yaml appVersion")
        .to_string();
    format!("{repository}:{app_version}")
}

fn yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A loopback address with a port free right now (the container binds it).
pub fn free_loopback_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
}

/// What a container's logger wrote so far (CRI lines), for assertion messages.
pub fn output_so_far(log_dir: &Path) -> String {
    std::fs::read_to_string(log_dir.join("0.log")).unwrap_or_default()
}
