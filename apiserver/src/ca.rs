//! The cluster CA as the apiserver holds it ([`Pki`]): the CA itself and the lifetimes
//! of the certificates it issues. Issuing is `crate::join`'s.

use std::time::Duration;

use hypermesh_trust::pki::ClusterCa;

/// The cluster CA and the lifetimes of what it issues.
pub struct Pki {
    /// The CA.
    pub ca: ClusterCa,
    /// How long node certificates last (agents renew at two thirds).
    pub node_validity: Duration,
    /// How long user certificates last unless the request says otherwise.
    pub user_validity: Duration,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("ca", &self.ca).finish()
    }
}

impl Pki {
    /// Default lifetimes: nodes 30 days, users one year.
    pub fn new(ca: ClusterCa) -> Self {
        Pki {
            ca,
            node_validity: Duration::from_secs(30 * 24 * 3600),
            user_validity: Duration::from_secs(365 * 24 * 3600),
        }
    }
}
