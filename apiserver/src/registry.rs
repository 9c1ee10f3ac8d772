//! `Registry<K>`: the semantics of one kind over the store — uid, generation and
//! timestamps, optimistic concurrency, spec/status separation, finalizers, namespace
//! checks, selectors, paginated snapshot listing and watch with bookmarks.
//!
//! Every verb takes the [`Caller`] and walks down once: authorize (every verb), then
//! for writes validation of the fields, mutate and validate admission
//! ([`crate::admission::Chain`]), the store write, and last the findings admission
//! reported ([`crate::findings`]).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use hypermesh_api::reason::{Reason, status};
use hypermesh_api::resource::{Resource, find_kind};
use hypermesh_api::v1::{DeleteRequest, ObjectMeta, PropagationPolicy};
use hypermesh_api::validation::validate;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::admission::{Chain, Kind, Operation};
use crate::caller::Caller;
use crate::metrics::Metrics;
use crate::object::{self, Deletion, StoredObject, object_key, store_status, uid};
use crate::selectors::Selectors;
use crate::store::{KeyValue, Store, StoreError};

mod builtin;
mod continue_token;
mod list;
mod phases;
mod watch;

pub use builtin::{ensure_builtin_roles, ensure_system_namespaces};
pub use continue_token::ContinueTokens;

/// A List page is cut (with a continue token) before its objects exceed this many
/// bytes, whatever the limit, so a page always fits in one gRPC message.
pub const PAGE_BYTES: usize = 12 * 1024 * 1024;

/// Most objects in one List page; `limit: 0` (or more) means this many, with a
/// continue token for the rest, so no request loads a whole kind.
pub const MAX_PAGE_ITEMS: usize = 1000;

/// Bytes of stored objects one read from the store may bring in (at the largest
/// object size), so a List holds at most about this much beyond its page.
const LIST_FETCH_BYTES: usize = 32 * 1024 * 1024;

/// Default of [`RegistryOptions::max_image_upload_bytes`]: 2 GiB.
pub const DEFAULT_MAX_IMAGE_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Limits and intervals shared by every registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Largest encoded object accepted.
    pub max_object_bytes: usize,
    /// How often a watch with `allow_bookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Cancelled when the server shuts down: open watches end.
    pub shutdown: CancellationToken,
    /// Where request and watch metrics go.
    pub metrics: Arc<Metrics>,
    /// Logs, exec and image-import sessions relayed to agents.
    pub sessions: Arc<crate::sessions::broker::Sessions>,
    /// The admission chain every request walks.
    pub admission: Arc<Chain>,
    /// How callers are identified.
    pub authentication: crate::caller::Authentication,
    /// The cluster CA (absent on a plaintext `--insecure-dev` server).
    pub pki: Option<Arc<crate::ca::Pki>>,
    /// Where every request is recorded (`--audit-log`).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// The cluster's proof settings (challenges).
    pub proofs: crate::proof_ledger::ProofSettings,
    /// The watch caches (`None`: `--watch-cache=false`, every watch reads the store).
    pub watch_caches: Option<Arc<crate::watch_cache::WatchCaches>>,
    /// Per-identity request rate limits.
    pub rate_limits: Arc<crate::limits::RateLimits>,
    /// Largest image archive one `NodeService.ImportImage` may upload to a node.
    pub max_image_upload_bytes: u64,
    /// The keys List continue tokens are signed with (derived from the encryption key
    /// file, so every apiserver of a cluster accepts the others' tokens).
    pub continue_tokens: Arc<ContinueTokens>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            max_object_bytes: 1536 * 1024,
            bookmark_interval: Duration::from_secs(10),
            shutdown: CancellationToken::new(),
            metrics: Arc::default(),
            sessions: Arc::default(),
            admission: Arc::default(),
            authentication: crate::caller::Authentication::InsecureDev,
            pki: None,
            audit: None,
            proofs: crate::proof_ledger::ProofSettings::default(),
            watch_caches: None,
            rate_limits: Arc::default(),
            max_image_upload_bytes: DEFAULT_MAX_IMAGE_UPLOAD_BYTES,
            continue_tokens: Arc::default(),
        }
    }
}

/// A stream of watch events for gRPC.
pub type EventStream<K> =
    tokio_stream::wrappers::ReceiverStream<Result<<K as Resource>::WatchEvent, Status>>;

/// The object semantics of kind `K`.
pub struct Registry<K> {
    store: Arc<dyn Store>,
    options: Arc<RegistryOptions>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Registry<K> {
    fn clone(&self) -> Self {
        Registry {
            store: self.store.clone(),
            options: self.options.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Kind> Registry<K> {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>, options: Arc<RegistryOptions>) -> Self {
        Registry {
            store,
            options,
            kind: PhantomData,
        }
    }

    /// The store objects live in.
    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The metrics requests are recorded in.
    pub fn metrics(&self) -> &Metrics {
        &self.options.metrics
    }

    /// The broker of sessions with agents.
    pub fn sessions(&self) -> &Arc<crate::sessions::broker::Sessions> {
        &self.options.sessions
    }

    /// Takes one request from `caller`'s rate limit.
    pub fn rate_limit(&self, caller: &Caller) -> Result<(), Status> {
        self.options.rate_limits.check(caller)
    }

    /// Largest image archive one upload to a node may carry.
    pub fn max_image_upload_bytes(&self) -> u64 {
        self.options.max_image_upload_bytes
    }

    /// The audit log, when there is one.
    pub fn audit_log(&self) -> Option<&crate::audit::AuditLog> {
        self.options.audit.as_deref()
    }

    /// The cluster's proof settings.
    pub fn proof_settings(&self) -> &crate::proof_ledger::ProofSettings {
        &self.options.proofs
    }

    /// The cluster CA, when the server runs with TLS.
    pub fn pki(&self) -> Option<&Arc<crate::ca::Pki>> {
        self.options.pki.as_ref()
    }

    /// Who made `request`: the identity its TLS connection proved, or the development
    /// identity of a plaintext server.
    pub fn caller_of<T>(&self, request: &tonic::Request<T>) -> Result<Arc<Caller>, Status> {
        self.options.authentication.caller_of(request)
    }

    fn info() -> &'static hypermesh_api::resource::KindInfo {
        find_kind(K::KIND).unwrap_or_else(|| unreachable!("every Resource is in KIND_INFOS"))
    }

    fn key(namespace: &str, name: &str) -> String {
        object_key(Self::info(), namespace, name)
    }

    /// `workloads "web"` (with ` in namespace "default"`), for messages.
    pub(crate) fn describe(namespace: &str, name: &str) -> String {
        if K::NAMESPACED {
            format!("{} {name:?} in namespace {namespace:?}", K::PLURAL)
        } else {
            format!("{} {name:?}", K::PLURAL)
        }
    }

    fn decode(kv: &KeyValue) -> Result<K, Status> {
        let mut obj = K::decode(kv.value.as_slice()).map_err(|e| {
            status(
                Reason::InternalError,
                format!("stored object {} does not decode: {e}", kv.key),
            )
        })?;
        obj.meta_mut().resource_version = kv.mod_revision;
        Ok(obj)
    }

    fn encode(&self, obj: &K) -> Result<Vec<u8>, Status> {
        let mut stored = obj.clone();
        stored.meta_mut().resource_version = 0;
        let bytes = stored.encode_to_vec();
        if bytes.len() > self.options.max_object_bytes {
            return Err(status(
                Reason::TooLarge,
                format!(
                    "{} is {} bytes encoded; the limit is {} bytes",
                    Self::describe(&obj.meta().namespace, &obj.meta().name),
                    bytes.len(),
                    self.options.max_object_bytes
                ),
            ));
        }
        Ok(bytes)
    }

    fn defaults_and_validate(obj: &mut K) -> Result<(), Status> {
        if K::NAMESPACED && obj.meta().namespace.is_empty() {
            obj.meta_mut().namespace = "default".to_string();
        }
        validate(obj).map_err(|errs| status(errs.reason(), errs.to_string()))
    }

    /// Rejects objects whose namespace is missing or being deleted.
    async fn check_namespace(&self, namespace: &str) -> Result<(), Status> {
        if !K::NAMESPACED {
            return Ok(());
        }
        let key = format!("/namespaces/{namespace}");
        let kv = self
            .store
            .get(&key)
            .await
            .map_err(|e| store_status(e, &key))?;
        let Some(kv) = kv else {
            return Err(status(
                Reason::NamespaceNotFound,
                format!(
                    "namespace {namespace:?} not found; create it first (hmctl apply -f a Namespace manifest)"
                ),
            ));
        };
        let ns = StoredObject::decode_kv(&kv)?;
        if ns.meta().deletion_timestamp.is_some() {
            return Err(status(
                Reason::NamespaceTerminating,
                format!(
                    "namespace {namespace:?} is being deleted; nothing new can be created in it"
                ),
            ));
        }
        Ok(())
    }

    /// Creates a new object.
    pub async fn create(&self, caller: &Caller, mut obj: K) -> Result<K, Status> {
        if K::NAMESPACED && obj.meta().namespace.is_empty() {
            obj.meta_mut().namespace = "default".to_string();
        }
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        self.authorize(caller, Operation::Create, &namespace, &name)
            .await?;
        Self::defaults_and_validate(&mut obj)?;
        self.check_namespace(&namespace).await?;
        self.admit(caller, Operation::Create, None, &mut obj)
            .await?;
        let meta = obj.meta_mut();
        meta.uid = uid();
        meta.generation = 1;
        meta.creation_timestamp = Some(hypermesh_api::time::now());
        meta.deletion_timestamp = None;
        obj.on_create();
        let bytes = self.encode(&obj)?;
        let revision = self
            .store
            .create(&Self::key(&namespace, &name), bytes)
            .await
            .map_err(|e| store_status(e, &Self::describe(&namespace, &name)))?;
        obj.meta_mut().resource_version = revision;
        Ok(obj)
    }

    /// Reads one object.
    pub async fn get(&self, caller: &Caller, namespace: &str, name: &str) -> Result<K, Status> {
        let namespace = if K::NAMESPACED && namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        self.authorize(caller, Operation::Get, namespace, name)
            .await?;
        self.read(namespace, name).await
    }

    /// Reads one object without authorization, for the apiserver's own lookups.
    pub(crate) async fn read(&self, namespace: &str, name: &str) -> Result<K, Status> {
        let what = Self::describe(namespace, name);
        let kv = self
            .store
            .get(&Self::key(namespace, name))
            .await
            .map_err(|e| store_status(e, &what))?;
        Self::decode(&kv.ok_or_else(|| status(Reason::NotFound, format!("{what} not found")))?)
    }

    pub(crate) async fn current(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(KeyValue, K), Status> {
        let what = Self::describe(namespace, name);
        let kv = self
            .store
            .get(&Self::key(namespace, name))
            .await
            .map_err(|e| store_status(e, &what))?;
        let kv = kv.ok_or_else(|| status(Reason::NotFound, format!("{what} not found")))?;
        let obj = Self::decode(&kv)?;
        Ok((kv, obj))
    }

    pub(crate) fn check_version(sent: u64, kv: &KeyValue, what: &str) -> Result<(), Status> {
        if sent != 0 && sent != kv.mod_revision {
            return Err(store_status(
                StoreError::Conflict {
                    key: kv.key.clone(),
                    expected: sent,
                    current: kv.mod_revision,
                },
                what,
            ));
        }
        Ok(())
    }

    /// Writes `next` over `kv` (or deletes it when its last finalizer went away
    /// during deletion); unchanged objects are not written.
    pub(crate) async fn write(
        &self,
        kv: &KeyValue,
        current: &K,
        mut next: K,
        what: &str,
    ) -> Result<K, Status> {
        if next == *current {
            return Ok(next);
        }
        if next.meta().deletion_timestamp.is_some() && next.meta().finalizers.is_empty() {
            let (revision, _) = self
                .store
                .delete(&kv.key, Some(kv.mod_revision))
                .await
                .map_err(|e| store_status(e, what))?;
            next.meta_mut().resource_version = revision;
            return Ok(next);
        }
        let bytes = self.encode(&next)?;
        let revision = self
            .store
            .update(&kv.key, bytes, kv.mod_revision)
            .await
            .map_err(|e| store_status(e, what))?;
        next.meta_mut().resource_version = revision;
        Ok(next)
    }

    /// Replaces spec and client-owned metadata (labels, annotations, finalizers, owner
    /// references). Bumps `generation` when the spec changes.
    pub async fn update(&self, caller: &Caller, mut obj: K) -> Result<K, Status> {
        if K::NAMESPACED && obj.meta().namespace.is_empty() {
            obj.meta_mut().namespace = "default".to_string();
        }
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        self.authorize(caller, Operation::Update, &namespace, &name)
            .await?;
        Self::defaults_and_validate(&mut obj)?;
        let what = Self::describe(&namespace, &name);
        let (kv, current) = self.current(&namespace, &name).await?;
        Self::check_version(obj.meta().resource_version, &kv, &what)?;
        if !obj.meta().uid.is_empty() && obj.meta().uid != current.meta().uid {
            return Err(status(
                Reason::Conflict,
                format!(
                    "{what}: uid {} does not match the stored object's {}",
                    obj.meta().uid,
                    current.meta().uid
                ),
            ));
        }
        obj.check_update(&current)?;
        let mut next = current.clone();
        next.copy_spec_from(&obj);
        let sent: &ObjectMeta = obj.meta();
        let meta = next.meta_mut();
        meta.labels = sent.labels.clone();
        meta.annotations = sent.annotations.clone();
        meta.owner_references = sent.owner_references.clone();
        if current.meta().deletion_timestamp.is_some()
            && let Some(added) = sent
                .finalizers
                .iter()
                .find(|f| !current.meta().finalizers.contains(f))
        {
            return Err(status(
                Reason::FieldInvalid,
                format!("metadata.finalizers: cannot add {added:?} while {what} is being deleted"),
            ));
        }
        meta.finalizers = sent.finalizers.clone();
        self.admit(caller, Operation::Update, Some(&current), &mut next)
            .await?;
        if next.spec_bytes() != current.spec_bytes() {
            next.meta_mut().generation = current.meta().generation + 1;
        }
        self.write(&kv, &current, next, &what).await
    }

    /// Replaces status only. Without a resource_version it retries on conflicts
    /// (last writer wins); with one it is a compare-and-swap.
    pub async fn update_status(&self, caller: &Caller, mut obj: K) -> Result<K, Status> {
        if K::NAMESPACED && obj.meta().namespace.is_empty() {
            obj.meta_mut().namespace = "default".into();
        }
        let (namespace, name) = (obj.meta().namespace.clone(), obj.meta().name.clone());
        self.authorize(caller, Operation::UpdateStatus, &namespace, &name)
            .await?;
        let what = Self::describe(&namespace, &name);
        for _ in 0..16 {
            let (kv, current) = self.current(&namespace, &name).await?;
            Self::check_version(obj.meta().resource_version, &kv, &what)?;
            let mut next = current.clone();
            next.copy_status_from(&obj);
            validate(&next).map_err(|errs| status(errs.reason(), errs.to_string()))?;
            self.admit(caller, Operation::UpdateStatus, Some(&current), &mut next)
                .await?;
            match self.write(&kv, &current, next, &what).await {
                Err(s) if s.code() == tonic::Code::Aborted && obj.meta().resource_version == 0 => {
                    continue;
                }
                other => return other,
            }
        }
        Err(status(
            Reason::Conflict,
            format!("{what} kept changing; try again"),
        ))
    }

    /// Deletes an object, or marks it for deletion while finalizers remain.
    pub async fn delete(&self, caller: &Caller, request: DeleteRequest) -> Result<K, Status> {
        let namespace = if K::NAMESPACED && request.namespace.is_empty() {
            "default".to_string()
        } else {
            request.namespace.clone()
        };
        self.authorize(caller, Operation::Delete, &namespace, &request.name)
            .await?;
        let what = Self::describe(&namespace, &request.name);
        if K::KIND == "Namespace"
            && hypermesh_api::SYSTEM_NAMESPACES.contains(&request.name.as_str())
        {
            return Err(status(
                Reason::DeleteForbidden,
                format!(
                    "namespace {:?} is a system namespace and cannot be deleted",
                    request.name
                ),
            ));
        }
        let key = Self::key(&namespace, &request.name);
        let expected = (request.resource_version != 0).then_some(request.resource_version);
        let (_, current) = self.current(&namespace, &request.name).await?;
        self.admit_delete(caller, &namespace, &request.name, &current)
            .await?;
        if request.propagation_policy == PropagationPolicy::Orphan as i32 {
            let scope = if K::NAMESPACED {
                namespace.as_str()
            } else {
                ""
            };
            object::orphan_dependents(&self.store, &current.meta().uid, scope).await?;
        }
        let deletion =
            object::delete_object(self.store.as_ref(), &key, &what, expected, K::on_delete).await?;
        let (obj, revision) = match deletion {
            Deletion::Deleted(obj, rev) | Deletion::Pending(obj, rev) => (obj, rev),
        };
        let mut typed = K::decode(obj.encode_to_vec().as_slice())
            .map_err(|e| status(Reason::InternalError, e.to_string()))?;
        typed.meta_mut().resource_version = revision;
        Ok(typed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_uuids() {
        let u = uid();
        assert_eq!(u.len(), 36);
        assert_ne!(u, uid());
    }
}
