//! Admission checks without I/O: every error names the field path and the reason,
//! e.g. `spec.template.containers[0].resources.cpu: invalid quantity "lots" ...`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::quantity::Quantity;
use crate::reason::Reason;
use crate::resource::Resource;
use crate::v1;

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

/// Why `name` is not a DNS-1123 label (lowercase alphanumerics and `-`, at most 63), if it is not.
pub fn dns_label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 63 {
        return Some(format!(
            "must be at most 63 characters (got {})",
            name.len()
        ));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    (!ok_chars || !ok_ends).then(|| {
        format!("{name:?} is not a valid DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit")
    })
}

/// Why `name` is not a DNS-1123 subdomain (labels joined by `.`, at most 253), if it is not.
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "must be at most 253 characters (got {})",
            name.len()
        ));
    }
    let ok = name
        .split('.')
        .all(|part| dns_label_problem(part).is_none());
    (!ok).then(|| {
        format!("{name:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit")
    })
}

fn qualified_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 characters".into());
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ok_ends = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    (!ok_chars || !ok_ends).then(|| {
        "must be alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric".into()
    })
}

/// Why `key` is not a valid label key (`[prefix/]name`), if it is not.
pub fn label_key_problem(key: &str) -> Option<String> {
    match key.split_once('/') {
        Some((prefix, name)) => dns_subdomain_problem(prefix)
            .map(|p| format!("prefix {p}"))
            .or_else(|| qualified_name_problem(name)),
        None => qualified_name_problem(key),
    }
}

/// Why `value` is not a valid label value (empty or a qualified name), if it is not.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        None
    } else {
        qualified_name_problem(value)
    }
}

fn check_quantity(errs: &mut FieldErrors, field: &str, value: &str) -> Option<Quantity> {
    if value.is_empty() {
        return None;
    }
    match value.parse::<Quantity>() {
        Ok(q) => Some(q),
        Err(e) => {
            errs.push(field, Reason::QuantityInvalid, e.to_string());
            None
        }
    }
}

fn check_enum<E: TryFrom<i32>>(errs: &mut FieldErrors, field: &str, value: i32, required: bool) {
    if E::try_from(value).is_err() {
        errs.invalid(field, format!("unknown value {value}"));
    } else if required && value == 0 {
        errs.required(field);
    }
}

fn check_port(errs: &mut FieldErrors, field: &str, port: u32) {
    if !(1..=65_535).contains(&port) {
        errs.invalid(
            field,
            format!("port {port} is out of range: must be 1 to 65535"),
        );
    }
}

fn check_labels(errs: &mut FieldErrors, field: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if let Some(p) = label_key_problem(k) {
            errs.invalid(format!("{field}[{k}]"), format!("invalid label key: {p}"));
        }
        if let Some(p) = label_value_problem(v) {
            errs.invalid(
                format!("{field}[{k}]"),
                format!("invalid label value {v:?}: {p}"),
            );
        }
    }
}

/// Checks metadata: name, labels, annotations, finalizers, owner references.
fn validate_meta<K: Resource>(obj: &K, errs: &mut FieldErrors) {
    let meta = obj.meta();
    let name_problem = if K::KIND == "Namespace" {
        dns_label_problem(&meta.name)
    } else {
        dns_subdomain_problem(&meta.name)
    };
    if let Some(p) = name_problem {
        let reason = if meta.name.is_empty() {
            Reason::FieldRequired
        } else {
            Reason::NameInvalid
        };
        errs.push("metadata.name", reason, p);
    }
    if K::NAMESPACED {
        if let Some(p) = dns_label_problem(&meta.namespace) {
            let reason = if meta.namespace.is_empty() {
                Reason::FieldRequired
            } else {
                Reason::NameInvalid
            };
            errs.push("metadata.namespace", reason, p);
        }
    } else if !meta.namespace.is_empty() {
        errs.invalid(
            "metadata.namespace",
            format!("{} is cluster-scoped: namespace must be empty", K::KIND),
        );
    }
    check_labels(errs, "metadata.labels", &meta.labels);
    let annotation_bytes: usize = meta
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotation_bytes > MAX_ANNOTATIONS_BYTES {
        errs.push(
            "metadata.annotations",
            Reason::TooLarge,
            format!("{annotation_bytes} bytes in total, at most {MAX_ANNOTATIONS_BYTES}"),
        );
    }
    for k in meta.annotations.keys() {
        if let Some(p) = label_key_problem(k) {
            errs.invalid(
                format!("metadata.annotations[{k}]"),
                format!("invalid key: {p}"),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, f) in meta.finalizers.iter().enumerate() {
        if let Some(p) = label_key_problem(f) {
            errs.invalid(format!("metadata.finalizers[{i}]"), p);
        }
        if !seen.insert(f) {
            errs.invalid(
                format!("metadata.finalizers[{i}]"),
                format!("duplicate finalizer {f:?}"),
            );
        }
    }
    for (i, r) in meta.owner_references.iter().enumerate() {
        let path = format!("metadata.ownerReferences[{i}]");
        if crate::resource::find_kind(&r.kind).is_none() {
            errs.invalid(format!("{path}.kind"), format!("unknown kind {:?}", r.kind));
        }
        if r.name.is_empty() {
            errs.required(format!("{path}.name"));
        }
        if r.uid.is_empty() {
            errs.required(format!("{path}.uid"));
        }
    }
    if meta
        .owner_references
        .iter()
        .filter(|r| r.controller)
        .count()
        > 1
    {
        errs.invalid(
            "metadata.ownerReferences",
            "at most one owner may be the controller",
        );
    }
}

fn validate_resources(errs: &mut FieldErrors, path: &str, r: &v1::ResourceRequirements) {
    check_quantity(errs, &format!("{path}.cpu"), &r.cpu);
    check_quantity(errs, &format!("{path}.memory"), &r.memory);
    check_quantity(errs, &format!("{path}.storage"), &r.storage);
    check_quantity(errs, &format!("{path}.gpuMemory"), &r.gpu_memory);
    check_quantity(errs, &format!("{path}.gpu"), &r.gpu);
}

fn validate_probe(errs: &mut FieldErrors, path: &str, p: &v1::Probe, liveness: bool) {
    match (&p.exec, &p.tcp_socket) {
        (Some(exec), None) if exec.command.is_empty() => {
            errs.required(format!("{path}.exec.command"))
        }
        (None, Some(tcp)) => check_port(errs, &format!("{path}.tcpSocket.port"), tcp.port),
        (Some(_), None) => {}
        _ => errs.invalid(path, "set exactly one of exec or tcpSocket"),
    }
    if liveness && p.success_threshold > 1 {
        errs.invalid(
            format!("{path}.successThreshold"),
            format!("{} must be 1 for a liveness probe", p.success_threshold),
        );
    }
}

/// Why `path` is not an absolute path without `.` or `..` components, if it is not.
fn clean_absolute_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("{path:?} must be an absolute path"));
    }
    if path.split('/').any(|part| part == ".." || part == ".") {
        return Some(format!("{path:?} must not contain '.' or '..'"));
    }
    None
}

/// The fields an Instance and an Instance template share.
struct PlacementRef<'a> {
    containers: &'a [v1::Container],
    volumes: &'a [v1::Volume],
    node_selector: &'a BTreeMap<String, String>,
    affinity: Option<&'a v1::Affinity>,
    tolerations: &'a [v1::Toleration],
    privacy: i32,
    restart_policy: i32,
    termination_grace_period_seconds: i64,
}

fn validate_placement(errs: &mut FieldErrors, path: &str, p: PlacementRef<'_>) {
    if p.containers.is_empty() {
        errs.push(
            format!("{path}.containers"),
            Reason::FieldRequired,
            "at least one container is required",
        );
    }
    let mut volume_names = BTreeSet::new();
    for (i, v) in p.volumes.iter().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        if let Some(problem) = dns_label_problem(&v.name) {
            errs.push(format!("{vp}.name"), Reason::NameInvalid, problem);
        }
        if !volume_names.insert(v.name.as_str()) {
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
    let mut container_names = BTreeSet::new();
    for (i, c) in p.containers.iter().enumerate() {
        let cp = format!("{path}.containers[{i}]");
        if let Some(problem) = dns_label_problem(&c.name) {
            let reason = if c.name.is_empty() {
                Reason::FieldRequired
            } else {
                Reason::NameInvalid
            };
            errs.push(format!("{cp}.name"), reason, problem);
        }
        if !container_names.insert(c.name.as_str()) {
            errs.invalid(
                format!("{cp}.name"),
                format!("duplicate container name {:?}", c.name),
            );
        }
        if c.image.trim().is_empty() {
            errs.push(
                format!("{cp}.image"),
                Reason::FieldRequired,
                "must not be empty",
            );
        } else if c.image.chars().any(char::is_whitespace) {
            errs.invalid(
                format!("{cp}.image"),
                format!("{:?} must not contain whitespace", c.image),
            );
        }
        for (j, e) in c.env.iter().enumerate() {
            let ep = format!("{cp}.env[{j}]");
            let valid = !e.name.is_empty()
                && !e.name.starts_with(|ch: char| ch.is_ascii_digit())
                && e.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !valid {
                errs.invalid(
                    format!("{ep}.name"),
                    format!("{:?} is not a valid environment variable name", e.name),
                );
            }
            if let Some(r) = &e.secret_key_ref {
                if r.name.is_empty() {
                    errs.required(format!("{ep}.secretKeyRef.name"));
                }
                if r.key.is_empty() {
                    errs.required(format!("{ep}.secretKeyRef.key"));
                }
            }
        }
        let mut ports = BTreeSet::new();
        for (j, port) in c.ports.iter().enumerate() {
            let pp = format!("{cp}.ports[{j}]");
            check_port(errs, &format!("{pp}.containerPort"), port.container_port);
            check_enum::<v1::Protocol>(errs, &format!("{pp}.protocol"), port.protocol, false);
            if !ports.insert((port.container_port, port.protocol)) {
                errs.invalid(
                    format!("{pp}.containerPort"),
                    format!("duplicate port {}", port.container_port),
                );
            }
        }
        if let Some(r) = &c.resources {
            validate_resources(errs, &format!("{cp}.resources"), r);
        }
        let mut mount_paths = BTreeSet::new();
        for (j, m) in c.volume_mounts.iter().enumerate() {
            let mp = format!("{cp}.volumeMounts[{j}]");
            if !volume_names.contains(m.name.as_str()) {
                errs.invalid(
                    format!("{mp}.name"),
                    format!("no volume named {:?} in volumes", m.name),
                );
            }
            if m.mount_path.is_empty() {
                errs.required(format!("{mp}.mountPath"));
            } else if let Some(problem) = clean_absolute_path_problem(&m.mount_path) {
                errs.invalid(format!("{mp}.mountPath"), problem);
            } else if !mount_paths.insert(m.mount_path.trim_end_matches('/')) {
                errs.invalid(
                    format!("{mp}.mountPath"),
                    format!("{:?} is mounted more than once", m.mount_path),
                );
            }
        }
        if let Some(probe) = &c.liveness_probe {
            validate_probe(errs, &format!("{cp}.livenessProbe"), probe, true);
        }
        if let Some(probe) = &c.readiness_probe {
            validate_probe(errs, &format!("{cp}.readinessProbe"), probe, false);
        }
    }
    check_labels(errs, &format!("{path}.nodeSelector"), p.node_selector);
    if let Some(aff) = p.affinity {
        if let Some(na) = &aff.node_affinity {
            for (i, r) in na.required.iter().enumerate() {
                let rp = format!("{path}.affinity.nodeAffinity.required[{i}]");
                if let Some(problem) = label_key_problem(&r.key) {
                    errs.invalid(format!("{rp}.key"), problem);
                }
                match r.operator.as_str() {
                    "In" | "NotIn" if r.values.is_empty() => errs.required(format!("{rp}.values")),
                    "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                        errs.invalid(format!("{rp}.values"), format!("must be empty for {}", r.operator));
                    }
                    "Gt" | "Lt" if r.values.len() != 1 || r.values[0].parse::<i64>().is_err() => {
                        errs.invalid(format!("{rp}.values"), format!("{} needs exactly one integer value", r.operator));
                    }
                    "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
                    other => errs.invalid(format!("{rp}.operator"), format!("unknown operator {other:?}: use In, NotIn, Exists, DoesNotExist, Gt or Lt")),
                }
            }
        }
        for (name, terms) in [
            ("instanceAffinity", &aff.instance_affinity),
            ("instanceAntiAffinity", &aff.instance_anti_affinity),
        ] {
            for (i, t) in terms.iter().enumerate() {
                if t.topology_key.is_empty() {
                    errs.required(format!("{path}.affinity.{name}[{i}].topologyKey"));
                }
                check_labels(
                    errs,
                    &format!("{path}.affinity.{name}[{i}].labelSelector"),
                    &t.label_selector,
                );
            }
        }
    }
    for (i, t) in p.tolerations.iter().enumerate() {
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
    }
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
    }
}

fn check_int_or_percent(errs: &mut FieldErrors, field: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    let number = value.strip_suffix('%').unwrap_or(value);
    match number.parse::<u32>() {
        Ok(n) if value.ends_with('%') && n > 100 => errs.invalid(
            field,
            format!("{value:?}: a percentage must be at most 100%"),
        ),
        Ok(_) => {}
        Err(_) => errs.invalid(
            field,
            format!("{value:?} must be a non-negative integer or a percentage like 25%"),
        ),
    }
}

/// Kind-specific checks of spec (and status where clients write it).
pub trait Validate: Resource {
    /// Adds every problem of the kind-specific fields to `errs`.
    fn validate_kind(&self, errs: &mut FieldErrors);
}

/// Checks an object: metadata, then its kind's fields.
pub fn validate<K: Validate>(obj: &K) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    validate_meta(obj, &mut errs);
    obj.validate_kind(&mut errs);
    errs.into_result()
}

mod security;
pub use security::{SUBJECT_KINDS, VERBS};

impl Validate for v1::Namespace {
    fn validate_kind(&self, _errs: &mut FieldErrors) {}
}

impl Validate for v1::Node {
    fn validate_kind(&self, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else { return };
        for (i, t) in spec.taints.iter().enumerate() {
            if let Some(p) = label_key_problem(&t.key) {
                errs.invalid(format!("spec.taints[{i}].key"), p);
            }
            if let Some(p) = label_value_problem(&t.value) {
                errs.invalid(format!("spec.taints[{i}].value"), p);
            }
            check_enum::<v1::TaintEffect>(
                errs,
                &format!("spec.taints[{i}].effect"),
                t.effect,
                true,
            );
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
        }
    }
}

impl Validate for v1::Asset {
    fn validate_kind(&self, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        if let Some(p) = dns_subdomain_problem(&spec.node_name) {
            errs.push(
                "spec.nodeName",
                if spec.node_name.is_empty() {
                    Reason::FieldRequired
                } else {
                    Reason::NameInvalid
                },
                p,
            );
        }
        check_enum::<v1::AssetType>(errs, "spec.type", spec.r#type, true);
        check_enum::<v1::PrivacyLevel>(errs, "spec.privacy", spec.privacy, false);
        for (k, v) in &spec.capacity {
            check_quantity(errs, &format!("spec.capacity[{k}]"), v);
        }
    }
}

impl Validate for v1::Workload {
    fn validate_kind(&self, errs: &mut FieldErrors) {
        let Some(spec) = &self.spec else {
            return errs.required("spec");
        };
        if !(0..=MAX_REPLICAS).contains(&spec.replicas) {
            errs.invalid(
                "spec.replicas",
                format!(
                    "{} is out of range: must be 0 to {MAX_REPLICAS}",
                    spec.replicas
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
        validate_placement(
            errs,
            "spec.template",
            PlacementRef {
                containers: &t.containers,
                volumes: &t.volumes,
                node_selector: &t.node_selector,
                affinity: t.affinity.as_ref(),
                tolerations: &t.tolerations,
                privacy: t.privacy,
                restart_policy: t.restart_policy,
                termination_grace_period_seconds: t.termination_grace_period_seconds,
            },
        );
        if let Some(s) = &spec.strategy {
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
}

impl Validate for v1::Instance {
    fn validate_kind(&self, errs: &mut FieldErrors) {
        let Some(s) = &self.spec else {
            return errs.required("spec");
        };
        validate_placement(
            errs,
            "spec",
            PlacementRef {
                containers: &s.containers,
                volumes: &s.volumes,
                node_selector: &s.node_selector,
                affinity: s.affinity.as_ref(),
                tolerations: &s.tolerations,
                privacy: s.privacy,
                restart_policy: s.restart_policy,
                termination_grace_period_seconds: s.termination_grace_period_seconds,
            },
        );
        if let Some(p) = (!s.node_name.is_empty())
            .then(|| dns_subdomain_problem(&s.node_name))
            .flatten()
        {
            errs.push("spec.nodeName", Reason::NameInvalid, p);
        }
        if let Some(st) = &self.status {
            check_enum::<v1::InstancePhase>(errs, "status.phase", st.phase, false);
        }
    }
}

impl Validate for v1::Route {
    fn validate_kind(&self, errs: &mut FieldErrors) {
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

impl Validate for v1::Secret {
    fn validate_kind(&self, errs: &mut FieldErrors) {
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

impl Validate for v1::Lease {
    fn validate_kind(&self, errs: &mut FieldErrors) {
        if self
            .spec
            .as_ref()
            .is_some_and(|s| s.lease_duration_seconds < 0)
        {
            errs.invalid("spec.leaseDurationSeconds", "must not be negative");
        }
    }
}

impl Validate for v1::Event {
    fn validate_kind(&self, errs: &mut FieldErrors) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> v1::Workload {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        v1::Workload {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::WorkloadSpec {
                replicas: 2,
                selector: labels.clone(),
                template: Some(v1::InstanceTemplate {
                    labels,
                    containers: vec![v1::Container {
                        name: "web".into(),
                        image: "registry.local/web:1".into(),
                        resources: Some(v1::ResourceRequirements {
                            cpu: "500m".into(),
                            memory: "128Mi".into(),
                            ..Default::default()
                        }),
                        ports: vec![v1::ContainerPort {
                            container_port: 8080,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn fields(result: Result<(), FieldErrors>) -> Vec<String> {
        result
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_good_workload_passes() {
        assert_eq!(validate(&workload()), Ok(()));
    }

    #[test]
    fn bad_quantity_names_the_path() {
        let mut w = workload();
        w.spec
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .containers[0]
            .resources
            .as_mut()
            .unwrap()
            .cpu = "lots".into();
        let err = validate(&w).unwrap_err();
        assert_eq!(err.0[0].field, "spec.template.containers[0].resources.cpu");
        assert_eq!(err.0[0].reason, Reason::QuantityInvalid);
        assert!(err.to_string().contains("\"lots\""), "{err}");
    }

    #[test]
    fn bad_names_ports_and_replicas_are_reported() {
        let mut w = workload();
        w.metadata.as_mut().unwrap().name = "Web_1".into();
        let spec = w.spec.as_mut().unwrap();
        spec.replicas = -1;
        spec.template.as_mut().unwrap().containers[0].ports[0].container_port = 70_000;
        assert_eq!(
            fields(validate(&w)),
            [
                "metadata.name",
                "spec.replicas",
                "spec.template.containers[0].ports[0].containerPort"
            ]
        );
    }

    #[test]
    fn unknown_enum_numbers_are_rejected() {
        let mut w = workload();
        w.spec.as_mut().unwrap().template.as_mut().unwrap().privacy = 42;
        assert_eq!(fields(validate(&w)), ["spec.template.privacy"]);
    }

    #[test]
    fn cluster_scoped_kinds_refuse_a_namespace() {
        let ns = v1::Namespace {
            metadata: Some(v1::ObjectMeta {
                name: "team-a".into(),
                namespace: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(fields(validate(&ns)), ["metadata.namespace"]);
    }

    fn instance(volumes: Vec<v1::Volume>, mounts: Vec<v1::VolumeMount>) -> v1::Instance {
        v1::Instance {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::InstanceSpec {
                containers: vec![v1::Container {
                    name: "web".into(),
                    image: "registry.local/web:1".into(),
                    volume_mounts: mounts,
                    ..Default::default()
                }],
                volumes,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn mount(name: &str, path: &str) -> v1::VolumeMount {
        v1::VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn volume_mounts_need_a_defined_volume_and_a_clean_absolute_path() {
        let scratch = v1::Volume {
            name: "scratch".into(),
            source: Some(v1::volume::Source::EmptyDir(v1::EmptyDirVolume {})),
        };
        let host = |path: &str| v1::Volume {
            name: "host".into(),
            source: Some(v1::volume::Source::HostPath(v1::HostPathVolume {
                path: path.into(),
            })),
        };
        let good = instance(
            vec![scratch.clone(), host("/var/data")],
            vec![mount("scratch", "/scratch"), mount("host", "/data")],
        );
        assert_eq!(validate(&good), Ok(()));
        let bad = instance(
            vec![scratch.clone(), host("/var/../etc")],
            vec![
                mount("nothing", "/a"),
                mount("scratch", "relative"),
                mount("scratch", "/x/../../etc"),
                mount("scratch", ""),
                mount("host", "/b"),
                mount("scratch", "/b/"),
            ],
        );
        let err = validate(&bad).expect_err("invalid");
        assert_eq!(
            err.0.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(),
            [
                "spec.volumes[1].hostPath.path",
                "spec.containers[0].volumeMounts[0].name",
                "spec.containers[0].volumeMounts[1].mountPath",
                "spec.containers[0].volumeMounts[2].mountPath",
                "spec.containers[0].volumeMounts[3].mountPath",
                "spec.containers[0].volumeMounts[5].mountPath",
            ]
        );
        assert!(
            err.to_string()
                .contains("\"/x/../../etc\" must not contain"),
            "{err}"
        );
        assert!(err.to_string().contains("mounted more than once"), "{err}");
    }

    #[test]
    fn liveness_probes_succeed_once() {
        let mut i = instance(vec![], vec![]);
        let c = &mut i.spec.as_mut().unwrap().containers[0];
        let probe = v1::Probe {
            tcp_socket: Some(v1::TcpSocketAction { port: 8080 }),
            success_threshold: 2,
            ..Default::default()
        };
        c.readiness_probe = Some(probe.clone());
        assert_eq!(validate(&i), Ok(()));
        i.spec.as_mut().unwrap().containers[0].liveness_probe = Some(probe);
        assert_eq!(
            fields(validate(&i)),
            ["spec.containers[0].livenessProbe.successThreshold"]
        );
    }

    #[test]
    fn secret_keys_are_file_names() {
        let secret = |key: &str| v1::Secret {
            metadata: Some(v1::ObjectMeta {
                name: "creds".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::SecretSpec {
                data: [(key.to_string(), b"x".to_vec())].into(),
                ..Default::default()
            }),
            status: None,
        };
        assert_eq!(validate(&secret("tls.crt")), Ok(()));
        assert_eq!(validate(&secret(".hidden")), Ok(()));
        for bad in [".", "..", "..data", "a/b"] {
            assert_eq!(
                fields(validate(&secret(bad))),
                [format!("spec.data[{bad}]")]
            );
        }
    }

    #[test]
    fn dns_names() {
        assert!(dns_label_problem("web-1").is_none());
        assert!(dns_label_problem("-web").is_some());
        assert!(dns_label_problem(&"a".repeat(64)).is_some());
        assert!(dns_subdomain_problem("gpu.node-1").is_none());
        assert!(dns_subdomain_problem("Gpu").is_some());
    }
}
