//! Node: taints (with when they were added), conditions, capacity and allocatable.

use crate::v1;

use super::fields::{check_enum, check_quantity};
use super::meta::check_conditions;
use super::names::{label_key_problem, label_value_problem};
use super::time::{Context, check_timestamp};
use super::{FieldErrors, Validate};

impl Validate for v1::Node {
    fn validate_kind(&self, ctx: &Context, errs: &mut FieldErrors) {
        if let Some(spec) = &self.spec {
            for (i, t) in spec.taints.iter().enumerate() {
                let path = format!("spec.taints[{i}]");
                if let Some(p) = label_key_problem(&t.key) {
                    errs.invalid(format!("{path}.key"), p);
                }
                if let Some(p) = label_value_problem(&t.value) {
                    errs.invalid(format!("{path}.value"), p);
                }
                check_enum::<v1::TaintEffect>(errs, &format!("{path}.effect"), t.effect, true);
                check_timestamp(
                    errs,
                    ctx,
                    &format!("{path}.timeAdded"),
                    t.time_added.as_ref(),
                );
            }
        }
        if let Some(status) = &self.status {
            for (name, map) in [
                ("capacity", &status.capacity),
                ("allocatable", &status.allocatable),
            ] {
                for (k, v) in map {
                    check_quantity(errs, &format!("status.{name}[{k}]"), v);
                }
            }
            check_conditions(errs, ctx, "status.conditions", &status.conditions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use super::*;

    #[test]
    fn taints_added_in_the_future_are_refused() {
        let node = v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: "n1".into(),
                ..Default::default()
            }),
            spec: Some(v1::NodeSpec {
                taints: vec![v1::Taint {
                    key: "hypermesh.io/unreachable".into(),
                    effect: v1::TaintEffect::NoExecute as i32,
                    time_added: Some(pbjson_types::Timestamp {
                        seconds: i64::MAX / 2,
                        nanos: 0,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let err = validate(&node).expect_err("invalid");
        assert_eq!(err.0[0].field, "spec.taints[0].timeAdded");
    }
}
