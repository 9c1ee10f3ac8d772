//! Workload: replicas, selector and template (which must carry the selector's
//! labels), update strategy, gang, and the status the controller writes (conditions,
//! revision history times).

use crate::reason::Reason;
use crate::v1;

use super::fields::{check_enum, check_int_or_percent};
use super::meta::check_conditions;
use super::names::check_labels;
use super::placement::validate_placement;
use super::time::{Context, check_timestamp};
use super::{FieldErrors, MAX_REPLICAS, Validate};

/// Longest `spec.progressDeadlineSeconds`: one day.
pub const MAX_PROGRESS_DEADLINE_SECONDS: i32 = 86_400;

impl Validate for v1::Workload {
    fn validate_kind(&self, ctx: &Context, errs: &mut FieldErrors) {
        match &self.spec {
            Some(spec) => check_spec(errs, spec),
            None => errs.required("spec"),
        }
        if let Some(status) = &self.status {
            check_status(errs, ctx, status);
        }
    }
}

fn check_spec(errs: &mut FieldErrors, spec: &v1::WorkloadSpec) {
    if !(0..=MAX_REPLICAS).contains(&spec.replicas) {
        errs.invalid(
            "spec.replicas",
            format!(
                "{} is out of range: must be 0 to {MAX_REPLICAS}",
                spec.replicas
            ),
        );
    }
    if !(0..=MAX_PROGRESS_DEADLINE_SECONDS).contains(&spec.progress_deadline_seconds) {
        errs.invalid(
            "spec.progressDeadlineSeconds",
            format!(
                "{} is out of range: must be 0 (the default, 600) to {MAX_PROGRESS_DEADLINE_SECONDS}",
                spec.progress_deadline_seconds
            ),
        );
    }
    if spec.selector.is_empty() {
        errs.push(
            "spec.selector",
            Reason::FieldRequired,
            "must select at least one label",
        );
    }
    check_labels(errs, "spec.selector", &spec.selector);
    let Some(t) = &spec.template else {
        return errs.required("spec.template");
    };
    check_labels(errs, "spec.template.labels", &t.labels);
    if let Some((k, v)) = spec
        .selector
        .iter()
        .find(|(k, v)| t.labels.get(*k) != Some(*v))
    {
        errs.invalid(
            "spec.template.labels",
            format!("must match spec.selector: missing {k}={v}"),
        );
    }
    validate_placement(errs, "spec.template", t.into());
    if let Some(s) = &spec.strategy {
        check_strategy(errs, s);
    }
    if let Some(g) = spec
        .gang
        .as_ref()
        .filter(|g| g.min_available < 1 || g.min_available > spec.replicas.max(1))
    {
        errs.invalid(
            "spec.gang.minAvailable",
            format!(
                "{} must be between 1 and spec.replicas ({})",
                g.min_available, spec.replicas
            ),
        );
    }
}

fn check_strategy(errs: &mut FieldErrors, s: &v1::UpdateStrategy) {
    check_enum::<v1::UpdateStrategyType>(errs, "spec.strategy.type", s.r#type, false);
    check_int_or_percent(errs, "spec.strategy.maxSurge", &s.max_surge);
    check_int_or_percent(errs, "spec.strategy.maxUnavailable", &s.max_unavailable);
    let zero = |v: &str| v.trim_end_matches('%') == "0";
    if zero(&s.max_surge) && zero(&s.max_unavailable) {
        errs.invalid(
            "spec.strategy",
            "maxSurge and maxUnavailable cannot both be 0",
        );
    }
}

fn check_status(errs: &mut FieldErrors, ctx: &Context, status: &v1::WorkloadStatus) {
    check_conditions(errs, ctx, "status.conditions", &status.conditions);
    for (i, r) in status.history.iter().enumerate() {
        check_timestamp(
            errs,
            ctx,
            &format!("status.history[{i}].created"),
            r.created.as_ref(),
        );
    }
}
