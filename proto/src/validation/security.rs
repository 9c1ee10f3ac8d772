//! Validation of the security kinds: Role, RoleBinding, JoinToken, Certificate.

use super::time::Context;
use super::{FieldErrors, Validate};
use crate::v1;

/// The verbs a rule may name.
pub const VERBS: &[&str] = &["get", "list", "watch", "create", "update", "delete", "*"];

/// The subject kinds a RoleBinding may name.
pub const SUBJECT_KINDS: &[&str] = &["User", "Group"];

/// Most rules in one Role (and subjects in one binding), so one object cannot make
/// authorization arbitrarily slow.
const MAX_ENTRIES: usize = 256;

/// The longest a join token may live.
const MAX_TOKEN_TTL_SECS: i64 = 365 * 24 * 3600;

fn check_resource(errs: &mut FieldErrors, path: &str, resource: &str) {
    if resource == "*" {
        return;
    }
    let (plural, sub) = match resource.split_once('/') {
        Some((p, s)) => (p, Some(s)),
        None => (resource, None),
    };
    let known = plural == "*"
        || crate::resource::KIND_INFOS
            .iter()
            .any(|k| k.plural == plural);
    if !known {
        errs.invalid(
            path,
            format!(
                "unknown resource {resource:?} (use a plural kind name such as instances, or *)"
            ),
        );
    }
    if sub.is_some_and(|s| s.is_empty() || s.contains('/')) {
        errs.invalid(
            path,
            format!("{resource:?}: a subresource is one word after a slash"),
        );
    }
}

impl Validate for v1::Role {
    fn validate_kind(&self, _ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        if spec.rules.len() > MAX_ENTRIES {
            errs.invalid("spec.rules", format!("at most {MAX_ENTRIES} rules"));
        }
        for (i, rule) in spec.rules.iter().enumerate() {
            if rule.verbs.is_empty() {
                errs.required(format!("spec.rules[{i}].verbs"));
            }
            if rule.resources.is_empty() {
                errs.required(format!("spec.rules[{i}].resources"));
            }
            for (j, verb) in rule.verbs.iter().enumerate() {
                if !VERBS.contains(&verb.as_str()) {
                    errs.invalid(
                        format!("spec.rules[{i}].verbs[{j}]"),
                        format!("unknown verb {verb:?} (one of {})", VERBS.join(", ")),
                    );
                }
            }
            for (j, resource) in rule.resources.iter().enumerate() {
                check_resource(errs, &format!("spec.rules[{i}].resources[{j}]"), resource);
            }
        }
    }
}

impl Validate for v1::RoleBinding {
    fn validate_kind(&self, _ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        if spec.role.is_empty() {
            errs.required("spec.role");
        }
        if spec.subjects.is_empty() {
            errs.required("spec.subjects");
        }
        if spec.subjects.len() > MAX_ENTRIES {
            errs.invalid("spec.subjects", format!("at most {MAX_ENTRIES} subjects"));
        }
        for (i, subject) in spec.subjects.iter().enumerate() {
            if !SUBJECT_KINDS.contains(&subject.kind.as_str()) {
                errs.invalid(
                    format!("spec.subjects[{i}].kind"),
                    format!("{:?}: must be User or Group", subject.kind),
                );
            }
            if subject.name.is_empty() {
                errs.required(format!("spec.subjects[{i}].name"));
            }
        }
        for (i, ns) in spec.namespaces.iter().enumerate() {
            if let Some(problem) = super::dns_label_problem(ns) {
                errs.invalid(format!("spec.namespaces[{i}]"), problem);
            }
        }
    }
}

impl Validate for v1::JoinToken {
    fn validate_kind(&self, _ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        let hash = &spec.secret_hash;
        if hash.len() != 64
            || !hash
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            errs.invalid(
                "spec.secretHash",
                "must be the lower-case hex SHA-256 of the token's secret (64 digits)",
            );
        }
        match spec.expires {
            None => errs.required("spec.expires"),
            Some(t)
                if t.seconds
                    > crate::time::now()
                        .seconds
                        .saturating_add(MAX_TOKEN_TTL_SECS) =>
            {
                errs.invalid(
                    "spec.expires",
                    "at most one year ahead: tokens are for joining soon",
                );
            }
            Some(_) => {}
        }
        if spec.description.len() > 1024 {
            errs.invalid("spec.description", "at most 1024 bytes");
        }
    }
}

impl Validate for v1::Certificate {
    fn validate_kind(&self, _ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        if spec.identity.is_empty() {
            errs.required("spec.identity");
        }
    }
}
