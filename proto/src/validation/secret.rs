//! Secret: data keys, which become file names in secret volumes.

use crate::v1;

use super::time::Context;
use super::{FieldErrors, Validate};

impl Validate for v1::Secret {
    fn validate_kind(&self, _ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else { return };
        for k in spec.data.keys() {
            let ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                errs.invalid(
                    format!("spec.data[{k}]"),
                    "keys must be alphanumerics, '-', '_' or '.'",
                );
            } else if k == "." || k.starts_with("..") {
                // Keys become file names in secret volumes.
                errs.invalid(
                    format!("spec.data[{k}]"),
                    "keys must not be '.' or start with '..'",
                );
            }
        }
    }
}
