//! Namespace: nothing beyond its metadata.

use crate::v1;

use super::time::Context;
use super::{FieldErrors, Validate};

impl Validate for v1::Namespace {
    fn validate_kind(&self, _ctx: &Context, _errs: &mut FieldErrors) {}
}
