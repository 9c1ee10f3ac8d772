//! What an Instance and a Workload's Instance template share: volumes, containers,
//! node selector, affinity, tolerations (with bounded `tolerationSeconds`), privacy,
//! restart policy and a bounded termination grace period.

use std::collections::{BTreeMap, BTreeSet};

use crate::reason::Reason;
use crate::time::{MAX_GRACE_PERIOD, MAX_TOLERATION};
use crate::v1;

use super::FieldErrors;
use super::container::{check_container, check_container_name};
use super::fields::{check_enum, clean_absolute_path_problem};
use super::names::{check_labels, dns_label_problem, dns_subdomain_problem, label_key_problem};
use super::time::check_seconds;

/// The fields an Instance and an Instance template share.
pub(super) struct PlacementRef<'a> {
    pub(super) containers: &'a [v1::Container],
    pub(super) volumes: &'a [v1::Volume],
    pub(super) node_selector: &'a BTreeMap<String, String>,
    pub(super) affinity: Option<&'a v1::Affinity>,
    pub(super) tolerations: &'a [v1::Toleration],
    pub(super) privacy: i32,
    pub(super) restart_policy: i32,
    pub(super) termination_grace_period_seconds: i64,
}

impl<'a> From<&'a v1::InstanceTemplate> for PlacementRef<'a> {
    fn from(t: &'a v1::InstanceTemplate) -> Self {
        PlacementRef {
            containers: &t.containers,
            volumes: &t.volumes,
            node_selector: &t.node_selector,
            affinity: t.affinity.as_ref(),
            tolerations: &t.tolerations,
            privacy: t.privacy,
            restart_policy: t.restart_policy,
            termination_grace_period_seconds: t.termination_grace_period_seconds,
        }
    }
}

impl<'a> From<&'a v1::InstanceSpec> for PlacementRef<'a> {
    fn from(s: &'a v1::InstanceSpec) -> Self {
        PlacementRef {
            containers: &s.containers,
            volumes: &s.volumes,
            node_selector: &s.node_selector,
            affinity: s.affinity.as_ref(),
            tolerations: &s.tolerations,
            privacy: s.privacy,
            restart_policy: s.restart_policy,
            termination_grace_period_seconds: s.termination_grace_period_seconds,
        }
    }
}

/// Checks the shared fields at `path` (`spec` or `spec.template`).
pub(super) fn validate_placement(errs: &mut FieldErrors, path: &str, p: PlacementRef<'_>) {
    if p.containers.is_empty() {
        errs.push(
            format!("{path}.containers"),
            Reason::FieldRequired,
            "at least one container is required",
        );
    }
    let volumes = check_volumes(errs, path, p.volumes);
    let mut container_names = BTreeSet::new();
    for (i, c) in p.containers.iter().enumerate() {
        let cp = format!("{path}.containers[{i}]");
        check_container_name(errs, &cp, c);
        if !container_names.insert(c.name.as_str()) {
            errs.invalid(
                format!("{cp}.name"),
                format!("duplicate container name {:?}", c.name),
            );
        }
        check_container(errs, &cp, c, &volumes);
    }
    check_labels(errs, &format!("{path}.nodeSelector"), p.node_selector);
    if let Some(affinity) = p.affinity {
        check_affinity(errs, &format!("{path}.affinity"), affinity);
    }
    check_tolerations(errs, path, p.tolerations);
    check_enum::<v1::PrivacyLevel>(errs, &format!("{path}.privacy"), p.privacy, false);
    check_enum::<v1::RestartPolicy>(
        errs,
        &format!("{path}.restartPolicy"),
        p.restart_policy,
        false,
    );
    if p.termination_grace_period_seconds < 0 {
        errs.invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            "must not be negative",
        );
    } else {
        check_seconds(
            errs,
            &format!("{path}.terminationGracePeriodSeconds"),
            p.termination_grace_period_seconds,
            0,
            MAX_GRACE_PERIOD,
        );
    }
}

/// Checks the volumes; returns their names.
fn check_volumes<'a>(
    errs: &mut FieldErrors,
    path: &str,
    volumes: &'a [v1::Volume],
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        if let Some(problem) = dns_label_problem(&v.name) {
            errs.push(format!("{vp}.name"), Reason::NameInvalid, problem);
        }
        if !names.insert(v.name.as_str()) {
            errs.invalid(
                format!("{vp}.name"),
                format!("duplicate volume {:?}", v.name),
            );
        }
        match &v.source {
            None => errs.push(
                vp.clone(),
                Reason::FieldRequired,
                "set one of emptyDir, hostPath or secret",
            ),
            Some(v1::volume::Source::HostPath(h)) => {
                if let Some(problem) = clean_absolute_path_problem(&h.path) {
                    errs.invalid(format!("{vp}.hostPath.path"), problem);
                }
            }
            Some(v1::volume::Source::Secret(s)) => {
                if let Some(problem) = dns_subdomain_problem(&s.secret_name) {
                    errs.invalid(format!("{vp}.secret.secretName"), problem);
                }
            }
            Some(_) => {}
        }
    }
    names
}

fn check_affinity(errs: &mut FieldErrors, path: &str, affinity: &v1::Affinity) {
    if let Some(na) = &affinity.node_affinity {
        for (i, r) in na.required.iter().enumerate() {
            check_node_requirement(errs, &format!("{path}.nodeAffinity.required[{i}]"), r);
        }
    }
    for (name, terms) in [
        ("instanceAffinity", &affinity.instance_affinity),
        ("instanceAntiAffinity", &affinity.instance_anti_affinity),
    ] {
        for (i, t) in terms.iter().enumerate() {
            if t.topology_key.is_empty() {
                errs.required(format!("{path}.{name}[{i}].topologyKey"));
            }
            check_labels(
                errs,
                &format!("{path}.{name}[{i}].labelSelector"),
                &t.label_selector,
            );
        }
    }
}

fn check_node_requirement(errs: &mut FieldErrors, rp: &str, r: &v1::NodeSelectorRequirement) {
    if let Some(problem) = label_key_problem(&r.key) {
        errs.invalid(format!("{rp}.key"), problem);
    }
    match r.operator.as_str() {
        "In" | "NotIn" if r.values.is_empty() => errs.required(format!("{rp}.values")),
        "Exists" | "DoesNotExist" if !r.values.is_empty() => {
            errs.invalid(
                format!("{rp}.values"),
                format!("must be empty for {}", r.operator),
            );
        }
        "Gt" | "Lt" if r.values.len() != 1 || r.values[0].parse::<i64>().is_err() => {
            errs.invalid(
                format!("{rp}.values"),
                format!("{} needs exactly one integer value", r.operator),
            );
        }
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
        other => errs.invalid(
            format!("{rp}.operator"),
            format!("unknown operator {other:?}: use In, NotIn, Exists, DoesNotExist, Gt or Lt"),
        ),
    }
}

fn check_tolerations(errs: &mut FieldErrors, path: &str, tolerations: &[v1::Toleration]) {
    let max = i64::try_from(MAX_TOLERATION.as_secs()).unwrap_or(i64::MAX);
    for (i, t) in tolerations.iter().enumerate() {
        let tp = format!("{path}.tolerations[{i}]");
        match t.operator.as_str() {
            "" | "Equal" => {}
            "Exists" if !t.value.is_empty() => errs.invalid(
                format!("{tp}.value"),
                "must be empty when operator is Exists",
            ),
            "Exists" => {}
            other => errs.invalid(
                format!("{tp}.operator"),
                format!("unknown operator {other:?}: use Equal or Exists"),
            ),
        }
        check_enum::<v1::TaintEffect>(errs, &format!("{tp}.effect"), t.effect, false);
        check_seconds(
            errs,
            &format!("{tp}.tolerationSeconds"),
            t.toleration_seconds,
            -max,
            MAX_TOLERATION,
        );
    }
}
