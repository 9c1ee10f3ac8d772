//! Publishes what other proxies and `hmctl describe node` need on this node's Node
//! object as annotations: the QUIC endpoint to dial ([`ENDPOINT_ANNOTATION`]), the
//! relay it is attached to when behind NAT ([`RELAY_ANNOTATION`]), and the path in use
//! to each peer ([`PATHS_ANNOTATION`], `peer=direct|relay:VIA rtt=…`). Written only
//! when the endpoint, relay or the kinds of paths change, not on every RTT wobble.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hypermesh_api::v1::Node;
use hypermesh_api::{Api, Resource};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::catalog::{ENDPOINT_ANNOTATION, PATHS_ANNOTATION, RELAY_ANNOTATION};
use crate::mesh::Mesh;
use crate::transport::Path;

/// How often the status is checked.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);

fn paths_value(mesh: &Mesh, with_rtt: bool) -> String {
    mesh.paths()
        .into_iter()
        .map(|p| {
            let path = match p.path {
                Path::Direct => "direct".to_string(),
                Path::Relay(r) => format!("relay:{r}"),
            };
            match (with_rtt, p.rtt) {
                (true, Some(rtt)) => {
                    format!("{}={path} rtt={:.1}ms", p.peer, rtt.as_secs_f64() * 1000.0)
                }
                _ => format!("{}={path}", p.peer),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn without_rtt(value: &str) -> String {
    value
        .split(", ")
        .map(|p| p.split(' ').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keeps the annotations current until `shutdown`.
pub async fn publish(
    api: Api<Node>,
    mesh: Mesh,
    advertise: Option<SocketAddr>,
    shutdown: CancellationToken,
) {
    loop {
        let mut desired = BTreeMap::new();
        desired.insert(
            ENDPOINT_ANNOTATION,
            advertise.map(|a| a.to_string()).unwrap_or_default(),
        );
        desired.insert(RELAY_ANNOTATION, mesh.own_relay().unwrap_or_default());
        desired.insert(PATHS_ANNOTATION, paths_value(&mesh, true));
        crate::paths::refresh_metrics(&mesh);
        if let Ok(mut node) = api.get("", mesh.node()).await {
            let current = &node.meta().annotations;
            let same = desired.iter().all(|(k, v)| {
                let now = current.get(*k).map(String::as_str).unwrap_or_default();
                if *k == PATHS_ANNOTATION {
                    without_rtt(now) == without_rtt(v)
                } else {
                    now == v
                }
            });
            if !same {
                let annotations = &mut node.meta_mut().annotations;
                for (k, v) in &desired {
                    if v.is_empty() {
                        annotations.remove(*k);
                    } else {
                        annotations.insert(k.to_string(), v.clone());
                    }
                }
                if let Err(e) = api.update(&node).await {
                    debug!(error = %e, "updating the Node's proxy annotations (retrying)");
                    continue_after(&shutdown, Duration::from_millis(200)).await;
                    if shutdown.is_cancelled() {
                        return;
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
        }
    }
}

async fn continue_after(shutdown: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rtt_is_ignored_when_comparing() {
        assert_eq!(
            super::without_rtt("b=direct rtt=0.3ms, c=relay:a rtt=1.0ms"),
            "b=direct, c=relay:a"
        );
    }
}
