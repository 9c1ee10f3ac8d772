//! Who is calling: the identity a client certificate proved during the TLS handshake
//! (`user:bob`, `node:vm`, `system:scheduler`, …), the apiserver's own identity for the
//! writes it makes itself, or the development identity of a plaintext server.
//!
//! Identities come only from certificates the cluster CA signed (the subject's common
//! name is the identity, organisations are groups); nothing a request body says about
//! who it is counts.

use std::fmt;

/// Members of this group may do anything (like Kubernetes' `system:masters`): the
/// admin identity written to `admin.config`, and the in-process controllers.
pub const MASTERS_GROUP: &str = "system:masters";
/// Every node identity is in this group.
pub const NODES_GROUP: &str = "system:nodes";
/// The identity prefix of nodes: `node:<name>`.
pub const NODE_PREFIX: &str = "node:";
/// The identity prefix of users: `user:<name>`.
pub const USER_PREFIX: &str = "user:";
/// The scheduler's identity (it may bind Instances).
pub const SCHEDULER: &str = "system:scheduler";
/// The identity of the controllers the apiserver runs (workloads, node lifecycle, …).
pub const CONTROLLERS: &str = "system:controllers";

/// An authenticated (or deliberately anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The identity: `user:bob`, `node:vm`, `system:scheduler`, `system:apiserver`,
    /// `system:insecure-dev` or `system:anonymous`.
    pub name: String,
    /// Groups from the certificate's organisations, e.g. `system:masters`.
    pub groups: Vec<String>,
    /// Serial number of the client certificate (lower-case hex), when there is one.
    pub serial: Option<String>,
    /// For node certificates: the NodeId (BLAKE3 of the FALCON-1024 key) the CA bound
    /// into the certificate at join.
    pub node_id: Option<String>,
}

impl Caller {
    /// The apiserver itself, for writes it makes on its own behalf (system namespaces,
    /// admission findings, garbage collection).
    pub fn apiserver() -> Self {
        Caller {
            name: "system:apiserver".into(),
            groups: vec![MASTERS_GROUP.into()],
            serial: None,
            node_id: None,
        }
    }

    /// Everyone talking to a plaintext (`--insecure-dev`) server: an admin, because
    /// there is nothing to tell callers apart.
    pub fn insecure_dev() -> Self {
        Caller {
            name: "system:insecure-dev".into(),
            groups: vec![MASTERS_GROUP.into()],
            serial: None,
            node_id: None,
        }
    }

    /// A TLS client without a certificate: it may only join.
    pub fn anonymous() -> Self {
        Caller {
            name: "system:anonymous".into(),
            groups: Vec::new(),
            serial: None,
            node_id: None,
        }
    }

    /// True for a caller that presented a certificate of this cluster (or is the
    /// apiserver itself, or any caller of a plaintext development server).
    pub fn is_authenticated(&self) -> bool {
        self.name != "system:anonymous"
    }

    /// True for members of [`MASTERS_GROUP`].
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }

    /// The node name of a node identity.
    pub fn node_name(&self) -> Option<&str> {
        self.name
            .strip_prefix(NODE_PREFIX)
            .filter(|_| self.groups.iter().any(|g| g == NODES_GROUP))
    }

    /// How error messages name the caller: `user "bob"`, `node "vm"`, `system:scheduler`.
    pub fn describe(&self) -> String {
        if let Some(user) = self.name.strip_prefix(USER_PREFIX) {
            format!("user {user:?}")
        } else if let Some(node) = self.node_name() {
            format!("node {node:?}")
        } else {
            self.name.clone()
        }
    }
}

/// What tonic attaches to every request of a TLS connection (its `ConnectInfo`): the
/// caller the handshake proved and where it connects from.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// The caller ([`Caller::anonymous`] when no client certificate was presented).
    pub caller: std::sync::Arc<Caller>,
    /// The client's address.
    pub remote: Option<std::net::SocketAddr>,
    /// The certificate was revoked when the connection was made: every request is
    /// refused with a status saying so (clearer than a failed handshake).
    pub revoked: bool,
}

/// How the server tells callers apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication {
    /// Plaintext development server (`--insecure-dev`): every caller is
    /// [`Caller::insecure_dev`].
    InsecureDev,
    /// TLS with client certificates: the caller is what the handshake proved.
    Tls,
}

impl Authentication {
    /// The caller of `request`.
    pub fn caller_of<T>(
        self,
        request: &tonic::Request<T>,
    ) -> Result<std::sync::Arc<Caller>, tonic::Status> {
        if let Some(peer) = request.extensions().get::<PeerIdentity>() {
            if peer.revoked {
                return Err(hypermesh_api::reason::status(
                    hypermesh_api::reason::Reason::Unauthenticated,
                    format!(
                        "the client certificate of {} (serial {}) was revoked; ask an admin for a new one",
                        peer.caller.name,
                        peer.caller.serial.as_deref().unwrap_or("?")
                    ),
                ));
            }
            return Ok(peer.caller.clone());
        }
        match self {
            Authentication::InsecureDev => {
                static DEV: std::sync::LazyLock<std::sync::Arc<Caller>> =
                    std::sync::LazyLock::new(|| std::sync::Arc::new(Caller::insecure_dev()));
                Ok(DEV.clone())
            }
            Authentication::Tls => Err(hypermesh_api::reason::status(
                hypermesh_api::reason::Reason::Unauthenticated,
                "the connection carries no verified identity; connect over TLS with a client certificate",
            )),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_need_the_nodes_group() {
        let mut caller = Caller {
            name: "node:vm".into(),
            groups: vec![NODES_GROUP.into()],
            serial: None,
            node_id: None,
        };
        assert_eq!(caller.node_name(), Some("vm"));
        assert_eq!(caller.describe(), "node \"vm\"");
        caller.groups.clear();
        assert_eq!(caller.node_name(), None);
        assert!(!Caller::anonymous().is_authenticated());
        assert!(Caller::insecure_dev().is_admin());
    }
}
