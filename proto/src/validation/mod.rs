//! Admission checks without I/O: every error names the field path and the reason,
//! e.g. `spec.template.containers[0].resources.cpu: invalid quantity "lots" ...`.
//!
//! # Layout
//! - [`names`]: DNS names, label keys and values.
//! - `fields`, `time`: scalar checks shared by kinds; `time` also bounds every
//!   duration and timestamp (see [`crate::time`] for the limits).
//! - `meta`: metadata and conditions; `placement` and `container`: what Instances
//!   and Instance templates share.
//! - one module per kind with its [`Validate`] implementation: `namespace`, `node`,
//!   `asset`, `workload`, `instance`, `route`, `secret`, `lease`, `event`.

mod asset;
mod container;
mod event;
mod fields;
mod instance;
mod lease;
mod meta;
pub mod names;
mod namespace;
mod node;
mod placement;
mod route;
mod secret;
mod security;
mod time;
mod workload;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::reason::Reason;
use crate::resource::Resource;

pub use self::names::{
    dns_label_problem, dns_subdomain_problem, label_key_problem, label_value_problem, shorten_name,
};
pub use self::security::{SUBJECT_KINDS, VERBS};
pub use self::time::Context;

/// Most replicas a Workload may ask for.
pub const MAX_REPLICAS: i32 = 100_000;
/// Largest total size of an object's annotations.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path such as `spec.template.containers[0].image`.
    pub field: String,
    /// The stable reason.
    pub reason: Reason,
    /// What is wrong and what is expected.
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.detail)
    }
}

/// Every problem found in one object; empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    fn push(&mut self, field: impl Into<String>, reason: Reason, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason,
            detail: detail.into(),
        });
    }

    fn required(&mut self, field: impl Into<String>) {
        self.push(field, Reason::FieldRequired, "required");
    }

    fn invalid(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.push(field, Reason::FieldInvalid, detail);
    }

    /// True when there is no problem.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The reason of the first problem (what a single status carries).
    pub fn reason(&self) -> Reason {
        self.0.first().map_or(Reason::FieldInvalid, |e| e.reason)
    }

    /// `Ok` when empty.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for FieldErrors {}

/// Kind-specific checks of spec (and status where clients write it).
pub trait Validate: Resource {
    /// Adds every problem of the kind-specific fields to `errs`, judging times
    /// against `ctx`.
    fn validate_kind(&self, ctx: &Context, errs: &mut FieldErrors);
}

/// Checks an object: metadata, then its kind's fields, against the current time.
pub fn validate<K: Validate>(obj: &K) -> Result<(), FieldErrors> {
    validate_at(obj, &Context::now())
}

/// [`validate`], judging timestamps against `ctx` instead of the current time.
pub fn validate_at<K: Validate>(obj: &K, ctx: &Context) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    meta::validate_meta(obj, ctx, &mut errs);
    obj.validate_kind(ctx, &mut errs);
    errs.into_result()
}
