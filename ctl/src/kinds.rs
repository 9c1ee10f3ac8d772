//! Per-kind dispatch: resolves the kind named on the command line and runs a verb's
//! generic code (`fn visit<K: Kind>`) for that kind, so each verb is written once.

use anyhow::{Result, bail};
use hypermesh_api::resource::{KindInfo, find_kind};
use hypermesh_api::v1;
use hypermesh_api::{DynObject, Resource};

use crate::columns::Columns;

/// Everything hmctl needs of a kind: the API's [`Resource`], how it prints, and the
/// conversions to and from [`DynObject`].
pub trait Kind: Resource + Columns {
    /// Wraps the object.
    fn into_dyn(self) -> DynObject;
    /// Unwraps an object of this kind; `None` for other kinds.
    fn from_dyn(obj: DynObject) -> Option<Self>;
}

macro_rules! impl_kind {
    ($ty:ident) => {
        impl Kind for v1::$ty {
            fn into_dyn(self) -> DynObject {
                DynObject::$ty(self)
            }
            fn from_dyn(obj: DynObject) -> Option<Self> {
                match obj {
                    DynObject::$ty(o) => Some(o),
                    _ => None,
                }
            }
        }
    };
}

hypermesh_api::for_each_kind!(impl_kind);

/// A verb's code for one kind, chosen at run time by [`dispatch`].
pub trait KindVisitor {
    /// What the verb returns.
    type Output;
    /// Runs the verb for kind `K`.
    #[allow(async_fn_in_trait)]
    async fn visit<K: Kind>(self) -> Self::Output;
}

/// Runs `visitor` for the kind called `kind` (its exact `KIND`, e.g. `Workload`).
pub async fn dispatch<V: KindVisitor>(kind: &str, visitor: V) -> Result<V::Output> {
    macro_rules! arm {
        ($ty:ident) => {
            if kind == <v1::$ty as Resource>::KIND {
                return Ok(visitor.visit::<v1::$ty>().await);
            }
        };
    }
    hypermesh_api::for_each_kind!(arm);
    bail!("hmctl does not know the kind {kind:?}")
}

/// What `hmctl get all` lists: the namespaced kinds that make up an application.
pub const ALL: &[&str] = &["Instance", "Route", "Workload"];

/// Resolves a kind as typed by the user (`wl`, `workloads`, `Workload`). Kinds are
/// known to hmctl itself, so an unknown one is a client-side error.
pub fn resolve(name: &str) -> Result<&'static KindInfo> {
    match find_kind(name) {
        Some(info) => Ok(info),
        None => bail!(
            "unknown resource type {name:?}: `hmctl api-resources` lists the kinds and \
             their short names"
        ),
    }
}

/// Resolves `wl,inst` or `all` (see [`ALL`]) into kinds, each once, in the order
/// given; every name is checked before anything is sent.
pub fn resolve_many(list: &str) -> Result<Vec<&'static KindInfo>> {
    let mut kinds: Vec<&'static KindInfo> = Vec::new();
    for name in list.split(',') {
        if name.is_empty() {
            bail!("{list:?}: empty resource type; separate kinds with single commas");
        }
        let infos = if name.eq_ignore_ascii_case("all") {
            ALL.iter().map(|k| resolve(k)).collect::<Result<Vec<_>>>()?
        } else {
            vec![resolve(name)?]
        };
        for info in infos {
            if !kinds.iter().any(|k| k.kind == info.kind) {
                kinds.push(info);
            }
        }
    }
    Ok(kinds)
}

/// Resolves `KIND` or `KIND/NAME` plus further names into the kind and every name.
pub fn resolve_with_names(
    kind_arg: &str,
    names: &[String],
) -> Result<(&'static KindInfo, Vec<String>)> {
    let (kind, first) = match kind_arg.split_once('/') {
        Some((kind, name)) if !name.is_empty() => (kind, Some(name.to_string())),
        Some(_) => bail!("{kind_arg:?}: expected KIND/NAME"),
        None => (kind_arg, None),
    };
    let info = resolve(kind)?;
    Ok((
        info,
        first.into_iter().chain(names.iter().cloned()).collect(),
    ))
}

/// `workload.hypermesh.io/web`: how hmctl names an object in its output.
pub fn display_name(kind: &str, name: &str) -> String {
    format!("{}.hypermesh.io/{name}", kind.to_ascii_lowercase())
}

/// The namespace a request for a kind goes to: none for cluster-scoped kinds, every
/// namespace with `-A`, else `-n` or `default`.
pub fn request_namespace(info: &KindInfo, flag: Option<&str>, all: bool) -> String {
    if !info.namespaced || all {
        String::new()
    } else {
        flag.unwrap_or(crate::DEFAULT_NAMESPACE).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plural;
    impl KindVisitor for Plural {
        type Output = &'static str;
        async fn visit<K: Kind>(self) -> &'static str {
            K::PLURAL
        }
    }

    #[tokio::test]
    async fn dispatches_every_kind() {
        for info in hypermesh_api::resource::KIND_INFOS {
            let plural = dispatch(info.kind, Plural).await.unwrap();
            assert_eq!(plural, info.plural);
        }
        assert!(dispatch("Pod", Plural).await.is_err());
    }

    #[test]
    fn resolves_names_and_slash_form() {
        let (info, names) = resolve_with_names("wl/web", &["api".to_string()]).unwrap();
        assert_eq!(info.kind, "Workload");
        assert_eq!(names, ["web", "api"]);
        let err = resolve("pods").unwrap_err().to_string();
        assert!(err.starts_with("unknown resource type \"pods\": "), "{err}");
        assert!(!err.contains("server"), "{err}");
    }

    #[test]
    fn resolves_several_kinds_and_all() {
        let kinds: Vec<_> = resolve_many("wl,inst,workloads")
            .unwrap()
            .iter()
            .map(|k| k.kind)
            .collect();
        assert_eq!(kinds, ["Workload", "Instance"]);
        let all: Vec<_> = resolve_many("all")
            .unwrap()
            .iter()
            .map(|k| k.kind)
            .collect();
        assert_eq!(all, ALL);
        let err = resolve_many("wl,pods").unwrap_err().to_string();
        assert!(err.starts_with("unknown resource type \"pods\""), "{err}");
        assert!(resolve_many("wl,").is_err());
    }

    #[test]
    fn dyn_round_trip() {
        let w = v1::Workload::default();
        let d = w.clone().into_dyn();
        assert_eq!(d.kind(), "Workload");
        assert_eq!(v1::Workload::from_dyn(d.clone()), Some(w));
        assert_eq!(v1::Node::from_dyn(d), None);
    }

    #[test]
    fn names_objects_like_kubectl() {
        assert_eq!(display_name("Workload", "web"), "workload.hypermesh.io/web");
    }
}
