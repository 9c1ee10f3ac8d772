//! Authorization, the first plugin of the chain: may this caller do this verb on this
//! resource here? Every RPC asks, streams included.
//!
//! - Admins (group `system:masters`: `admin.config`, the apiserver's own controllers,
//!   and every caller of a plaintext `--insecure-dev` server) may do anything.
//! - A caller without a client certificate may do nothing here (it may only join).
//! - Nodes (`node:<name>`) follow the node rules below; what they may write is further
//!   narrowed to their own objects by [`super::node_restriction`].
//! - The scheduler (`system:scheduler`) has its fixed rules.
//! - Everyone else is judged by RBAC: the rules of the Roles their RoleBindings give
//!   them (as a user, or through a group), in the binding's namespaces (or everywhere
//!   and for cluster-scoped kinds when the binding names none).
//!
//! Roles and bindings are read from an in-memory copy kept current by a watch
//! ([`Rbac::follow`]); before refusing, the store is read again, so a binding written
//! a moment ago counts at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::v1;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::{Access, Admit, Operation, forbidden};
use crate::caller::{Caller, SCHEDULER, USER_PREFIX};
use crate::store::follow::{Follower, Seen, follow};
use crate::store::{Store, StoreError};

/// The namespace of node and leader-election Leases.
pub const SYSTEM_NAMESPACE: &str = "hypermesh-system";

/// Kinds only admins (or an explicit Role) may touch: a viewer or node sees none.
const PRIVILEGED: &[&str] = &[
    "secrets",
    "roles",
    "rolebindings",
    "jointokens",
    "certificates",
];

/// What nodes may read (everything but [`PRIVILEGED`]; Secrets only through
/// [`super::node_restriction`]'s check of the Instances bound to them).
fn node_may(access: &Access<'_>, node: &str) -> bool {
    let plural = access.kind.plural;
    match access.operation {
        Operation::Get if plural == "secrets" => true, // narrowed by NodeRestriction
        Operation::Get | Operation::List | Operation::Watch => !PRIVILEGED.contains(&plural),
        Operation::Tunnel => plural == "nodes" && access.name == node,
        Operation::Create | Operation::Update | Operation::UpdateStatus => match plural {
            "nodes" => access.name == node,
            "leases" => {
                access.namespace == SYSTEM_NAMESPACE && access.name == format!("node-{node}")
            }
            "assets" | "events" => true, // their own only: NodeRestriction
            // Bound to it only; Update only to drop the containers finalizer (NodeRestriction).
            "instances" => access.operation != Operation::Create,
            _ => false,
        },
        Operation::Delete => match plural {
            "assets" => true, // its own only: NodeRestriction
            "leases" => {
                access.namespace == SYSTEM_NAMESPACE && access.name == format!("node-{node}")
            }
            _ => false,
        },
        Operation::Challenge => plural == "assets", // its own node only: checked by the call
        Operation::Bind
        | Operation::Logs
        | Operation::Exec
        | Operation::ImportImage
        | Operation::Reveal => false,
    }
}

/// The scheduler's fixed rules.
fn scheduler_may(access: &Access<'_>) -> bool {
    let plural = access.kind.plural;
    match access.operation {
        Operation::Get | Operation::List | Operation::Watch => !PRIVILEGED.contains(&plural),
        Operation::Bind => plural == "instances",
        Operation::UpdateStatus => plural == "instances",
        Operation::Delete => plural == "instances", // preemption
        Operation::Create => plural == "events" || plural == "leases",
        Operation::Update => plural == "leases" && access.namespace == SYSTEM_NAMESPACE,
        _ => false,
    }
}

/// Roles and bindings, in memory.
#[derive(Debug, Default)]
pub struct Rbac {
    state: RwLock<RbacState>,
}

#[derive(Debug, Default, Clone)]
struct RbacState {
    roles: HashMap<String, v1::RoleSpec>,
    bindings: HashMap<String, v1::RoleBindingSpec>,
}

fn matches(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

fn subject_matches(subject: &v1::Subject, caller: &Caller) -> bool {
    match subject.kind.as_str() {
        "User" => {
            caller.name.strip_prefix(USER_PREFIX) == Some(subject.name.as_str())
                || (subject.name.contains(':') && caller.name == subject.name)
        }
        "Group" => caller.groups.contains(&subject.name),
        _ => false,
    }
}

impl RbacState {
    fn allows(&self, access: &Access<'_>) -> bool {
        let verb = access.operation.verb();
        let resource = access.resource();
        self.bindings.values().any(|binding| {
            if !binding
                .subjects
                .iter()
                .any(|s| subject_matches(s, access.caller))
            {
                return false;
            }
            let in_scope = binding.namespaces.is_empty()
                || (access.kind.namespaced
                    && !access.namespace.is_empty()
                    && binding.namespaces.iter().any(|n| n == access.namespace));
            if !in_scope {
                return false;
            }
            self.roles.get(&binding.role).is_some_and(|role| {
                role.rules.iter().any(|rule| {
                    matches(&rule.verbs, verb)
                        && (matches(&rule.resources, &resource)
                            || rule.resources.iter().any(|r| {
                                r.strip_suffix("/*")
                                    .is_some_and(|p| resource.starts_with(&format!("{p}/")))
                            }))
                })
            })
        })
    }

    fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(name) = key.strip_prefix("/roles/") {
            match value.and_then(|v| v1::Role::decode(v).ok()) {
                Some(role) => {
                    self.roles
                        .insert(name.to_string(), role.spec.unwrap_or_default());
                }
                None => {
                    self.roles.remove(name);
                }
            }
        } else if let Some(name) = key.strip_prefix("/rolebindings/") {
            match value.and_then(|v| v1::RoleBinding::decode(v).ok()) {
                Some(binding) => {
                    self.bindings
                        .insert(name.to_string(), binding.spec.unwrap_or_default());
                }
                None => {
                    self.bindings.remove(name);
                }
            }
        }
    }

    async fn load(store: &dyn Store) -> Result<(Self, u64), StoreError> {
        let mut state = RbacState::default();
        let roles = store.list("/roles/", None, 0, 0).await?;
        for kv in &roles.items {
            state.apply(&kv.key, Some(&kv.value));
        }
        let bindings = store
            .list("/rolebindings/", None, 0, roles.revision)
            .await?;
        for kv in &bindings.items {
            state.apply(&kv.key, Some(&kv.value));
        }
        Ok((state, bindings.revision))
    }
}

impl Rbac {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, RbacState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RbacState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when the caller's bindings allow the access; on a miss the roles and
    /// bindings are read from the store again first.
    pub async fn allows(&self, access: &Access<'_>, store: &dyn Store) -> Result<bool, Status> {
        if self.read().allows(access) {
            return Ok(true);
        }
        let (fresh, _) = RbacState::load(store)
            .await
            .map_err(|e| crate::object::store_status(e, "roles"))?;
        let allowed = fresh.allows(access);
        *self.write() = fresh;
        Ok(allowed)
    }

    /// Keeps the copy current from the store until `shutdown`.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, shutdown: CancellationToken) {
        follow(
            store.as_ref(),
            &["/roles/", "/rolebindings/"],
            "RBAC",
            self.as_ref(),
            &shutdown,
        )
        .await;
    }
}

#[tonic::async_trait]
impl Follower for Rbac {
    fn reset(&self) {
        *self.write() = RbacState::default();
    }

    async fn seen(&self, key: &str, seen: Seen<'_>) {
        let value = match seen {
            Seen::Listed(v) | Seen::Created(v) | Seen::Updated(v) => Some(v),
            Seen::Deleted => None,
        };
        self.write().apply(key, value);
    }
}

/// The built-in roles, created on first start: viewer, editor, admin.
pub fn builtin_roles() -> Vec<v1::Role> {
    let rule = |verbs: &[&str], resources: &[&str]| v1::PolicyRule {
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
    };
    let read = ["get", "list", "watch"];
    let visible = [
        "namespaces",
        "nodes",
        "assets",
        "workloads",
        "instances",
        "routes",
        "leases",
        "events",
    ];
    let role = |name: &str, rules: Vec<v1::PolicyRule>| v1::Role {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            labels: [("hypermesh.io/builtin".to_string(), "true".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        spec: Some(v1::RoleSpec { rules }),
        status: None,
    };
    vec![
        role(
            "viewer",
            vec![rule(&read, &visible), rule(&["get"], &["instances/logs"])],
        ),
        role(
            "editor",
            vec![
                rule(&read, &visible),
                rule(&read, &["secrets"]),
                rule(
                    &["create", "update", "delete"],
                    &["workloads", "instances", "routes", "secrets", "events"],
                ),
                rule(&["get"], &["instances/logs"]),
                rule(&["create"], &["instances/exec"]),
            ],
        ),
        role("admin", vec![rule(&["*"], &["*"])]),
    ]
}

/// The plugin.
#[derive(Debug, Default)]
pub struct Authorization {
    /// Roles and bindings.
    pub rbac: Arc<Rbac>,
}

#[tonic::async_trait]
impl Admit for Authorization {
    fn name(&self) -> &'static str {
        "Authorization"
    }

    async fn authorize(&self, access: &Access<'_>, store: &dyn Store) -> Result<(), Status> {
        let caller = access.caller;
        if caller.is_admin() {
            return Ok(());
        }
        if !caller.is_authenticated() {
            return Err(status(
                Reason::Unauthenticated,
                "no client certificate was presented: use a config with clientCertificate and clientKey \
                 (an admin creates one with `hmctl user create`), or join a node with a token",
            ));
        }
        let allowed = if let Some(node) = caller.node_name() {
            node_may(access, node)
        } else if caller.name == SCHEDULER {
            scheduler_may(access)
        } else {
            self.rbac.allows(access, store).await?
        };
        if allowed {
            Ok(())
        } else {
            Err(forbidden(access))
        }
    }
}
