//! `InstanceService.Bind`: the scheduler's one write. A compare-and-swap on the
//! Instance that sets `spec.nodeName`, phase SCHEDULED and the Scheduled condition,
//! refused when the Instance is bound already or the node is missing.

use hypermesh_api::conditions::{condition, set_condition};
use hypermesh_api::reason::{Reason, status};
use hypermesh_api::resource::Resource;
use hypermesh_api::v1::{self, BindRequest};
use tonic::Status;

use crate::admission::Operation;
use crate::caller::Caller;
use crate::object::{StoredObject, store_status};
use crate::registry::Registry;

impl Registry<v1::Instance> {
    /// Binds an unbound Instance to a node.
    pub async fn bind(
        &self,
        caller: &Caller,
        request: BindRequest,
    ) -> Result<v1::Instance, Status> {
        let namespace = if request.namespace.is_empty() {
            "default".to_string()
        } else {
            request.namespace.clone()
        };
        self.authorize(caller, Operation::Bind, &namespace, &request.name)
            .await?;
        if let Some(problem) = hypermesh_api::validation::dns_subdomain_problem(&request.node_name)
        {
            return Err(status(
                Reason::FieldInvalid,
                format!("node_name: {problem}"),
            ));
        }
        let node_key = format!("/nodes/{}", request.node_name);
        let node = self
            .store()
            .get(&node_key)
            .await
            .map_err(|e| store_status(e, &node_key))?;
        let node_missing = match node {
            None => true,
            Some(kv) => StoredObject::decode_kv(&kv)?
                .meta()
                .deletion_timestamp
                .is_some(),
        };
        if node_missing {
            return Err(status(
                Reason::NodeNotFound,
                format!(
                    "node {:?} does not exist (or is being deleted)",
                    request.node_name
                ),
            ));
        }
        let what = Self::describe(&namespace, &request.name);
        let (kv, current) = self.current(&namespace, &request.name).await?;
        Self::check_version(request.resource_version, &kv, &what)?;
        if current.meta().deletion_timestamp.is_some() {
            return Err(status(
                Reason::FieldInvalid,
                format!("{what} is being deleted and cannot be bound"),
            ));
        }
        let bound_to = current
            .spec
            .as_ref()
            .map(|s| s.node_name.as_str())
            .unwrap_or_default();
        if !bound_to.is_empty() {
            return Err(status(
                Reason::AlreadyBound,
                format!("{what} is already bound to node {bound_to:?}"),
            ));
        }
        let mut next = current.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.node_name = request.node_name.clone();
        spec.assigned_assets = request.assigned_assets.clone();
        next.meta_mut().generation = current.meta().generation + 1;
        let now = hypermesh_api::time::now();
        let status_ = next.status.get_or_insert_with(Default::default);
        if status_.phase == v1::InstancePhase::Pending as i32
            || status_.phase == v1::InstancePhase::Unspecified as i32
        {
            status_.phase = v1::InstancePhase::Scheduled as i32;
        }
        set_condition(
            &mut status_.conditions,
            condition(
                "Scheduled",
                "True",
                "Bound",
                format!("bound to {}", request.node_name),
            ),
            now,
        );
        self.admit(caller, Operation::Bind, Some(&current), &mut next)
            .await?;
        self.write(&kv, &current, next, &what).await
    }
}
