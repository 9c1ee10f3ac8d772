//! The admission chain: an ordered list of plugins behind one trait ([`Admit`]) that
//! every request walks once, on its way down to the store.
//!
//! Three phases, in this order, each over every plugin in chain order:
//! 1. **authorize** — every RPC (reads, writes, streams, sessions): may this caller
//!    do this verb on this kind in this namespace? (RBAC, node restriction)
//! 2. **mutate** — writes only: plugins may change the incoming object (defaults,
//!    keeping fields only an admin may change).
//! 3. **validate** — writes only: plugins look at the final object and the stored one
//!    and accept or refuse (workload policy, asset proofs, GPU sharing).
//!
//! A plugin never calls back into the registry. When it finds something the cluster
//! must react to (a node sent a forged proof), it reports a [`Finding`]; the registry
//! records findings as Events after the request, and controllers react to those
//! Events (see `crate::suspect`).
//!
//! # Layout
//! - [`object`]: [`ObjectRef`]/[`ObjectMut`], a typed view of an object of any kind.
//! - [`authorization`]: RBAC over Roles and RoleBindings, and the node authorizer.
//! - [`node_restriction`]: nodes write only their own objects, read only their Secrets.
//! - [`node_identity`]: Node identity checks and the Suspect guard.
//! - [`asset_proofs`]: the four proofs on every Asset.
//! - [`gpu_sharing`]: fractional GPU requests need a shareable GPU.
//! - [`workload_policy`]: what Instances and Workloads may ask of a host.

pub mod asset_proofs;
pub mod authorization;
pub mod gpu_sharing;
pub mod node_identity;
pub mod node_restriction;
pub mod object;
pub mod workload_policy;

use std::sync::Arc;

use hypermesh_api::reason::Reason;
use hypermesh_api::resource::KindInfo;
use tonic::Status;

pub use object::{Kind, ObjectMut, ObjectRef};

use crate::caller::Caller;
use crate::store::Store;

/// What a request does. Reads and streams are authorized only; writes are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `Get`.
    Get,
    /// `List`.
    List,
    /// `Watch`.
    Watch,
    /// `Create`.
    Create,
    /// `Update` (spec and metadata).
    Update,
    /// `UpdateStatus`.
    UpdateStatus,
    /// `Delete`.
    Delete,
    /// `InstanceService.Bind`.
    Bind,
    /// `InstanceService.Logs`.
    Logs,
    /// `InstanceService.Exec`.
    Exec,
    /// `NodeService.ImportImage`.
    ImportImage,
    /// `AgentTunnelService.Listen`/`Attach`: a node's session tunnel.
    Tunnel,
    /// `AssetService.Challenge`: a proof challenge for an Asset.
    Challenge,
    /// Reading a Secret's values (`get secrets/data`), asked with `x-hypermesh-reveal`.
    Reveal,
}

impl Operation {
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `delete`.
    pub fn verb(self) -> &'static str {
        match self {
            Operation::Get | Operation::Logs | Operation::Reveal => "get",
            Operation::List => "list",
            Operation::Watch | Operation::Tunnel => "watch",
            Operation::Create
            | Operation::Bind
            | Operation::Exec
            | Operation::ImportImage
            | Operation::Challenge => "create",
            Operation::Update | Operation::UpdateStatus => "update",
            Operation::Delete => "delete",
        }
    }

    /// The subresource the verb applies to (`instances/status`, `instances/exec`, …).
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Operation::UpdateStatus => Some("status"),
            Operation::Bind => Some("bind"),
            Operation::Logs => Some("logs"),
            Operation::Exec => Some("exec"),
            Operation::ImportImage => Some("import"),
            Operation::Tunnel => Some("tunnel"),
            Operation::Challenge => Some("challenge"),
            Operation::Reveal => Some("data"),
            _ => None,
        }
    }

    /// True for operations that write an object (and so pass mutate and validate).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Operation::Create
                | Operation::Update
                | Operation::UpdateStatus
                | Operation::Delete
                | Operation::Bind
        )
    }
}

/// Who does what to which object: what the authorize phase judges.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The caller.
    pub caller: &'a Caller,
    /// The operation.
    pub operation: Operation,
    /// The kind.
    pub kind: &'static KindInfo,
    /// The namespace (empty for cluster-scoped kinds, or a List/Watch of every namespace).
    pub namespace: &'a str,
    /// The object's name (empty for List/Watch).
    pub name: &'a str,
}

impl Access<'_> {
    /// `instances`, or `instances/status` for a subresource.
    pub fn resource(&self) -> String {
        match self.operation.subresource() {
            Some(sub) => format!("{}/{sub}", self.kind.plural),
            None => self.kind.plural.to_string(),
        }
    }

    /// The message of a refusal: `user "bob" cannot create instances in namespace "team-a"`.
    pub fn refusal(&self) -> String {
        let place = if !self.kind.namespaced {
            String::new()
        } else if self.namespace.is_empty() {
            " in every namespace".to_string()
        } else {
            format!(" in namespace {:?}", self.namespace)
        };
        let target = if self.name.is_empty() || self.operation == Operation::Create {
            self.resource()
        } else {
            format!("{} {:?}", self.resource(), self.name)
        };
        format!(
            "{} cannot {} {target}{place}",
            self.caller.describe(),
            self.operation.verb()
        )
    }
}

/// A write on its way to the store: the access, the stored object (for updates,
/// status updates, deletes and binds) and read access to the store for lookups.
pub struct AdmissionRequest<'a> {
    /// Who does what.
    pub access: Access<'a>,
    /// The object as stored, when there is one.
    pub old: Option<ObjectRef<'a>>,
    /// The store, for lookups (other objects a decision depends on). Plugins never write.
    pub store: &'a dyn Store,
}

/// Something the cluster should react to, found while admitting a request (whether
/// the request was accepted or not). Recorded as a Warning Event on the Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The node concerned.
    pub node: String,
    /// CamelCase reason, e.g. `ProofForged`; also the Event's reason.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// What plugins found during one request.
pub type Findings = Vec<Finding>;

/// One admission plugin. Every phase defaults to "no opinion".
#[tonic::async_trait]
pub trait Admit: Send + Sync {
    /// A short name, for logs.
    fn name(&self) -> &'static str;

    /// Refuses the access (any operation) with `PERMISSION_DENIED`/`UNAUTHENTICATED`.
    async fn authorize(&self, _access: &Access<'_>, _store: &dyn Store) -> Result<(), Status> {
        Ok(())
    }

    /// Changes the incoming object of a write.
    async fn mutate(
        &self,
        _request: &AdmissionRequest<'_>,
        _new: ObjectMut<'_>,
        _findings: &mut Findings,
    ) -> Result<(), Status> {
        Ok(())
    }

    /// Accepts or refuses a write; `new` is `None` for deletes.
    async fn validate(
        &self,
        _request: &AdmissionRequest<'_>,
        _new: Option<ObjectRef<'_>>,
        _findings: &mut Findings,
    ) -> Result<(), Status> {
        Ok(())
    }
}

/// The ordered plugins.
#[derive(Clone)]
pub struct Chain {
    plugins: Vec<Arc<dyn Admit>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.plugins.iter().map(|p| p.name()).collect();
        f.debug_struct("Chain").field("plugins", &names).finish()
    }
}

impl Default for Chain {
    fn default() -> Self {
        Chain::with_rbac(Arc::default())
    }
}

impl Chain {
    /// The chain every apiserver runs, in order, with `rbac` as the roles and bindings.
    pub fn with_rbac(rbac: Arc<authorization::Rbac>) -> Self {
        Chain::new(rbac, crate::proof_ledger::ProofSettings::default())
    }

    /// The chain every apiserver runs, with the cluster's proof settings.
    pub fn new(rbac: Arc<authorization::Rbac>, proofs: crate::proof_ledger::ProofSettings) -> Self {
        Chain {
            plugins: vec![
                Arc::new(authorization::Authorization { rbac }),
                Arc::new(node_identity::NodeIdentityGuard),
                Arc::new(node_restriction::NodeRestriction),
                Arc::new(workload_policy::WorkloadPolicy),
                Arc::new(asset_proofs::AssetProofs::new(&proofs)),
                Arc::new(gpu_sharing::GpuSharing),
            ],
        }
    }

    /// The plugins' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    /// The authorize phase.
    pub async fn authorize(&self, access: &Access<'_>, store: &dyn Store) -> Result<(), Status> {
        for plugin in &self.plugins {
            plugin.authorize(access, store).await?;
        }
        Ok(())
    }

    /// The mutate and validate phases of a create, update, status update or bind.
    pub async fn admit<K: Kind>(
        &self,
        request: &AdmissionRequest<'_>,
        new: &mut K,
        findings: &mut Findings,
    ) -> Result<(), Status> {
        for plugin in &self.plugins {
            plugin.mutate(request, new.view_mut(), findings).await?;
        }
        for plugin in &self.plugins {
            plugin.validate(request, Some(new.view()), findings).await?;
        }
        Ok(())
    }

    /// The validate phase of a delete.
    pub async fn admit_delete(
        &self,
        request: &AdmissionRequest<'_>,
        findings: &mut Findings,
    ) -> Result<(), Status> {
        for plugin in &self.plugins {
            plugin.validate(request, None, findings).await?;
        }
        Ok(())
    }
}

/// A refusal by the authorize phase.
pub fn forbidden(access: &Access<'_>) -> Status {
    hypermesh_api::reason::status(Reason::Forbidden, access.refusal())
}
