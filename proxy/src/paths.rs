//! The path each peer is reached by, as the proxy shows it: the Prometheus gauges
//! (`hypermesh_proxy_peer_path`, `…_peer_rtt_seconds`) and the `/paths` page
//! (`c relay via=a rtt=0.4ms`, one line per peer).

use crate::mesh::Mesh;
use crate::transport::Path;

/// Sets the path gauges from the mesh's current paths.
pub fn refresh_metrics(mesh: &Mesh) {
    let paths = mesh.paths();
    mesh.metrics()
        .peer_connections
        .set(i64::try_from(mesh.peer_connections()).unwrap_or(i64::MAX));
    mesh.metrics()
        .set_paths(paths.iter().map(|p| (p.peer.as_str(), &p.path, p.rtt)));
}

/// `peer direct rtt=0.4ms` lines, one per peer.
pub fn text(mesh: &Mesh) -> String {
    let mut out = String::new();
    for p in mesh.paths() {
        let path = match &p.path {
            Path::Direct => "direct".to_string(),
            Path::Relay(r) => format!("relay via={r}"),
        };
        let rtt = p
            .rtt
            .map(|r| format!(" rtt={:.1}ms", r.as_secs_f64() * 1000.0))
            .unwrap_or_default();
        out.push_str(&format!("{} {path}{rtt}\n", p.peer));
    }
    out
}
