//! `metadata`: name and namespace, labels, annotations, finalizers, owner references
//! and the server-kept timestamps, the same for every kind; and conditions, which
//! several kinds' statuses share.

use std::collections::BTreeSet;

use crate::reason::Reason;
use crate::resource::Resource;
use crate::v1;

use super::names::{check_labels, dns_label_problem, dns_subdomain_problem, label_key_problem};
use super::time::{Context, check_timestamp};
use super::{FieldErrors, MAX_ANNOTATIONS_BYTES};

/// Checks metadata: name, labels, annotations, finalizers, owner references, times.
pub(super) fn validate_meta<K: Resource>(obj: &K, ctx: &Context, errs: &mut FieldErrors) {
    let meta = obj.meta();
    check_names::<K>(meta, errs);
    check_labels(errs, "metadata.labels", &meta.labels);
    check_annotations(meta, errs);
    check_finalizers(meta, errs);
    check_owners(meta, errs);
    check_timestamp(
        errs,
        ctx,
        "metadata.creationTimestamp",
        meta.creation_timestamp.as_ref(),
    );
    check_timestamp(
        errs,
        ctx,
        "metadata.deletionTimestamp",
        meta.deletion_timestamp.as_ref(),
    );
}

fn check_names<K: Resource>(meta: &v1::ObjectMeta, errs: &mut FieldErrors) {
    let name_problem = if K::KIND == "Namespace" {
        dns_label_problem(&meta.name)
    } else {
        dns_subdomain_problem(&meta.name)
    };
    if let Some(p) = name_problem {
        let reason = if meta.name.is_empty() {
            Reason::FieldRequired
        } else {
            Reason::NameInvalid
        };
        errs.push("metadata.name", reason, p);
    }
    if K::NAMESPACED {
        if let Some(p) = dns_label_problem(&meta.namespace) {
            let reason = if meta.namespace.is_empty() {
                Reason::FieldRequired
            } else {
                Reason::NameInvalid
            };
            errs.push("metadata.namespace", reason, p);
        }
    } else if !meta.namespace.is_empty() {
        errs.invalid(
            "metadata.namespace",
            format!("{} is cluster-scoped: namespace must be empty", K::KIND),
        );
    }
}

fn check_annotations(meta: &v1::ObjectMeta, errs: &mut FieldErrors) {
    let annotation_bytes: usize = meta
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotation_bytes > MAX_ANNOTATIONS_BYTES {
        errs.push(
            "metadata.annotations",
            Reason::TooLarge,
            format!("{annotation_bytes} bytes in total, at most {MAX_ANNOTATIONS_BYTES}"),
        );
    }
    for k in meta.annotations.keys() {
        if let Some(p) = label_key_problem(k) {
            errs.invalid(
                format!("metadata.annotations[{k}]"),
                format!("invalid key: {p}"),
            );
        }
    }
}

fn check_finalizers(meta: &v1::ObjectMeta, errs: &mut FieldErrors) {
    let mut seen = BTreeSet::new();
    for (i, f) in meta.finalizers.iter().enumerate() {
        if let Some(p) = label_key_problem(f) {
            errs.invalid(format!("metadata.finalizers[{i}]"), p);
        }
        if !seen.insert(f) {
            errs.invalid(
                format!("metadata.finalizers[{i}]"),
                format!("duplicate finalizer {f:?}"),
            );
        }
    }
}

fn check_owners(meta: &v1::ObjectMeta, errs: &mut FieldErrors) {
    for (i, r) in meta.owner_references.iter().enumerate() {
        let path = format!("metadata.ownerReferences[{i}]");
        if crate::resource::find_kind(&r.kind).is_none() {
            errs.invalid(format!("{path}.kind"), format!("unknown kind {:?}", r.kind));
        }
        if r.name.is_empty() {
            errs.required(format!("{path}.name"));
        }
        if r.uid.is_empty() {
            errs.required(format!("{path}.uid"));
        }
    }
    let controllers = meta
        .owner_references
        .iter()
        .filter(|r| r.controller)
        .count();
    if controllers > 1 {
        errs.invalid(
            "metadata.ownerReferences",
            "at most one owner may be the controller",
        );
    }
}

/// Checks a status's conditions at `path` (`status.conditions`).
pub(super) fn check_conditions(
    errs: &mut FieldErrors,
    ctx: &Context,
    path: &str,
    conditions: &[v1::Condition],
) {
    for (i, c) in conditions.iter().enumerate() {
        check_timestamp(
            errs,
            ctx,
            &format!("{path}[{i}].lastTransitionTime"),
            c.last_transition_time.as_ref(),
        );
    }
}
