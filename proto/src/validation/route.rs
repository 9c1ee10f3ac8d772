//! Route: the selector and the ports it exposes.

use crate::reason::Reason;
use crate::v1;

use super::fields::{check_enum, check_port};
use super::names::check_labels;
use super::time::Context;
use super::{FieldErrors, Validate};

impl Validate for v1::Route {
    fn validate_kind(&self, _ctx: &Context, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        check_labels(errs, "spec.selector", &spec.selector);
        if spec.ports.is_empty() {
            errs.push(
                "spec.ports",
                Reason::FieldRequired,
                "at least one port is required",
            );
        }
        for (i, p) in spec.ports.iter().enumerate() {
            check_port(errs, &format!("spec.ports[{i}].port"), p.port);
            if p.target_port != 0 {
                check_port(errs, &format!("spec.ports[{i}].targetPort"), p.target_port);
            }
            check_enum::<v1::Protocol>(
                errs,
                &format!("spec.ports[{i}].protocol"),
                p.protocol,
                false,
            );
        }
    }
}
