//! Event: what it is about, its type, and when it happened.

use crate::v1;

use super::time::{Context, check_timestamp};
use super::{FieldErrors, Validate};

impl Validate for v1::Event {
    fn validate_kind(&self, ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        match &spec.involved_object {
            None => errs.required("spec.involvedObject"),
            Some(o) => {
                if o.kind.is_empty() {
                    errs.required("spec.involvedObject.kind");
                }
                if o.name.is_empty() {
                    errs.required("spec.involvedObject.name");
                }
            }
        }
        if !matches!(spec.r#type.as_str(), "" | "Normal" | "Warning") {
            errs.invalid(
                "spec.type",
                format!("{:?} must be Normal or Warning", spec.r#type),
            );
        }
        check_timestamp(
            errs,
            ctx,
            "spec.firstTimestamp",
            spec.first_timestamp.as_ref(),
        );
        check_timestamp(
            errs,
            ctx,
            "spec.lastTimestamp",
            spec.last_timestamp.as_ref(),
        );
    }
}
