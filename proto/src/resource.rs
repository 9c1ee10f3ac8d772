//! The [`Resource`] trait: everything generic code (the store-backed server, the
//! client, manifests, `hmctl`) needs to know about a kind, implemented once per kind
//! by the `resources!` table below. [`DynObject`] holds an object of any kind.

use std::sync::LazyLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::v1::{
    self, Asset, AssetList, AssetWatchEvent, Event, EventList, EventWatchEvent, Instance,
    InstanceList, InstanceWatchEvent, Lease, LeaseList, LeaseWatchEvent, Namespace, NamespaceList,
    NamespaceWatchEvent, Node, NodeList, NodeWatchEvent, ObjectMeta, Route, RouteList,
    RouteWatchEvent, Secret, SecretList, SecretWatchEvent, WatchEventType, Workload, WorkloadList,
    WorkloadWatchEvent,
};
use crate::v1::{
    Certificate, CertificateList, CertificateWatchEvent, JoinToken, JoinTokenList,
    JoinTokenWatchEvent, Role, RoleBinding, RoleBindingList, RoleBindingWatchEvent, RoleList,
    RoleWatchEvent,
};

static EMPTY_META: LazyLock<ObjectMeta> = LazyLock::new(ObjectMeta::default);

/// Field selector paths every kind supports.
pub const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// A kind of the API: a protobuf message with `metadata`, `spec` and `status`.
pub trait Resource:
    prost::Message + Default + Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// `Workload`.
    const KIND: &'static str;
    /// `workloads`, used in store keys and by `hmctl`.
    const PLURAL: &'static str;
    /// Short names `hmctl` accepts, e.g. `wl`.
    const SHORT_NAMES: &'static [&'static str];
    /// False for cluster-scoped kinds (Namespace, Node, Asset).
    const NAMESPACED: bool;
    /// Fully qualified gRPC service, e.g. `hypermesh.v1.WorkloadService`.
    const SERVICE: &'static str;
    /// Field selector paths this kind supports besides [`COMMON_FIELDS`].
    const FIELDS: &'static [&'static str];

    /// The `<Kind>List` response message.
    type List: prost::Message + Default + Send + 'static;
    /// The `<Kind>WatchEvent` stream message.
    type WatchEvent: prost::Message + Default + Send + 'static;

    /// Metadata (an empty one when unset).
    fn meta(&self) -> &ObjectMeta;
    /// Metadata, created when unset.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// The encoded spec; equal bytes mean an equal spec (maps are ordered).
    fn spec_bytes(&self) -> Vec<u8>;
    /// The encoded status.
    fn status_bytes(&self) -> Vec<u8>;
    /// Replaces the spec with `other`'s.
    fn copy_spec_from(&mut self, other: &Self);
    /// Replaces the status with `other`'s.
    fn copy_status_from(&mut self, other: &Self);
    /// The value of a kind-specific field selector path (see [`Resource::FIELDS`]).
    fn kind_field(&self, field: &str) -> Option<String>;

    /// Builds the list response.
    fn make_list(items: Vec<Self>, resource_version: u64, continue_token: String) -> Self::List;
    /// Takes a list response apart: items, resource version, continue token.
    fn split_list(list: Self::List) -> (Vec<Self>, u64, String);
    /// Builds a watch event.
    fn make_event(kind: WatchEventType, object: Self) -> Self::WatchEvent;
    /// Takes a watch event apart.
    fn split_event(event: Self::WatchEvent) -> (WatchEventType, Self);

    /// The value of any supported field selector path.
    fn field(&self, field: &str) -> String {
        match field {
            "metadata.name" => self.meta().name.clone(),
            "metadata.namespace" => self.meta().namespace.clone(),
            other => self.kind_field(other).unwrap_or_default(),
        }
    }

    /// Every field selector path this kind supports.
    fn supported_fields() -> Vec<&'static str> {
        COMMON_FIELDS.iter().chain(Self::FIELDS).copied().collect()
    }
}

/// The proto name of an enum value (`RUNNING`), or the number when unknown.
fn enum_name<E: TryFrom<i32>>(value: i32, name: impl Fn(E) -> &'static str) -> String {
    E::try_from(value)
        .map(name)
        .map_or_else(|_| value.to_string(), str::to_string)
}

fn instance_field(o: &Instance, field: &str) -> Option<String> {
    match field {
        "spec.nodeName" => Some(o.spec.as_ref()?.node_name.clone()),
        "status.phase" => Some(enum_name(
            o.status.as_ref().map_or(0, |s| s.phase),
            |p: v1::InstancePhase| p.as_str_name(),
        )),
        _ => None,
    }
}

fn asset_field(o: &Asset, field: &str) -> Option<String> {
    let spec = o.spec.as_ref()?;
    match field {
        "spec.nodeName" => Some(spec.node_name.clone()),
        "spec.type" => Some(enum_name(spec.r#type, |t: v1::AssetType| t.as_str_name())),
        _ => None,
    }
}

fn node_field(o: &Node, field: &str) -> Option<String> {
    match field {
        "spec.unschedulable" => Some(o.spec.as_ref().is_some_and(|s| s.unschedulable).to_string()),
        _ => None,
    }
}

fn namespace_field(o: &Namespace, field: &str) -> Option<String> {
    match field {
        "status.phase" => Some(enum_name(
            o.status.as_ref().map_or(0, |s| s.phase),
            |p: v1::NamespacePhase| p.as_str_name(),
        )),
        _ => None,
    }
}

fn event_field(o: &Event, field: &str) -> Option<String> {
    let spec = o.spec.as_ref()?;
    let involved = spec.involved_object.clone().unwrap_or_default();
    match field {
        "spec.involvedObject.kind" => Some(involved.kind),
        "spec.involvedObject.name" => Some(involved.name),
        "spec.involvedObject.namespace" => Some(involved.namespace),
        "spec.involvedObject.uid" => Some(involved.uid),
        "spec.reason" => Some(spec.reason.clone()),
        "spec.type" => Some(spec.r#type.clone()),
        _ => None,
    }
}

fn certificate_field(o: &Certificate, field: &str) -> Option<String> {
    let spec = o.spec.as_ref()?;
    match field {
        "spec.identity" => Some(spec.identity.clone()),
        "spec.revoked" => Some(spec.revoked.to_string()),
        _ => None,
    }
}

fn role_binding_field(o: &RoleBinding, field: &str) -> Option<String> {
    match field {
        "spec.role" => Some(o.spec.as_ref()?.role.clone()),
        _ => None,
    }
}

fn no_fields<T>(_: &T, _: &str) -> Option<String> {
    None
}

macro_rules! resources {
    ($($ty:ident, $list:ident, $event:ident {
        plural: $plural:literal,
        short: [$($short:literal),*],
        namespaced: $ns:literal,
        fields: [$($field:literal),*],
        field_value: $fv:expr,
    })*) => {
        $(
        impl Resource for $ty {
            const KIND: &'static str = stringify!($ty);
            const PLURAL: &'static str = $plural;
            const SHORT_NAMES: &'static [&'static str] = &[$($short),*];
            const NAMESPACED: bool = $ns;
            const SERVICE: &'static str = concat!("hypermesh.v1.", stringify!($ty), "Service");
            const FIELDS: &'static [&'static str] = &[$($field),*];
            type List = $list;
            type WatchEvent = $event;

            fn meta(&self) -> &ObjectMeta {
                self.metadata.as_ref().unwrap_or(&EMPTY_META)
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                self.metadata.get_or_insert_with(ObjectMeta::default)
            }
            fn spec_bytes(&self) -> Vec<u8> {
                self.spec.as_ref().map(prost::Message::encode_to_vec).unwrap_or_default()
            }
            fn status_bytes(&self) -> Vec<u8> {
                self.status.as_ref().map(prost::Message::encode_to_vec).unwrap_or_default()
            }
            fn copy_spec_from(&mut self, other: &Self) {
                self.spec = other.spec.clone();
            }
            fn copy_status_from(&mut self, other: &Self) {
                self.status = other.status.clone();
            }
            fn kind_field(&self, field: &str) -> Option<String> {
                let lookup: fn(&$ty, &str) -> Option<String> = $fv;
                lookup(self, field)
            }
            fn make_list(items: Vec<Self>, resource_version: u64, continue_token: String) -> $list {
                $list { resource_version, continue_token, items }
            }
            fn split_list(list: $list) -> (Vec<Self>, u64, String) {
                (list.items, list.resource_version, list.continue_token)
            }
            fn make_event(kind: WatchEventType, object: Self) -> $event {
                $event { r#type: kind as i32, object: Some(object) }
            }
            fn split_event(event: $event) -> (WatchEventType, Self) {
                let kind = WatchEventType::try_from(event.r#type).unwrap_or(WatchEventType::Unspecified);
                (kind, event.object.unwrap_or_default())
            }
        }
        )*

        /// An object of any kind, e.g. one document of a manifest.
        #[derive(Debug, Clone, PartialEq)]
        pub enum DynObject {
            $(
                #[allow(missing_docs)]
                $ty($ty),
            )*
        }

        impl DynObject {
            /// Every kind name, in the order Namespaces-first apply wants.
            pub const KINDS: &'static [&'static str] = &[$(stringify!($ty)),*];

            /// The kind name, e.g. `Workload`.
            pub fn kind(&self) -> &'static str {
                match self { $(DynObject::$ty(_) => <$ty as Resource>::KIND,)* }
            }

            /// The object's metadata.
            pub fn meta(&self) -> &ObjectMeta {
                match self { $(DynObject::$ty(o) => o.meta(),)* }
            }

            /// The object's metadata, mutable.
            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $(DynObject::$ty(o) => o.meta_mut(),)* }
            }

            /// True for namespaced kinds.
            pub fn namespaced(&self) -> bool {
                match self { $(DynObject::$ty(_) => <$ty as Resource>::NAMESPACED,)* }
            }

            /// Canonical protobuf-JSON of the object (without apiVersion/kind).
            pub fn to_json(&self) -> serde_json::Value {
                let value = match self { $(DynObject::$ty(o) => serde_json::to_value(o),)* };
                value.unwrap_or(serde_json::Value::Null)
            }

            /// Deserialises canonical protobuf-JSON of kind `kind`; errors carry the field path.
            pub fn from_json(kind: &str, value: serde_json::Value) -> Result<Self, crate::json::FieldPathError> {
                match kind {
                    $(stringify!($ty) => crate::json::deserialize_with_path(value).map(DynObject::$ty),)*
                    other => Err(crate::json::FieldPathError {
                        path: "kind".into(),
                        message: format!("unknown kind {other:?} (known kinds: {})", Self::KINDS.join(", ")),
                    }),
                }
            }
        }

        /// Static facts about one kind, for code that picks a kind by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct KindInfo {
            /// `Workload`.
            pub kind: &'static str,
            /// `workloads`.
            pub plural: &'static str,
            /// e.g. `["wl"]`.
            pub short_names: &'static [&'static str],
            /// False for cluster-scoped kinds.
            pub namespaced: bool,
            /// `hypermesh.v1.WorkloadService`.
            pub service: &'static str,
        }

        /// Every kind of the API.
        pub const KIND_INFOS: &[KindInfo] = &[$(KindInfo {
            kind: <$ty as Resource>::KIND,
            plural: <$ty as Resource>::PLURAL,
            short_names: <$ty as Resource>::SHORT_NAMES,
            namespaced: <$ty as Resource>::NAMESPACED,
            service: <$ty as Resource>::SERVICE,
        },)*];

        /// Calls `$callback!(Type)` ... for code generated per kind elsewhere.
        #[macro_export]
        macro_rules! for_each_kind {
            ($callback:ident) => { $($callback!($ty);)* };
        }
    };
}

resources! {
    Namespace, NamespaceList, NamespaceWatchEvent {
        plural: "namespaces", short: ["ns"], namespaced: false,
        fields: ["status.phase"], field_value: namespace_field,
    }
    Node, NodeList, NodeWatchEvent {
        plural: "nodes", short: ["no"], namespaced: false,
        fields: ["spec.unschedulable"], field_value: node_field,
    }
    Asset, AssetList, AssetWatchEvent {
        plural: "assets", short: ["as"], namespaced: false,
        fields: ["spec.nodeName", "spec.type"], field_value: asset_field,
    }
    Secret, SecretList, SecretWatchEvent {
        plural: "secrets", short: ["sec"], namespaced: true,
        fields: [], field_value: no_fields,
    }
    Route, RouteList, RouteWatchEvent {
        plural: "routes", short: ["rt"], namespaced: true,
        fields: [], field_value: no_fields,
    }
    Workload, WorkloadList, WorkloadWatchEvent {
        plural: "workloads", short: ["wl"], namespaced: true,
        fields: [], field_value: no_fields,
    }
    Instance, InstanceList, InstanceWatchEvent {
        plural: "instances", short: ["inst"], namespaced: true,
        fields: ["spec.nodeName", "status.phase"], field_value: instance_field,
    }
    Lease, LeaseList, LeaseWatchEvent {
        plural: "leases", short: [], namespaced: true,
        fields: [], field_value: no_fields,
    }
    Event, EventList, EventWatchEvent {
        plural: "events", short: ["ev"], namespaced: true,
        fields: ["spec.involvedObject.kind", "spec.involvedObject.name", "spec.involvedObject.namespace", "spec.involvedObject.uid", "spec.reason", "spec.type"],
        field_value: event_field,
    }
    Role, RoleList, RoleWatchEvent {
        plural: "roles", short: [], namespaced: false,
        fields: [], field_value: no_fields,
    }
    RoleBinding, RoleBindingList, RoleBindingWatchEvent {
        plural: "rolebindings", short: ["rb"], namespaced: false,
        fields: ["spec.role"], field_value: role_binding_field,
    }
    JoinToken, JoinTokenList, JoinTokenWatchEvent {
        plural: "jointokens", short: ["token", "tokens"], namespaced: false,
        fields: [], field_value: no_fields,
    }
    Certificate, CertificateList, CertificateWatchEvent {
        plural: "certificates", short: ["cert", "certs"], namespaced: false,
        fields: ["spec.identity", "spec.revoked"], field_value: certificate_field,
    }
}

/// Looks a kind up by name, plural, singular lowercase or short name, case-insensitively
/// (`Workload`, `workloads`, `workload`, `wl`).
pub fn find_kind(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix(".hypermesh.io").unwrap_or(&lower);
    KIND_INFOS.iter().find(|k| {
        k.kind.eq_ignore_ascii_case(lower) || k.plural == lower || k.short_names.contains(&lower)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kinds_by_every_name() {
        for name in [
            "Workload",
            "workloads",
            "workload",
            "wl",
            "WL",
            "workloads.hypermesh.io",
        ] {
            assert_eq!(find_kind(name).map(|k| k.kind), Some("Workload"), "{name}");
        }
        assert_eq!(find_kind("inst").map(|k| k.kind), Some("Instance"));
        assert_eq!(find_kind("no").map(|k| k.kind), Some("Node"));
        assert_eq!(find_kind("ns").map(|k| k.kind), Some("Namespace"));
        assert!(find_kind("pods").is_none());
    }

    #[test]
    fn field_values_use_enum_names() {
        let inst = Instance {
            spec: Some(v1::InstanceSpec {
                node_name: "n1".into(),
                ..Default::default()
            }),
            status: Some(v1::InstanceStatus {
                phase: v1::InstancePhase::Running as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(inst.field("spec.nodeName"), "n1");
        assert_eq!(inst.field("status.phase"), "RUNNING");
    }
}
