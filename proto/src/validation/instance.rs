//! Instance: its placement fields, the node it is bound to, and the status agents
//! write (phase, conditions, start and container times).

use crate::reason::Reason;
use crate::v1;

use super::fields::check_enum;
use super::meta::check_conditions;
use super::names::dns_subdomain_problem;
use super::placement::validate_placement;
use super::time::{Context, check_timestamp};
use super::{FieldErrors, Validate};

impl Validate for v1::Instance {
    fn validate_kind(&self, ctx: &Context, errs: &mut FieldErrors) {
        let Some(s) = &self.spec else {
            return errs.required("spec");
        };
        validate_placement(errs, "spec", s.into());
        if let Some(p) = (!s.node_name.is_empty())
            .then(|| dns_subdomain_problem(&s.node_name))
            .flatten()
        {
            errs.push("spec.nodeName", Reason::NameInvalid, p);
        }
        if let Some(st) = &self.status {
            check_status(errs, ctx, st);
        }
    }
}

fn check_status(errs: &mut FieldErrors, ctx: &Context, st: &v1::InstanceStatus) {
    check_enum::<v1::InstancePhase>(errs, "status.phase", st.phase, false);
    check_conditions(errs, ctx, "status.conditions", &st.conditions);
    check_timestamp(errs, ctx, "status.startTime", st.start_time.as_ref());
    for (i, c) in st.container_statuses.iter().enumerate() {
        for (which, state) in [("state", &c.state), ("lastState", &c.last_state)] {
            let Some(state) = state else { continue };
            let path = format!("status.containerStatuses[{i}].{which}");
            if let Some(running) = &state.running {
                check_timestamp(
                    errs,
                    ctx,
                    &format!("{path}.running.startedAt"),
                    running.started_at.as_ref(),
                );
            }
            if let Some(done) = &state.terminated {
                check_timestamp(
                    errs,
                    ctx,
                    &format!("{path}.terminated.startedAt"),
                    done.started_at.as_ref(),
                );
                check_timestamp(
                    errs,
                    ctx,
                    &format!("{path}.terminated.finishedAt"),
                    done.finished_at.as_ref(),
                );
            }
        }
    }
}
