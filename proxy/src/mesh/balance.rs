//! Which of a Route's endpoints one new flow tries, and in what order. A host that
//! just died still has Ready Instances in the catalog until the node-lifecycle
//! controller marks its Node (a Lease later); meanwhile:
//!
//! - endpoints on a node that recently failed (a dial that failed, a connection that
//!   went silent) are tried after every other endpoint ([`healthy_first`]), so new
//!   flows stop paying a dial timeout for it;
//! - one flow never tries a second endpoint on a remote node that was already
//!   unreachable during that flow ([`try_in_turn`]), so its [`ROUTE_ATTEMPTS`] go to
//!   other nodes instead of all failing on one dead host.
//!
//! A node leaves the suspects as soon as a stream to it connects, or after
//! [`SUSPECT_FOR`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::Endpoint;
use crate::header::Reply;

use super::ROUTE_ATTEMPTS;

/// How long a node that failed stays at the back of Route rotations (unless a stream
/// to it connects first).
pub const SUSPECT_FOR: Duration = Duration::from_secs(10);

/// Nodes that failed recently, and when.
#[derive(Debug, Default)]
pub struct Suspects(Mutex<HashMap<String, Instant>>);

impl Suspects {
    /// `node` just failed.
    pub fn mark(&self, node: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(node.to_string(), Instant::now());
        }
    }

    /// A stream to `node` connected.
    pub fn clear(&self, node: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(node);
        }
    }

    /// Whether `node` failed less than [`SUSPECT_FOR`] ago.
    pub fn contains(&self, node: &str) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(node).copied())
            .is_some_and(|t| t.elapsed() < SUSPECT_FOR)
    }
}

/// `rotation` with the endpoints on `suspect` nodes moved to the end, each part in its
/// rotation order.
pub fn healthy_first(rotation: Vec<Endpoint>, suspect: impl Fn(&str) -> bool) -> Vec<Endpoint> {
    let (back, front): (Vec<Endpoint>, Vec<Endpoint>) =
        rotation.into_iter().partition(|e| suspect(&e.node));
    front.into_iter().chain(back).collect()
}

/// Tries `candidates` in order with `open` (given a copy of each) until one connects: at most
/// [`ROUTE_ATTEMPTS`] of them, skipping endpoints on a node other than `local` that
/// already answered [`Reply::Unreachable`] during this call. `retried` is called before
/// every attempt after the first. The last failure when none connects.
pub async fn try_in_turn<T, F, Fut>(
    candidates: &[Endpoint],
    local: &str,
    mut open: F,
    mut retried: impl FnMut(),
) -> Result<T, Reply>
where
    F: FnMut(Endpoint) -> Fut,
    Fut: Future<Output = Result<T, Reply>>,
{
    let mut last = Reply::Unreachable;
    let mut attempts = 0;
    let mut unreachable: HashSet<&str> = HashSet::new();
    for endpoint in candidates {
        if attempts == ROUTE_ATTEMPTS {
            break;
        }
        if unreachable.contains(endpoint.node.as_str()) {
            continue;
        }
        if attempts > 0 {
            retried();
        }
        attempts += 1;
        match open(endpoint.clone()).await {
            Ok(flow) => return Ok(flow),
            Err(reply) => {
                if reply == Reply::Unreachable && endpoint.node != local {
                    unreachable.insert(&endpoint.node);
                }
                last = reply;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(name: &str, node: &str) -> Endpoint {
        Endpoint {
            namespace: "default".into(),
            name: name.into(),
            uid: name.into(),
            node: node.into(),
            address: "fd48:4d00::1".parse().expect("address"),
            ready: true,
        }
    }

    fn names(endpoints: &[Endpoint]) -> Vec<&str> {
        endpoints.iter().map(|e| e.name.as_str()).collect()
    }

    /// Tries `candidates` from node `a`, where node `c` is dead; the endpoints tried.
    async fn tried_with_c_dead(candidates: &[Endpoint]) -> (Result<String, Reply>, Vec<String>) {
        let tried = std::sync::Mutex::new(Vec::new());
        let result = try_in_turn(
            candidates,
            "a",
            |e| {
                tried.lock().expect("lock").push(e.name.clone());
                let outcome = if e.node == "c" {
                    Err(Reply::Unreachable)
                } else {
                    Ok(e.name.clone())
                };
                async move { outcome }
            },
            || {},
        )
        .await;
        (result, tried.into_inner().expect("lock"))
    }

    #[test]
    fn suspect_nodes_go_last_in_rotation_order() {
        let rotation = vec![
            endpoint("c1", "c"),
            endpoint("a1", "a"),
            endpoint("c2", "c"),
            endpoint("b1", "b"),
        ];
        let ordered = healthy_first(rotation, |node| node == "c");
        assert_eq!(names(&ordered), ["a1", "b1", "c1", "c2"]);
    }

    #[test]
    fn suspects_are_forgotten_on_success() {
        let suspects = Suspects::default();
        assert!(!suspects.contains("c"));
        suspects.mark("c");
        assert!(suspects.contains("c"));
        suspects.clear("c");
        assert!(!suspects.contains("c"));
    }

    #[tokio::test]
    async fn one_dead_node_costs_one_attempt_not_all() {
        // Three endpoints on the dead node first: the old loop tried c1, c2, c3 and failed.
        let candidates = [
            endpoint("c1", "c"),
            endpoint("c2", "c"),
            endpoint("c3", "c"),
            endpoint("a1", "a"),
            endpoint("b1", "b"),
        ];
        let (result, tried) = tried_with_c_dead(&candidates).await;
        assert_eq!(result, Ok("a1".to_string()));
        assert_eq!(tried, ["c1", "a1"]);
    }

    #[tokio::test]
    async fn at_most_route_attempts_endpoints_are_tried() {
        let candidates = [
            endpoint("c1", "c"),
            endpoint("d1", "d"),
            endpoint("e1", "e"),
            endpoint("a1", "a"),
        ];
        let tried = std::sync::Mutex::new(Vec::new());
        let result: Result<(), Reply> = try_in_turn(
            &candidates,
            "a",
            |e| {
                tried.lock().expect("lock").push(e.name.clone());
                async { Err(Reply::Unreachable) }
            },
            || {},
        )
        .await;
        assert_eq!(result, Err(Reply::Unreachable));
        assert_eq!(
            tried.into_inner().expect("lock"),
            ["c1", "d1", "e1"],
            "{ROUTE_ATTEMPTS} attempts"
        );
    }

    #[tokio::test]
    async fn local_endpoints_and_other_failures_do_not_rule_out_a_node() {
        // A refused connection is the Instance's answer, not its node's: the next
        // endpoint on that node is still tried; so is a second local one after a first
        // local one was unreachable.
        for (candidates, failing, expected) in [
            (
                ["b1", "b2", "a1"],
                ("b1", Reply::Refused),
                ["b1", "b2"].as_slice(),
            ),
            (
                ["a1", "a2", "b1"],
                ("a1", Reply::Unreachable),
                ["a1", "a2"].as_slice(),
            ),
        ] {
            let candidates: Vec<Endpoint> =
                candidates.iter().map(|n| endpoint(n, &n[..1])).collect();
            let tried = std::sync::Mutex::new(Vec::new());
            let result = try_in_turn(
                &candidates,
                "a",
                |e| {
                    tried.lock().expect("lock").push(e.name.clone());
                    let outcome = if e.name == failing.0 {
                        Err(failing.1)
                    } else {
                        Ok(e.name.clone())
                    };
                    async move { outcome }
                },
                || {},
            )
            .await;
            assert_eq!(result, Ok(expected[1].to_string()));
            assert_eq!(tried.into_inner().expect("lock"), expected);
        }
    }
}
